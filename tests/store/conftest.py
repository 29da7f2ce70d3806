"""Fixtures of the store tests that talk to PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from jobd.store import create_store
from jobd.store.postgres import PostgresStore

MakeStore = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def make_store(pg_url: str, pg_schema: str) -> AsyncIterator[MakeStore]:
    """Open stores on this test's schema (each one is a node: its own pool and LISTEN
    connection); all are closed at the end."""
    opened: list[PostgresStore] = []

    async def make(**options: Any) -> PostgresStore:
        store = create_store(pg_url, schema=pg_schema, **options)
        assert isinstance(store, PostgresStore)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
