"""Values in and out of the PostgreSQL store: rows into domain Jobs, and the operations'
arguments into the array parameters its batched statements take.

Kept apart from the operations so that each operation reads as the statements it issues; the
column list comes from the Job dataclass itself, so a field added to the domain without a
migration fails at the first query instead of being silently dropped."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from jobd.domain import (
    STORED_FIELDS,
    ErrorInfo,
    Job,
    NewJob,
    ParentFailure,
    State,
    build_job,
    history_from_json,
    history_to_json,
)
from jobd.errors import InvalidParams, NotFound
from jobd.limits import ATTEMPT_HISTORY_KEEP
from jobd.store.base import Outcome, OutcomeKind, Start, Submitted, json_default
from jobd.store.postgres.connections import describe

Row = dict[str, Any]  # what the pool's dict_row factory makes of a row

JOB_FIELDS = STORED_FIELDS


def job_from_row(row: Row) -> Job:
    values = {name: row[name] for name in JOB_FIELDS}
    values["state"] = State(values["state"])
    values["last_error"] = ErrorInfo.from_dict(values["last_error"])
    values["history"] = history_from_json(values["history"])
    return Job(**values)


_STATES = {state.value: state for state in State}  # State(text), without the enum's call
_CANCEL = ParentFailure.CANCEL.value  # a job without parents: the default, never acted on

#: A row of the submit statement (a tuple row: one per job of a batch of up to 1,000, so the
#: dict of a dict row is worth saving): the id, None when the job's key was taken, and what
#: the database set.
SubmitRow = tuple[int | None, str, datetime, datetime, datetime]


def submitted_from_row(spec: NewJob, row: SubmitRow) -> Submitted | None:
    """The job the submit statement inserted for `spec`, or None when its key was taken.

    Built from the request and the few values the statement returns, not read back whole
    (docs/adr/0037): everything else of a job just inserted is the table's default, the same
    for every fresh row.  A job with parents is read back whole afterwards (workflows.link),
    which sets its state, parent count and on_parent_failure."""
    job_id, state, run_at, created_at, updated_at = row
    if job_id is None:
        return None
    job = build_job(
        (
            job_id,  # id
            spec.type,
            spec.queue,
            spec.priority,
            spec.payload,
            _STATES[state],
            0,  # attempts
            spec.max_attempts,
            0,  # crashes
            run_at,
            # The columns are double precision: 30 comes back as 30.0, so it is answered as such.
            None if spec.timeout is None else float(spec.timeout),
            None,  # last_error
            None,  # result
            spec.idempotency_key,
            spec.correlation_id,
            False,  # cancel_requested
            None,  # lease_owner
            None,  # lease_expires_at
            created_at,
            updated_at,
            None,  # started_at
            None,  # finished_at
            None,  # lease_token
            spec.schedule,
            _CANCEL,  # on_parent_failure
            0,  # pending_parents
            (),  # parents
            None,  # progress
            None,  # progress_at
            None if spec.result_ttl is None else float(spec.result_ttl),
            (),  # history
        )
    )
    return Submitted(job, created=True)


#: The Job's fields in its constructor's order; `parents` is not a column (empty: not read).
_JOB_ARGS = tuple(field.name for field in dataclasses.fields(Job))
_STATE_AT = _JOB_ARGS.index("state")
_LAST_ERROR_AT = _JOB_ARGS.index("last_error")
_HISTORY_AT = _JOB_ARGS.index("history")
_PARENTS_AT = _JOB_ARGS.index("parents")


def jobs_from_tuples(
    description: Sequence[psycopg.Column] | None, rows: Sequence[tuple[Any, ...]]
) -> list[Job]:
    """Jobs from the rows of a statement returning whole jobs, read as tuples: the claim's
    path, where building a dict per row and then the Job from it cost twice the Job itself
    (ADR 0038).  The columns are matched to the Job's fields by name, once per statement."""
    names = [column.name for column in description or ()]
    at = [names.index(name) for name in JOB_FIELDS]
    at.insert(_PARENTS_AT, -1)
    jobs = []
    for row in rows:
        values = [row[i] for i in at]
        values[_PARENTS_AT] = ()
        values[_STATE_AT] = _STATES[values[_STATE_AT]]
        if values[_LAST_ERROR_AT] is not None:
            values[_LAST_ERROR_AT] = ErrorInfo.from_dict(values[_LAST_ERROR_AT])
        values[_HISTORY_AT] = history_from_json(values[_HISTORY_AT])
        jobs.append(build_job(values))
    return jobs


async def fetch_one(cur: psycopg.AsyncCursor[dict[str, Any]]) -> Row:
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - the statements calling this always return a row
        raise RuntimeError("query returned no row")
    return row


def json_text(value: Any, field_name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"{field_name}: not representable as JSON: {exc}") from None


