"""The PostgreSQL store while the database is away and when it comes back, through a TCP proxy
(tests/tcp_proxy.py) that the test cuts and restores -- the shared server itself is never
stopped.  The daemon-level story is tests/integration/test_outage.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tcp_proxy import TcpProxy

from jobd.domain import NewJob
from jobd.errors import Unavailable
from jobd.store import create_store
from jobd.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
async def proxied(pg_url: str, pg_schema: str) -> AsyncIterator[tuple[PostgresStore, TcpProxy]]:
    port = int(pg_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(("127.0.0.1", port)).start()
    store = create_store(proxy.url(pg_url), schema=pg_schema, min_size=1, max_size=2)
    assert isinstance(store, PostgresStore)
    await store.open()
    await store.migrate()
    try:
        yield store, proxy
    finally:
        proxy.restore()
        await store.close()
        proxy.close()


async def test_calls_fail_fast_while_down_and_work_soon_after_the_return(
    proxied: tuple[PostgresStore, TcpProxy],
) -> None:
    """While the database is away a call is Unavailable within about a second, saying why
    (not after the pool's 30-second acquire timeout); once it is back, calls work again within
    a couple of seconds -- not when the pool's doubling retry delay (1, 2, 4, 8, 16 s) next
    happens to try, which for a 9-second outage is 6 s or more later."""
    store, proxy = proxied
    job = (await store.submit(NewJob("echo", {}))).job
    proxy.cut()
    down_until = time.monotonic() + 9.0
    while time.monotonic() < down_until:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await store.get(job.id)
        assert time.monotonic() - started < 2.5
        assert caught.value.message.startswith("store unavailable")
        await asyncio.sleep(0.3)
    assert "cannot be reached" in caught.value.message
    proxy.restore()
    restored = time.monotonic()
    while True:
        try:
            assert (await store.get(job.id)).id == job.id
            break
        except Unavailable:
            assert time.monotonic() - restored < 3.5, "the store did not come back in time"
            await asyncio.sleep(0.05)
