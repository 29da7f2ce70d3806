"""Shared fixtures.

PostgreSQL: each test run creates its own database (dropped at the end); each test that asks
for a PostgreSQL store gets its own schema in it, so tests never see each other's jobs.  The
server is found at JOBD_TEST_PG_URL (default: the local server as `postgres`).  Without a server
the PostgreSQL tests skip loudly -- unless JOBD_REQUIRE_POSTGRES=1 (CI sets it), which turns that
skip into a failure.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ADMIN_URL = os.environ.get("JOBD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("JOBD_REQUIRE_POSTGRES") == "1"
_schemas = itertools.count(1)


def _with_db(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


def _no_postgres(reason: str) -> None:
    message = f"PostgreSQL is not available ({reason}); PostgreSQL tests SKIPPED"
    if REQUIRE_POSTGRES:
        pytest.fail(f"{message}, but JOBD_REQUIRE_POSTGRES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh database for this test run, dropped afterwards."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        _no_postgres(f"psycopg missing: {exc}")
    dbname = f"jobd_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    except psycopg.Error as exc:
        _no_postgres(f"{ADMIN_URL}: {exc}".strip())
    try:
        yield _with_db(ADMIN_URL, dbname)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def pg_schema(pg_url: str) -> str:
    """A schema name no other test in this run uses."""
    return f"jobd_t{os.getpid()}_{next(_schemas)}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'jobd.db'}"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    """An open, migrated, empty store of each kind."""
    from jobd.store import create_store

    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        s = create_store(url, schema=request.getfixturevalue("pg_schema"))
    elif request.param == "sqlite":
        s = create_store(f"sqlite://{tmp_path / 'jobd.db'}")
    else:
        s = create_store("memory://")
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
