"""Stores: where jobs are kept.  `open_store(url)` picks the implementation from the URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobd.store.base import (
    Changed,
    ClaimRequest,
    Counts,
    JobFilter,
    Links,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    Page,
    ProgressReport,
    Start,
    Store,
    Submitted,
    SubmittedAndClaimed,
)

__all__ = [
    "Changed",
    "ClaimRequest",
    "Counts",
    "JobFilter",
    "Links",
    "Notification",
    "NotificationKind",
    "Outcome",
    "OutcomeKind",
    "Page",
    "ProgressReport",
    "Start",
    "Store",
    "Submitted",
    "SubmittedAndClaimed",
    "create_store",
]


def create_store(url: str, **options: Any) -> Store:
    """A store for `url` (not yet opened): postgresql://…, sqlite:///path, or memory://.

    `options` are passed to the implementation (e.g. `schema=` for PostgreSQL)."""
    if url.startswith(("postgresql://", "postgres://")):
        from jobd.store.postgres import PostgresStore

        return PostgresStore(url, **options)
    if url.startswith("sqlite://"):
        from jobd.config.paths import default_database_url
        from jobd.store.sqlite import SQLiteStore

        # Only jobd's own state directory is created; a directory the user named must exist.
        create_directory = url == default_database_url()
        return SQLiteStore(
            sqlite_path(url), **_only(options, "clock"), create_directory=create_directory
        )
    if url.startswith("memory://"):
        from jobd.store.memory import MemoryStore

        return MemoryStore(**_only(options, "clock"))
    raise ValueError(
        f"database.url: unsupported URL {url!r}"
        " (expected postgresql://…, sqlite:///path or memory://)"
    )


def sqlite_path(url: str) -> Path:
    """sqlite:///relative/or/absolute → Path; sqlite:////abs also accepted."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise ValueError(f"database.url: {url!r} needs a path, e.g. sqlite:///var/lib/jobd/jobd.db")
    path = rest[1:] if rest.startswith("//") else rest
    return Path(path)


def _only(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in names}
