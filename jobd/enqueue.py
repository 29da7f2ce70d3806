"""Transactional enqueue: submit a job on the application's own PostgreSQL connection, inside the
application's own transaction.

    import psycopg
    import jobd

    with psycopg.connect(DATABASE_URL) as conn:        # the application's connection
        with conn.transaction():
            conn.execute("INSERT INTO orders (id, total) VALUES (%s, %s)", (order_id, total))
            jobd.enqueue(conn, "send_invoice", {"order_id": order_id})
        # committed: the order and its job exist together, and idle jobd nodes are woken

If the transaction rolls back, the job goes with it: no invoice for an order that was never
stored, and no order whose invoice job was lost.  That is what a PostgreSQL-backed queue offers
that a separate broker cannot.

How: this calls the schema's `jobd_enqueue()` SQL function (migrations/postgres/0001_init.sql),
the same one SQL-only applications call.  It inserts the row and sends `NOTIFY <schema>_submit`;
PostgreSQL delivers a notification only when its transaction commits, so jobd neither sees nor is
woken for a job that was rolled back.  On a connection in autocommit mode each call commits at
once, as any statement would.

The job is checked here by the code the daemon checks it with (jobd.jobspec: its options, then
the domain's rules), and, when the handler is registered in this process (the application
imported its handler module), the handler's payload validator and its default max_attempts
and result_ttl.
The type itself cannot be checked against the daemon's handlers: a job of a type no node runs
fails when claimed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from jobd.clock import utcnow
from jobd.domain import DEFAULT_MAX_ATTEMPTS, NewJob
from jobd.errors import InvalidParams
from jobd.jobspec import (
    MAX_PAYLOAD_BYTES,
    JobSpec,
    SubmitOptions,
    check_payload,
    check_payload_size,
    parse_job_spec,
)

if TYPE_CHECKING:  # psycopg is imported by the caller; importing jobd should not need it
    import psycopg

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_ENQUEUE_SQL = (
    "SELECT {schema}.jobd_enqueue("
    "%(type)s, %(payload)s::jsonb,"
    " queue => %(queue)s,"
    " priority => %(priority)s::integer,"
    " run_at => coalesce(%(run_at)s::timestamptz,"
    "                    now() + make_interval(secs => %(delay)s::double precision)),"
    " max_attempts => %(max_attempts)s::integer,"
    " timeout => %(timeout)s::double precision,"
    " idempotency_key => %(idempotency_key)s,"
    " correlation_id => %(correlation_id)s{workflow}{result_ttl})"
)
# Only for a job with parents, so that a job without any can still be enqueued into a schema
# older than 5 (whose jobd_enqueue has no such parameters).
_WORKFLOW_SQL = ", after => %(after)s::bigint[], on_parent_failure => %(on_parent_failure)s::text"
# Likewise only for a job with a result_ttl (schema 10's jobd_enqueue has the parameter).
_RESULT_TTL_SQL = ", result_ttl => %(result_ttl)s::double precision"


def enqueue(
    conn: psycopg.Connection[Any],
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    schema: str = "jobd",
    **options: Unpack[SubmitOptions],
) -> int:
    """Insert a job in `conn`'s current transaction; return its id (for a taken
    `idempotency_key`, the id of the job holding it).  The options are the submit's (queue,
    priority, max_attempts, run_at, delay, timeout, idempotency_key, correlation_id, after,
    on_parent_failure, result_ttl); `schema` is jobd's schema (database.schema).  Raises
    jobd.errors.InvalidParams for a job the daemon would refuse.  A job `after` others waits
    for them; a parent that does not exist makes the statement fail
    (psycopg.errors.ForeignKeyViolation), and the transaction with it."""
    query, params = _statement(type, payload, schema=schema, **options)
    return _job_id(conn.execute(query, params).fetchone())


async def aenqueue(
    conn: psycopg.AsyncConnection[Any],
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    schema: str = "jobd",
    **options: Unpack[SubmitOptions],
) -> int:
    """`enqueue` for an async psycopg connection."""
    query, params = _statement(type, payload, schema=schema, **options)
    cur = await conn.execute(query, params)
    return _job_id(await cur.fetchone())


def _job_id(row: Any) -> int:
    """The new job's id from the function's one row, whatever row factory the caller's
    connection uses (tuples, dicts, ...)."""
    if row is None:  # a function call always returns its row: this is a broken connection
        raise RuntimeError("jobd_enqueue() returned no row")
    return int(next(iter(row.values())) if isinstance(row, Mapping) else row[0])


def _statement(
    type: str,
    payload: Mapping[str, Any] | None,
    *,
    schema: str,
    **options: Unpack[SubmitOptions],
) -> tuple[str, dict[str, Any]]:
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidParams.of_field("schema", f"{schema!r} is not a plain identifier")
    given = {"type": type, "payload": dict(payload) if payload is not None else None, **options}
    spec = parse_job_spec(given)
    new_job = _checked(spec)
    try:
        payload_json = json.dumps(new_job.payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParams.of_field("payload", f"not representable as JSON: {exc}") from None
    params = {
        "type": new_job.type,
        "payload": payload_json,
        "queue": new_job.queue,
        "priority": new_job.priority,
        # The delay counts from the database's clock, as a delay given to the daemon counts
        # from the daemon's: the SQL adds it to now().
        "run_at": spec.run_at,
        "delay": float(spec.delay or 0),
        "max_attempts": new_job.max_attempts,
        "timeout": new_job.timeout,
        "idempotency_key": new_job.idempotency_key,
        "correlation_id": new_job.correlation_id,
        "after": list(new_job.after),
        "on_parent_failure": str(new_job.on_parent_failure),
        "result_ttl": new_job.result_ttl,
    }
    workflow = _WORKFLOW_SQL if new_job.after else ""
    result_ttl = _RESULT_TTL_SQL if new_job.result_ttl is not None else ""
    # The schema is a checked plain identifier, so quoting it is all the escaping it needs.
    query = _ENQUEUE_SQL.format(schema=f'"{schema}"', workflow=workflow, result_ttl=result_ttl)
    return query, params


def _checked(spec: JobSpec) -> NewJob:
    """The job as NewJob, with the handler's defaults and validator when it is registered here."""
    from jobd.handlers import registry

    handler = registry.get(spec.type)
    max_attempts = (handler.max_attempts if handler is not None else None) or DEFAULT_MAX_ATTEMPTS
    # `now` only has to be a time for the domain's checks; the row's run_at is the database's.
    result_ttl = handler.result_ttl if handler is not None else None
    new_job = spec.to_new_job(max_attempts, None, utcnow(), result_ttl)
    # No daemon configuration here: the absolute limit, which jobs.max_payload_bytes may lower.
    check_payload_size(new_job.payload, MAX_PAYLOAD_BYTES, "the largest payload jobd accepts")
    if handler is not None and handler.validator is not None:
        check_payload(handler.validator, spec.type, new_job.payload)
    return new_job
