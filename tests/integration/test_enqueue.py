"""jobd.enqueue on the application's own connection: the job exists, and jobd is notified, only
if the application's transaction commits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from control_harness import running_daemon
from psycopg.rows import dict_row

import jobd
from jobd.errors import InvalidParams, NotFound
from jobd.handlers import HandlerSpec, registry
from jobd.jobspec import parse_job_spec
from jobd.store import create_store

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema(pg_url: str, pg_schema: str) -> str:
    """A migrated jobd schema of its own."""

    async def migrate() -> None:
        store = create_store(pg_url, schema=pg_schema)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())
    return pg_schema


@pytest.fixture
def listener(pg_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection listening on the schema's submit channel, as idle jobd nodes do."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'LISTEN "{schema}_submit"')
        yield conn


def notifications(conn: psycopg.Connection[Any], wait: float = 0.5) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=wait, stop_after=10)]


def jobs_in(pg_url: str, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(pg_url, row_factory=dict_row) as conn:
        return conn.execute(f'SELECT * FROM "{schema}".all_jobs ORDER BY id').fetchall()


def test_a_committed_job_is_stored_and_notified(pg_url: str, schema: str, listener) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        job_id = jobd.enqueue(conn, "echo", {"order": 1}, queue="billing", schema=schema)
        assert jobs_in(pg_url, schema) == []  # not before the commit
        assert notifications(listener, 0.2) == []
        conn.commit()
    (row,) = jobs_in(pg_url, schema)
    assert row["id"] == job_id and row["type"] == "echo" and row["payload"] == {"order": 1}
    assert row["queue"] == "billing" and row["state"] == "pending" and row["max_attempts"] == 3
    assert notifications(listener) == ["billing"]


def test_a_rolled_back_job_never_existed(pg_url: str, schema: str, listener) -> None:
    with psycopg.connect(pg_url) as conn:
        jobd.enqueue(conn, "echo", {"order": 2}, schema=schema)
        conn.rollback()
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            jobd.enqueue(conn, "echo", {"order": 3}, schema=schema)
            conn.execute("SELECT 1/0")  # the application's own failure takes the job along
    assert jobs_in(pg_url, schema) == []
    assert notifications(listener) == []


def test_every_option_is_stored(pg_url: str, schema: str) -> None:
    at = datetime(2099, 1, 1, 6, tzinfo=UTC)
    with psycopg.connect(pg_url) as conn:
        jobd.enqueue(
            conn,
            "report",
            {"month": "2024-06"},
            queue="batch",
            priority=5,
            max_attempts=7,
            run_at=at,
            timeout=90,
            idempotency_key="report-2024-06",
            correlation_id="corr-9",
            schema=schema,
        )
        jobd.enqueue(conn, "echo", delay=600, schema=schema)
        now = conn.execute("SELECT now()").fetchone()[0]
        conn.commit()
    first, delayed = jobs_in(pg_url, schema)
    assert (first["priority"], first["max_attempts"], first["timeout"]) == (5, 7, 90.0)
    assert first["run_at"] == at and first["queue"] == "batch"
    assert (first["idempotency_key"], first["correlation_id"]) == ("report-2024-06", "corr-9")
    assert delayed["run_at"] - now == timedelta(seconds=600)  # from the database's clock


def test_an_idempotency_key_gives_back_the_existing_job(pg_url: str, schema: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:  # each call commits at once
        first = jobd.enqueue(conn, "echo", idempotency_key="once", schema=schema)
        second = jobd.enqueue(conn, "echo", {"other": 1}, idempotency_key="once", schema=schema)
    assert first == second
    assert len(jobs_in(pg_url, schema)) == 1


def test_dict_rows_and_the_async_connection(pg_url: str, schema: str) -> None:
    with psycopg.connect(pg_url, row_factory=dict_row) as conn:
        assert isinstance(jobd.enqueue(conn, "echo", schema=schema), int)

    async def use_async() -> int:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            job_id = await jobd.aenqueue(conn, "echo", {"async": True}, schema=schema)
            await conn.commit()
            return job_id

    job_id = asyncio.run(use_async())
    assert [r["id"] for r in jobs_in(pg_url, schema)][-1] == job_id


def test_the_schema_is_the_one_given(pg_url: str, schema: str) -> None:
    with psycopg.connect(pg_url) as conn, pytest.raises(psycopg.errors.Error):
        jobd.enqueue(conn, "echo", schema=f"{schema}_missing")
    assert jobs_in(pg_url, schema) == []


class NoDatabase:
    """A connection that must not be used: invalid jobs are refused before any SQL."""

    def execute(self, *args: Any) -> Any:
        raise AssertionError("enqueue reached the database with an invalid job")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"priority": "high"}, "priority"),
        ({"queue": ""}, "queue"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"payload": {"s": {1, 2}}}, "payload"),
        ({"run_at": datetime(2099, 1, 1)}, "run_at"),
        ({"run_at": datetime(2099, 1, 1, tzinfo=UTC), "delay": 5}, "delay"),
        ({"delay": -5}, "delay"),
        ({"schema": "jobd; DROP TABLE x"}, "schema"),
    ],
)
def test_invalid_jobs_are_refused_before_any_sql(kwargs: dict[str, Any], field: str) -> None:
    payload = kwargs.pop("payload", {})
    with pytest.raises(InvalidParams) as caught:
        jobd.enqueue(NoDatabase(), "echo", payload, **kwargs)  # type: ignore[arg-type]
    assert caught.value.data["field"] == field


def test_a_handler_registered_here_lends_its_defaults_and_validator(
    pg_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def needs_to(payload: dict[str, Any]) -> None:
        if "to" not in payload:
            raise ValueError("to: required")

    spec = HandlerSpec("enqueue_test_mail", lambda ctx, p: None, max_attempts=9, validator=needs_to)
    monkeypatch.setitem(registry._handlers, spec.name, spec)
    with pytest.raises(InvalidParams, match="rejected by the 'enqueue_test_mail' handler: to"):
        jobd.enqueue(NoDatabase(), spec.name, {}, schema=schema)  # type: ignore[arg-type]
    with psycopg.connect(pg_url) as conn:
        jobd.enqueue(conn, spec.name, {"to": "a@example.com"}, schema=schema)
        conn.commit()
    assert jobs_in(pg_url, schema)[0]["max_attempts"] == 9


def test_a_running_daemon_runs_what_was_committed_and_nothing_else(
    pg_url: str, schema: str
) -> None:
    with running_daemon(pg_url, schema, workers=1) as daemon, daemon.client() as client:
        with psycopg.connect(pg_url) as conn:
            committed = jobd.enqueue(conn, "echo", {"kept": True}, schema=schema)
            conn.commit()
            rolled_back = jobd.enqueue(conn, "echo", {"kept": False}, schema=schema)
            conn.rollback()
        result = client.wait(committed, timeout=20)
        assert result.job.state.value == "completed" and result.job.result == {"kept": True}
        assert [j.id for j in client.list().jobs] == [committed]
        with pytest.raises(NotFound):
            client.get(rolled_back)


# Edge values of each limit that jobd_enqueue() checks in SQL, just inside and just outside.
# The SQL function (migrations/postgres, never edited) must refuse exactly what jobd.jobspec
# refuses; its upper limits (name lengths, attempts, timeout, delay) are the spec's alone.
SQL_CHECKED_EDGES = [
    ("type", ""),
    ("type", "x"),
    ("queue", ""),
    ("queue", "q"),
    ("priority", 2**31 - 1),
    ("priority", 2**31),
    ("priority", -(2**31)),
    ("priority", -(2**31) - 1),
    ("max_attempts", 0),
    ("max_attempts", 1),
    ("timeout", 0),
    ("timeout", 0.001),
]


def _spec_refuses(field: str, value: Any) -> bool:
    given = {"type": "echo", field: value}
    try:
        parse_job_spec(given).to_new_job(3, None, datetime.now(UTC))
    except InvalidParams:
        return True
    return False


def _sql_refuses(conn: psycopg.Connection[Any], schema: str, field: str, value: Any) -> bool:
    given = {"type": "echo", "queue": "default", "priority": 0, "max_attempts": 3, "timeout": None}
    given[field] = value
    sql = (
        f'SELECT "{schema}".jobd_enqueue(%(type)s, %(payload)s::jsonb, queue => %(queue)s,'
        " priority => %(priority)s::bigint::integer, max_attempts => %(max_attempts)s::integer,"
        " timeout => %(timeout)s::double precision)"
    )
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(sql, given | {"payload": "{}"})
    except psycopg.errors.DataError:
        return True
    except psycopg.errors.IntegrityError:
        return True
    return False


def test_the_sql_function_refuses_what_the_job_spec_refuses(pg_url: str, schema: str) -> None:
    with psycopg.connect(pg_url) as conn:
        for field, value in SQL_CHECKED_EDGES:
            sql, spec = _sql_refuses(conn, schema, field, value), _spec_refuses(field, value)
            assert sql == spec, f"{field}={value!r}: SQL refuses {sql}, the spec refuses {spec}"
