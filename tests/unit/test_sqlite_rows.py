"""The SQLite store's rows (jobd/store/sqlite/rows.py), without a file: a job written as a
row and read back is the same job, every field in its place (the read builds the job by
position)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobd.domain import AttemptOutcome, AttemptRecord, ErrorInfo, Job, State
from jobd.store.sqlite.rows import insert_row, job_from_row

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_job_read_back_from_its_row_is_the_job() -> None:
    """No two fields of the same type share a value, so one read into another's place shows."""
    job = Job(
        id=42,
        type="report",
        queue="reports",
        priority=7,
        payload={"n": 1},
        state=State.RUNNING,
        attempts=2,
        max_attempts=5,
        crashes=1,
        run_at=at(1),
        timeout=30.0,
        last_error=ErrorInfo("ValueError", "boom", "Traceback ..."),
        result={"r": 2},
        idempotency_key="k-1",
        correlation_id="c-1",
        cancel_requested=True,
        lease_owner="node-1",
        lease_expires_at=at(2),
        created_at=at(3),
        updated_at=at(4),
        started_at=at(5),
        finished_at=at(6),
        lease_token=99,
        schedule="nightly",
        on_parent_failure="run",
        pending_parents=3,
        progress={"done": 4},
        progress_at=at(7),
        result_ttl=60.0,
        history=(AttemptRecord(1, at(8), at(9), AttemptOutcome.FAILED, "IOError", "down"),),
    )
    assert job_from_row(insert_row(job)) == job
