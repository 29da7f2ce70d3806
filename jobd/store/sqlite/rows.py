"""Values in and out of the SQLite store: Jobs as rows, and rows as Jobs.

SQLite has no timestamp or JSON type: times are stored as epoch seconds (a double) and
payloads, results and errors as JSON text.  These conversions are all in this module so that
what a column holds is decided in one place."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jobd.domain import ErrorInfo, Job, State, build_job, history_from_json, history_to_json
from jobd.errors import InvalidParams
from jobd.store.base import ProgressReport, json_default

STATES = {s.value: s for s in State}


def ts(value: datetime) -> float:
    if value.tzinfo is None:
        raise InvalidParams(f"timestamp {value.isoformat()} must carry a time zone")
    return value.timestamp()


def opt_ts(value: datetime | None) -> float | None:
    return None if value is None else ts(value)


def dt(value: float) -> datetime:
    # A double holds epoch seconds to well under half a microsecond until 2106, and
    # fromtimestamp rounds to the nearest microsecond: the round trip is exact.
    return datetime.fromtimestamp(value, UTC)


def opt_dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def dumps(value: Any, what: str) -> str:
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and PostgreSQL's jsonb refuses them too.
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"{what}: not JSON serialisable: {exc}") from None


def opt_dumps(value: Any, what: str) -> str | None:
    return None if value is None else dumps(value, what)


def job_from_row(row: Sequence[Any]) -> Job:
    (
        job_id,
        job_type,
        queue,
        priority,
        payload,
        state,
        attempts,
        max_attempts,
        crashes,
        run_at,
        timeout,
        last_error,
        result,
        idempotency_key,
        correlation_id,
        cancel_requested,
        lease_owner,
        lease_expires_at,
        created_at,
        updated_at,
        started_at,
        finished_at,
        lease_token,
        schedule,
        on_parent_failure,
        pending_parents,
        progress,
        progress_at,
        result_ttl,
        history,
    ) = row
    return build_job(  # Job(*...), faster: a claim builds one per row
        (
            job_id,
            job_type,
            queue,
            priority,
            json.loads(payload),
            STATES[state],
            attempts,
            max_attempts,
            crashes,
            dt(run_at),
            timeout,
            ErrorInfo.from_dict(json.loads(last_error)) if last_error else None,
            None if result is None else json.loads(result),
            idempotency_key,
            correlation_id,
            bool(cancel_requested),
            lease_owner,
            opt_dt(lease_expires_at),
            dt(created_at),
            dt(updated_at),
            opt_dt(started_at),
            opt_dt(finished_at),
            lease_token,
            schedule,
            on_parent_failure,
            pending_parents,
            (),  # parents: edges of their own, not read here
            None if progress is None else json.loads(progress),
            opt_dt(progress_at),
            result_ttl,
            history_from_json(None if history is None else json.loads(history)),
        )
    )


def insert_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.type,
        job.queue,
        job.priority,
        dumps(job.payload, "payload"),
        job.state.value,
        job.attempts,
        job.max_attempts,
        job.crashes,
        ts(job.run_at),
        job.timeout,
        opt_dumps(job.last_error.to_dict() if job.last_error else None, "last_error"),
        opt_dumps(job.result, "result"),
        job.idempotency_key,
        job.correlation_id,
        int(job.cancel_requested),
        job.lease_owner,
        opt_ts(job.lease_expires_at),
        ts(job.created_at),
        ts(job.updated_at),
        opt_ts(job.started_at),
        opt_ts(job.finished_at),
        job.lease_token,
        job.schedule,
        job.on_parent_failure,
        job.pending_parents,
        opt_dumps(job.progress, "progress"),
        opt_ts(job.progress_at),
        job.result_ttl,
        opt_dumps(history_to_json(job.history), "history"),
    )


def progress_row(node: str, report: ProgressReport) -> tuple[Any, ...]:
    """Parameters of sql.RECORD_PROGRESS."""
    return (
        dumps(report.progress, "progress"),
        ts(report.at),
        report.job_id,
        node,
        report.attempt,
        report.token,
    )


def update_row(job: Job) -> tuple[Any, ...]:
    """Parameters of sql.UPDATE_JOB: the sql.MUTABLE columns, then the id."""
    return (
        job.state.value,
        job.attempts,
        job.crashes,
        ts(job.run_at),
        opt_dumps(job.last_error.to_dict() if job.last_error else None, "last_error"),
        opt_dumps(job.result, f"result of job {job.id}"),
        int(job.cancel_requested),
        job.lease_owner,
        opt_ts(job.lease_expires_at),
        ts(job.updated_at),
        opt_ts(job.started_at),
        opt_ts(job.finished_at),
        job.lease_token,
        job.pending_parents,
        opt_dumps(history_to_json(job.history), "history"),
        job.id,
    )
