"""The PostgreSQL store's schema: creating it and applying the migrations it lacks.

Rare, administrative work (`jobd migrate`, a node's start) with rules of its own -- an
advisory lock so that concurrent runs take turns -- kept apart from the job operations."""

from __future__ import annotations

import logging
import zlib

from psycopg import sql

from jobd import migrations
from jobd.store.postgres.connections import Connection

log = logging.getLogger(__name__)

DIALECT = "postgres"


async def migrate(conn: Connection, schema: str) -> list[str]:
    """Create the schema if needed, then apply each pending migration in its own
    transaction.  Every step holds a transaction-scoped advisory lock keyed on the schema,
    so concurrent `jobd migrate` runs (say, two nodes deploying at once) take turns, and
    each re-reads what is applied once it holds the lock."""
    applied: list[str] = []
    async with conn.transaction():
        await _lock_migrations(conn, schema)
        await _create_schema(conn, schema)
    for migration in migrations.load(DIALECT):
        async with conn.transaction():
            await _lock_migrations(conn, schema)
            if migration.version in await _applied_versions(conn, schema):
                continue
            # No parameters: sent as it is (a % is no placeholder), many statements.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        applied.append(migration.name)
        log.info("applied migration %s to schema %s", migration.name, schema)
    return applied


async def pending_migrations(conn: Connection, schema: str) -> list[str]:
    done = await _applied_versions(conn, schema)
    return [m.name for m in migrations.load(DIALECT) if m.version not in done]


async def _lock_migrations(conn: Connection, schema: str) -> None:
    key = zlib.crc32(f"jobd migrate {schema}".encode()) - 2**31  # fits a bigint
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


async def _create_schema(conn: Connection, schema: str) -> None:
    # Look before creating: CREATE SCHEMA IF NOT EXISTS still needs the CREATE privilege
    # on the database, which a deployment that pre-created the schema may not grant.
    cur = await conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,))
    if await cur.fetchone() is None:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def _applied_versions(conn: Connection, schema: str) -> set[int]:
    cur = await conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables"
        " WHERE schemaname = %s AND tablename = 'schema_migrations'",
        (schema,),
    )
    if await cur.fetchone() is None:
        return set()
    cur = await conn.execute("SELECT version FROM schema_migrations")
    return {row["version"] for row in await cur.fetchall()}