def inserts_alone(spec: NewJob) -> bool:
    """Whether the submit statement is all `spec` takes: a key is settled and parents are
    linked by more statements after the insert, in its transaction (docs/adr/0041)."""
    return spec.idempotency_key is None and not spec.after


def batch_refused(exc: psycopg.Error) -> InvalidParams:
    """A submit's insert refused for a value of the batch (a NUL byte, a number out of range,
    a check), as the client's error."""
    return InvalidParams(f"jobs: rejected by the database: {describe(exc)}")


def submit_params(specs: Sequence[NewJob], channel: str) -> dict[str, str]:
    """The submit statement's parameters: the channel its NOTIFY goes to, and the batch as a
    JSON array of arrays, a job's values in the order the statement reads them, encoded in
    one call (psycopg's arrays would be eleven Python loops over the batch's values; objects
    would cost thrice the encoding, naming every value)."""
    jobs = [
        (
            s.type,
            s.queue,
            s.priority,
            s.payload,
            s.max_attempts,
            None if s.run_at is None else s.run_at.astimezone(UTC).isoformat(),
            s.timeout,
            s.idempotency_key,
            s.correlation_id,
            s.schedule,
            s.result_ttl,
        )
        for s in specs
    ]
    try:
        text = json.dumps(jobs, ensure_ascii=False, allow_nan=False, default=json_default)
        return {"jobs": text, "channel": channel}
    except (TypeError, ValueError):
        for spec in specs:  # the refusal names the payload, as a payload's own encoding did
            json_text(spec.payload, "payload")
        raise


def utc(value: datetime | None) -> datetime | None:
    """`value` in UTC: PostgreSQL refuses offsets past ±15:59, which Python allows (to ±23:59)."""
    return None if value is None else value.astimezone(UTC)


def wants_pending(outcome: Outcome) -> bool:
    """Whether an outcome asks for its job to run again (finish_retry), or ends it (finish)."""
    kind = OutcomeKind(outcome.kind)
    return kind is OutcomeKind.RELEASED or (
        kind is OutcomeKind.FAILED and outcome.retry_at is not None
    )


def outcome_params(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {
        k: []
        for k in (
            "ids",
            "attempts",
            "kinds",
            "results",
            "errors",
            "retry_ats",
            "crashed",
            "tokens",
            "started_ats",
        )
    }
    for o in outcomes:
        kind = OutcomeKind(o.kind)
        error = o.error
        if kind is OutcomeKind.FAILED and error is None:
            error = ErrorInfo("Error", "attempt failed")  # as outcome_applied does
        completed = kind is OutcomeKind.COMPLETED and o.result is not None
        params["ids"].append(o.job_id)
        params["attempts"].append(o.attempt)
        params["kinds"].append(kind.value)
        params["results"].append(json_text(o.result, "result") if completed else None)
        params["errors"].append(json_text(error.to_dict(), "error") if error else None)
        params["retry_ats"].append(o.retry_at)
        params["crashed"].append(bool(o.crashed))
        params["tokens"].append(o.token)
        params["started_ats"].append(o.started_at)
    return params


#: The bound of a job's history (domain.attempts_kept), a parameter of the statements that
#: append to it (finish_retry, recover_expired).
HISTORY_PARAMS = {"keep": ATTEMPT_HISTORY_KEEP}


def finish_params(node: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The finish statement's parameters (outcomes that end their job)."""
    params: dict[str, Any] = {"node": node, **outcome_params(outcomes)}
    del params["retry_ats"]  # finish never sends a job back to pending
    return params


def claim_params(
    node: str,
    limit: int,
    lease: float,
    queues: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    exclude_queues: Sequence[str] | None = None,
) -> dict[str, Any]:
    return {
        "node": node,
        "limit": limit,
        "lease": float(lease),
        "queues": list(queues) if queues is not None else None,
        "types": list(types) if types is not None else None,
        "exclude_queues": list(exclude_queues) if exclude_queues else None,
    }


def start_params(node: str, starts: Sequence[Start]) -> dict[str, Any]:
    return {
        "node": node,
        "ids": [s.job_id for s in starts],
        "attempts": [s.attempt for s in starts],
        "tokens": [s.token for s in starts],
        "ats": [s.at for s in starts],
    }


def write_params(job: Job) -> dict[str, Any]:
    params = {name: getattr(job, name) for name in JOB_FIELDS}
    params["state"] = job.state.value
    params["last_error"] = Jsonb(job.last_error.to_dict()) if job.last_error else None
    params["result"] = Jsonb(job.result) if job.result is not None else None
    history = history_to_json(job.history)
    params["history"] = Jsonb(history) if history is not None else None
    return params


def lookup_id(job_id: object) -> int | None:
    """An id to look up; anything that is not an integer matches no job (as in memory)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        return None
    return job_id if -(2**63) <= job_id < 2**63 else None


def not_found(job_id: object) -> NotFound:
    return NotFound(f"job {job_id} not found", id=job_id)
