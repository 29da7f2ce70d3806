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

The job is checked here as the daemon would check it: the domain's rules (jobd.domain.NewJob),
and, when the handler is registered in this process (the application imported its handler
module), the handler's payload validator and its default max_attempts.  The type itself cannot
be checked against the daemon's handlers: a job of a type no node runs fails when claimed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobd.domain import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, InvalidJob, NewJob
from jobd.errors import InvalidParams

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
    " correlation_id => %(correlation_id)s)"
)


def enqueue(
    conn: psycopg.Connection[Any],
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    max_attempts: int | None = None,
    run_at: datetime | None = None,
    delay: float | None = None,
    timeout: float | None = None,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    schema: str = "jobd",
) -> int:
    """Insert a job in `conn`'s current transaction; return its id (for a taken
    `idempotency_key`, the id of the job holding it).  `schema` is jobd's schema
    (database.schema).  Raises jobd.errors.InvalidParams for a job the daemon would refuse."""
    query, params = _statement(
        type,
        payload,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        run_at=run_at,
        delay=delay,
        timeout=timeout,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        schema=schema,
    )
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if not isinstance(row, Mapping) else int(next(iter(row.values())))


async def aenqueue(
    conn: psycopg.AsyncConnection[Any],
    type: str,
    payload: Mapping[str, Any] | None = None,
    **options: Any,
) -> int:
    """`enqueue` for an async psycopg connection."""
    query, params = _statement(type, payload, **options)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return int(row[0]) if not isinstance(row, Mapping) else int(next(iter(row.values())))


def _statement(
    type: str,
    payload: Mapping[str, Any] | None,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    max_attempts: int | None = None,
    run_at: datetime | None = None,
    delay: float | None = None,
    timeout: float | None = None,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    schema: str = "jobd",
) -> tuple[str, dict[str, Any]]:
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidParams(f"schema: {schema!r} is not a plain identifier", field="schema")
    if run_at is not None and delay is not None:
        raise InvalidParams("delay: give run_at or delay, not both", field="delay")
    if delay is not None and (isinstance(delay, bool) or not delay >= 0):
        raise InvalidParams("delay: must be a number of seconds >= 0", field="delay")
    spec = _checked(
        type,
        dict(payload) if payload is not None else {},
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        run_at=run_at,
        timeout=timeout,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
    )
    try:
        payload_json = json.dumps(spec.payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParams(f"payload: not representable as JSON: {exc}", field="payload") from None
    params = {
        "type": spec.type,
        "payload": payload_json,
        "queue": spec.queue,
        "priority": spec.priority,
        "run_at": spec.run_at,
        "delay": float(delay or 0),
        "max_attempts": spec.max_attempts,
        "timeout": spec.timeout,
        "idempotency_key": spec.idempotency_key,
        "correlation_id": spec.correlation_id,
    }
    # The schema is a checked plain identifier, so quoting it is all the escaping it needs.
    return _ENQUEUE_SQL.format(schema=f'"{schema}"'), params


def _checked(type: str, payload: dict[str, Any], **fields: Any) -> NewJob:
    """The job as NewJob, with the handler's defaults and validator when it is registered here."""
    from jobd.handlers import registry

    handler = registry.get(type) if isinstance(type, str) else None
    if fields["max_attempts"] is None:
        handler_default = handler.max_attempts if handler is not None else None
        fields["max_attempts"] = handler_default or DEFAULT_MAX_ATTEMPTS
    try:
        spec = NewJob(type=type, payload=payload, **fields)
    except InvalidJob as exc:
        raise InvalidParams(str(exc), field=exc.field) from None
    if handler is not None and handler.validator is not None:
        try:
            handler.validator(spec.payload)
        except ValueError as exc:
            raise InvalidParams(
                f"payload: rejected by the {type!r} handler: {exc}", field="payload"
            ) from None
    return spec
