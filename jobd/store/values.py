"""The values every store can hold, defined once: the job spec (jobd.jobspec) refuses anything
else at submit, and every store refuses it again for callers that bypass the spec, so memory,
SQLite and PostgreSQL give the same answer to the same edge value.

- Text: no NUL (PostgreSQL's text and jsonb cannot hold U+0000) and no lone surrogate (not
  Unicode: UTF-8 cannot encode it, so neither PostgreSQL nor SQLite's driver can store it).
- Times: from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, whatever the offset they are
  written with -- `9999-12-31T23:59:59-23:59` is past the end of year 9999 in UTC.

A refusal is InvalidParams naming the field (`payload.items[2].name`).  A handler's result
that breaks these rules is not refused but made the attempt's failure (`unstorable_result`),
so one bad result cannot fail the write-back of the other jobs finished with it
(jobd.store.base.storable_outcome).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobd.domain import NewJob
from jobd.errors import InvalidParams

#: The times every store can hold.  The last second of year 9999 stops at a whole second:
#: SQLite keeps epoch seconds in a double, which rounds 23:59:59.99999 up into year 10000.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
#: Replaces what an error message or traceback cannot hold (diagnostic text is kept, not refused).
REPLACEMENT = "\ufffd"


def text_problem(value: str) -> str | None:
    """Why no store can hold `value`, or None when every store can."""
    if "\x00" in value:
        return "contains a NUL character (U+0000), which no store can hold"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode), which no store can hold"
    return None


def check_text(field: str, value: str | None) -> None:
    """Refuse a text no store can hold: InvalidParams naming `field`."""
    if value is not None and (problem := text_problem(value)) is not None:
        raise InvalidParams.of_field(field, problem)


def json_problem(value: Any, where: str) -> tuple[str, str] | None:
    """(where, problem) for the first string (key or value) in a JSON value that no store can
    hold, e.g. ("payload.to[1]", "contains a NUL …"); None when every one can."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return path, problem
        elif isinstance(item, Mapping):
            for key, member in item.items():
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    return path, f"has a member name that {problem}"
                stack.append((member, f"{path}.{key}"))
        elif isinstance(item, list | tuple):
            stack.extend((member, f"{path}[{i}]") for i, member in enumerate(item))
    return None


def check_json(field: str, value: Any) -> None:
    """Refuse a JSON value with a string no store can hold: InvalidParams naming where."""
    found = json_problem(value, field)
    if found is not None:
        raise InvalidParams.of_field(*found)


def check_time(field: str, value: datetime | None) -> None:
    """Refuse a time outside EARLIEST to LATEST."""
    if value is None:
        return
    try:
        in_range = value.astimezone(UTC) <= LATEST
    except OverflowError:  # before year 1 or after year 9999 once in UTC
        in_range = False
    if not in_range:
        raise InvalidParams.of_field(
            field,
            f"{value.isoformat()} is outside {EARLIEST:%Y-%m-%dT%H:%M:%SZ} to"
            f" {LATEST:%Y-%m-%dT%H:%M:%SZ}",
        )


def storable_text(value: str) -> str:
    """`value` with what no store can hold replaced by U+FFFD (for diagnostics, not data)."""
    if text_problem(value) is None:
        return value
    return "".join(REPLACEMENT if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value)


def check_new_job(job: NewJob, where: str = "") -> None:
    """Refuse a job with a value no store can hold; fields are named under `where` (`jobs[3].`)."""
    check_json(f"{where}payload", job.payload)
    check_time(f"{where}run_at", job.run_at)
    check_text(f"{where}idempotency_key", job.idempotency_key)
    check_text(f"{where}correlation_id", job.correlation_id)
