"""Hostile text in what jobd logs (docs/guarantees.md, "Bad input"): a correlation id and a job
type full of newlines, carriage returns, terminal escapes, Unicode line separators and a
would-be JSON record of their own.  Each log record stays one line -- one JSON object in the
JSON format -- carrying the text exactly in its field, and nothing it contains becomes a record
(no injected message or level).  In the text format the control characters come out escaped."""

from __future__ import annotations

import json

import psycopg
import pytest

from jobd.client import Client
from jobd.domain import State
from jobd.errors import InvalidParams, UnknownType
from jobd.store import Store

from .conftest import eventually

pytestmark = pytest.mark.postgres

NASTY = (
    'line1\nline2\r\x1b[31mred\x1b[0m"}\n{"level": "CRITICAL", "message": "injected"}'
    "\u2028\u2029\x85\x7f\\ \t\x08end"
)


async def finished(store: Store, job_id: int) -> object:
    async def check():
        job = await store.get(job_id)
        return job if job.state.terminal else None

    return await eventually(check, 20, f"job {job_id} to finish")


async def run_nasty_jobs(daemon, store: Store) -> tuple[int, int]:
    with Client(daemon.env["JOBD_SOCKET"], timeout=20) as client:
        ok = client.submit("noop", {}, correlation_id=NASTY).job.id
        with pytest.raises(UnknownType):
            client.submit(NASTY, {})
        with pytest.raises(InvalidParams):  # PostgreSQL text cannot hold a NUL: refused, not a bug
            client.submit("noop", {}, correlation_id="nul\x00byte")
    # A type no handler knows, written straight into the table (jobd refuses control
    # characters in a type, but an application's SQL may not): it waits for a node that runs
    # it (ADR 0023) until an operator cancels it, and the cancel logs the type.
    schema = daemon.env["JOBD_DATABASE_SCHEMA"]
    with psycopg.connect(daemon.env["JOBD_DATABASE_URL"], autocommit=True) as conn:
        odd = conn.execute(
            f'INSERT INTO "{schema}".jobs (type, correlation_id) VALUES (%s, %s) RETURNING id',
            (NASTY, NASTY),
        ).fetchone()[0]
    with Client(daemon.env["JOBD_SOCKET"], timeout=20) as client:
        client.cancel(odd)
    assert (await finished(store, ok)).state is State.COMPLETED
    assert (await finished(store, odd)).state is State.CANCELED
    return ok, odd


async def test_json_logs_keep_hostile_text_inside_one_field(make_daemon, pg_store: Store) -> None:
    d = make_daemon(JOBD_LOGGING_JOB_EVENTS="true", JOBD_LOGGING_LEVEL="DEBUG").start()
    ok, odd = await run_nasty_jobs(d, pg_store)
    d.stop()
    records = []
    for line in d.stderr().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)  # every line is one whole JSON object
        assert isinstance(record, dict), line
        records.append(record)
    assert not [r for r in records if r.get("message") == "injected"]
    assert not [r for r in records if r.get("level") == "CRITICAL"]
    ours = [r for r in records if r.get("job_id") in (ok, odd)]
    assert {r["message"] for r in ours} >= {"job started", "job completed", "job canceled"}
    for record in ours:
        assert record["correlation_id"] == NASTY, record
    canceled = next(r for r in ours if r["message"] == "job canceled")
    assert canceled["job_type"] == NASTY


async def test_text_logs_escape_control_characters(make_daemon, pg_store: Store) -> None:
    d = make_daemon(JOBD_LOGGING_FORMAT="text", JOBD_LOGGING_JOB_EVENTS="true")
    d.start(until_answering=True)  # its text log has no event to wait for
    await run_nasty_jobs(d, pg_store)
    d.stop()
    text = d.stderr()
    assert "\x1b" not in text and "\r" not in text and "\u2028" not in text
    for line in text.splitlines():
        assert not line.startswith(("line2", '{"level"')), line
    assert text.count("\\x1b[31mred") >= 2  # the id, escaped, on the job's lines


def test_a_json_record_is_one_line_by_unicode_rules_too() -> None:
    """U+2028, U+2029 and NEL are left raw by JSON without ensure_ascii, and Python's
    splitlines (and JavaScript, and some log viewers) end a line at each: escaped."""
    import logging

    from jobd.logs import JobdJsonFormatter

    record = logging.makeLogRecord({"msg": "m", "correlation_id": NASTY + "é"})
    line = JobdJsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert json.loads(line)["correlation_id"] == NASTY + "é"
    assert "é" in line  # other text stays readable
