"""Reading a job's payload field by field, for the sample handlers' checks.

Each reader raises `ValueError("field: problem")`: the form the control server and
`jobd.enqueue` expect from a validator at submit time, and the message the client sees.  A
handler runs the same checks again in its worker (a job may reach the store through SQL, or
from an older client, without passing a validator) and turns the ValueError into a
PermanentError with `checked()`: a payload that is wrong now will be wrong on every retry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from jobd.domain import PermanentError

T = TypeVar("T")

Payload = Mapping[str, Any]


def checked(parse: Callable[[Payload], T], payload: Payload) -> T:
    """`parse(payload)`, with a bad payload reported as a PermanentError (no retry)."""
    try:
        return parse(payload)
    except ValueError as exc:
        raise PermanentError(f"invalid payload: {exc}") from None


def only_fields(payload: Payload, allowed: Collection[str]) -> None:
    """Refuse fields the job type does not know: a misspelt optional field (`reply-to`) would
    otherwise be ignored without a word."""
    for key in payload:
        if key not in allowed:
            raise ValueError(f"{key}: unknown field (this job type takes: {', '.join(allowed)})")


def text(
    payload: Payload,
    name: str,
    *,
    required: bool = True,
    max_length: int | None = None,
    single_line: bool = False,
) -> str | None:
    """A string field.  `single_line` refuses control characters (CR and LF above all: in a
    header they would start a new one)."""
    value = payload.get(name)
    if value is None:
        if required:
            raise ValueError(f"{name}: is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string")
    if required and not value.strip():
        raise ValueError(f"{name}: must not be empty")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{name}: is longer than {max_length} characters")
    if single_line and has_control_characters(value):
        raise ValueError(f"{name}: must not contain line breaks or other control characters")
    return value


def one_or_many(payload: Payload, name: str, *, required: bool, max_items: int) -> list[Any]:
    """A field that is one value or a list of them (`to`, `cc`), as a list."""
    value = payload.get(name)
    if value is None:
        if required:
            raise ValueError(f"{name}: is required")
        return []
    items = value if isinstance(value, list) else [value]
    if required and not items:
        raise ValueError(f"{name}: must not be empty")
    if len(items) > max_items:
        raise ValueError(f"{name}: has more than {max_items} items")
    return items


def choice(payload: Payload, name: str, choices: Collection[str], default: str | None) -> str:
    value = payload.get(name, default)
    if value is None:
        raise ValueError(f"{name}: is required (one of {', '.join(choices)})")
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(choices)}")
    return str(value)


def integer(payload: Payload, name: str, *, default: int, low: int, high: int) -> int:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name}: must be from {low} to {high}")
    return value


def number(value: object) -> int | float | None:
    """A finite number from a JSON number or a numeric string; None for anything else
    (empty, text, true/false, NaN, infinities, an integer too long to read)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass  # not an integer (or one past int's digit limit): perhaps a decimal
    try:
        parsed = float(text)
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None


def has_control_characters(value: str) -> bool:
    return any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in value)
