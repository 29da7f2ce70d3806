"""The SQLite store's schema: applying the migrations the file lacks.

Rare, administrative work with rules of its own (each migration and its schema_migrations
row in one write transaction; statements run one by one, since executescript would commit),
kept apart from the job operations."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from jobd import migrations
from jobd.errors import JobdError
from jobd.store.base import Clock
from jobd.store.sqlite.rows import ts
from jobd.store.sqlite.thread import is_busy, write_transaction

DIALECT = "sqlite"

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""
HAS_SCHEMA_MIGRATIONS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
)


def statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one at a time.

    sqlite3's executescript() would COMMIT whatever transaction is open first; running the
    statements one by one keeps a migration and its schema_migrations row in one transaction.
    sqlite3.complete_statement knows about string literals, comments and trigger bodies."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"SQL script ends with an unterminated statement: {leftover[0]!r}")


def migrate(conn: sqlite3.Connection, clock: Clock) -> list[str]:
    """Apply each missing migration in its own transaction, together with its
    schema_migrations row; the check that it is missing is made under the write lock, so
    two processes migrating at once apply each migration once."""
    conn.execute(SCHEMA_MIGRATIONS)
    applied = []
    for migration in migrations.load(DIALECT):
        with write_transaction(conn):
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if done:
                continue
            try:
                for statement in statements(migration.sql):
                    conn.execute(statement)
            except sqlite3.Error as exc:
                if is_busy(exc):
                    raise
                raise JobdError(f"SQLite migration {migration.name} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, ts(clock())),
            )
        applied.append(migration.name)  # the caller reports it (jobd run logs, migrate prints)
    return applied


def pending_migrations(conn: sqlite3.Connection) -> list[str]:
    done: set[int] = set()
    if conn.execute(HAS_SCHEMA_MIGRATIONS).fetchone():
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    return [m.name for m in migrations.load(DIALECT) if m.version not in done]
