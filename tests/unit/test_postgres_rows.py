"""The PostgreSQL store's rows made into jobs (jobd/store/postgres/rows.py), without a
database: the submit's job is built by position, so every field's place is checked here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import psycopg

from jobd.domain import STORED_FIELDS, ErrorInfo, Job, NewJob, State
from jobd.store.postgres.rows import jobs_from_tuples, submitted_from_row

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_submitted_job_is_the_request_and_what_the_database_set() -> None:
    spec = NewJob(
        type="report",
        payload={"n": 1},
        queue="reports",
        priority=7,
        max_attempts=4,
        timeout=30,
        idempotency_key="k-1",
        correlation_id="c-1",
        schedule="nightly",
        result_ttl=60,
    )
    run_at, created_at, updated_at = T0 + timedelta(seconds=5), T0, T0 + timedelta(seconds=1)
    submitted = submitted_from_row(spec, (42, "pending", run_at, created_at, updated_at))
    assert submitted is not None and submitted.created
    assert submitted.job == Job(
        id=42,
        type="report",
        queue="reports",
        priority=7,
        payload={"n": 1},
        state=State.PENDING,
        attempts=0,
        max_attempts=4,
        crashes=0,
        run_at=run_at,
        timeout=30.0,
        last_error=None,
        result=None,
        idempotency_key="k-1",
        correlation_id="c-1",
        cancel_requested=False,
        lease_owner=None,
        lease_expires_at=None,
        created_at=created_at,
        updated_at=updated_at,
        started_at=None,
        finished_at=None,
        schedule="nightly",
        result_ttl=60.0,
    )
    assert isinstance(submitted.job.timeout, float) and isinstance(submitted.job.result_ttl, float)


def test_a_key_already_taken_gives_no_job() -> None:
    assert submitted_from_row(NewJob(type="report"), (None, "pending", T0, T0, T0)) is None


def test_claimed_rows_are_read_by_their_columns_names_in_any_order() -> None:
    """The claim's rows: every column a value of its own, the columns in reverse order."""
    values: dict[str, Any] = {name: f"value of {name}" for name in STORED_FIELDS}
    values |= {
        "state": "running",
        "last_error": {"type": "ValueError", "message": "boom", "traceback": None},
        "history": None,
    }
    names = list(reversed(STORED_FIELDS))
    description = cast(list[psycopg.Column], [SimpleNamespace(name=name) for name in names])
    [job] = jobs_from_tuples(description, [tuple(values[name] for name in names)])
    assert job == Job(
        **(
            values
            | {
                "state": State.RUNNING,
                "last_error": ErrorInfo("ValueError", "boom", None),
                "history": (),
            }
        )
    )
