"""Submits give way to the supervisor's write-back while the node has a backlog
(jobd/write_priority.py): they wait for the write-back in flight, on another thread's loop,
and never longer than the bound after it began."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jobd.domain import NewJob
from jobd.errors import Unavailable
from jobd.store.memory import MemoryStore
from jobd.supervisor.io_thread import IoThread
from jobd.supervisor.store_proxy import StoreProxy
from jobd.write_priority import PRIORITY, WritePriority


async def test_without_a_backlog_nothing_waits() -> None:
    priority = WritePriority(max_give_way=60)
    priority.begin()  # in flight, but the last claim was not full
    await asyncio.wait_for(priority.give_way(), 10)
    priority.end()
    priority.claimed(full=True)
    await asyncio.wait_for(priority.give_way(), 10)  # full, but nothing in flight


async def test_a_submit_waits_for_the_write_back_in_flight_under_a_backlog() -> None:
    priority = WritePriority(max_give_way=60)
    priority.claimed(full=True)
    priority.begin()
    control = IoThread("jobd-control-test").start()
    try:
        waited = asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(priority.give_way(), control.loop)
        )
        deadline = time.monotonic() + 10
        while not priority._waiters and time.monotonic() < deadline:  # it has begun to wait
            await asyncio.sleep(0.001)
        assert priority._waiters and not waited.done()
        priority.end()  # on this thread, as the supervisor's store calls do
        await asyncio.wait_for(waited, 10)
    finally:
        control.stop()


async def test_the_wait_is_bounded_from_the_write_backs_start() -> None:
    """A write-back that never comes back (a database that hangs) holds submits up for the
    bound at most, and once it has passed they do not wait at all."""
    priority = WritePriority(max_give_way=0.2)
    priority.claimed(full=True)
    priority.begin()
    await asyncio.wait_for(priority.give_way(), 10)  # returns once the bound has passed
    priority._waiters.clear()
    await asyncio.wait_for(priority.give_way(), 10)  # past the bound: a plain turn
    assert not priority._waiters


class DownStore(MemoryStore):
    """A store whose write-back fails, as an unreachable database's does."""

    async def finish(self, *args: Any, **kw: Any) -> Any:
        raise Unavailable("database unreachable")


async def test_a_failed_write_back_releases_the_submits_waiting_on_it() -> None:
    io = IoThread("jobd-io-test").start()
    try:
        proxy = StoreProxy(DownStore(), io.crossing(5.0), asyncio.get_running_loop())
        PRIORITY.claimed(full=True)  # the last claim was full
        with pytest.raises(Unavailable):
            await proxy.finish("n1", [])
        assert PRIORITY._began is None  # nothing in flight: a submit does not wait
    finally:
        PRIORITY.claimed(full=False)
        io.stop()


async def test_the_nodes_claim_tells_whether_it_came_back_full() -> None:
    io = IoThread("jobd-io-test").start()
    try:
        store = MemoryStore()
        await store.submit_many([NewJob("noop")] * 3)
        proxy = StoreProxy(store, io.crossing(5.0), asyncio.get_running_loop())
        await proxy.claim("n1", 2, lease=30)
        assert PRIORITY._backlog
        await proxy.claim("n1", 2, lease=30)  # one left
        assert not PRIORITY._backlog
    finally:
        PRIORITY.claimed(full=False)
        io.stop()
