"""The supervisor's PostgreSQL store runs on the supervision loop (jobd.supervisor.home_loop,
docs/adr/0040), with the I/O thread's deadlines: a call past its deadline is given up at once
and cancelled, never waited for; SQLite's store stays on the I/O thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from jobd.daemon import store_place
from jobd.errors import Unavailable
from jobd.store import create_store
from jobd.supervisor.home_loop import HomeLoop
from jobd.supervisor.io_thread import IoThread


async def stuck(cancelled: asyncio.Event, cleanup: float) -> None:
    """A call that never answers, and whose cancellation takes `cleanup` seconds (psycopg's
    cancel of a statement on a database that does not answer)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.set()
        await asyncio.sleep(cleanup)
        raise


async def test_run_gives_up_at_its_deadline_without_waiting_for_the_cancel() -> None:
    cancelled = asyncio.Event()
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await HomeLoop(asyncio.get_running_loop()).run(stuck(cancelled, cleanup=30), 0.05)
    assert time.monotonic() - began < 10
    await asyncio.wait_for(cancelled.wait(), 10)


async def test_a_crossing_onto_the_same_loop_keeps_its_deadline() -> None:
    cancelled = asyncio.Event()
    crossing = HomeLoop(asyncio.get_running_loop()).crossing(0.05)
    began = time.monotonic()
    with pytest.raises(Unavailable):
        await crossing.run(stuck(cancelled, cleanup=30))
    assert time.monotonic() - began < 10
    await asyncio.wait_for(cancelled.wait(), 10)


async def test_run_returns_the_result() -> None:
    async def answer() -> int:
        return 42

    assert await HomeLoop(asyncio.get_running_loop()).run(answer()) == 42


async def test_the_postgres_store_runs_here_and_sqlite_on_the_io_thread(
    pg_url: str, pg_schema: str, tmp_path: Path
) -> None:
    assert isinstance(store_place(create_store(pg_url, schema=pg_schema)), HomeLoop)
    io = store_place(create_store(f"sqlite://{tmp_path / 'jobd.db'}"))
    try:
        assert isinstance(io, IoThread) and io.loop.is_running()
    finally:
        io.stop()


async def cancelled_as_it_answers(
    run: Callable[[Coroutine[Any, Any, int]], Awaitable[int]], turns: int
) -> bool:
    """Whether a caller of `run` whose cancel comes `turns` turns of the loop after the answer
    (so at some `turns`, while the answer is on its way to it) ends cancelled, as a cancel
    asks.  True too when the caller had already returned before the cancel."""
    answer = asyncio.Event()

    async def call() -> int:
        await answer.wait()
        return 42

    caller = asyncio.ensure_future(run(call()))
    for _ in range(3):  # the call is under way, waiting for its answer
        await asyncio.sleep(0)
    answer.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    if not caller.cancel():
        return True  # it returned before the cancel: nothing was asked of it
    try:
        await caller
    except asyncio.CancelledError:
        return True
    return False  # it returned its answer: the cancel was lost


@pytest.mark.parametrize("turns", range(12))
async def test_a_cancel_that_meets_the_answer_is_not_lost(turns: int) -> None:
    """Python 3.11's asyncio.wait_for returns the answer when a cancel and the answer meet,
    and the cancel is gone: a task cancelled at exit (the heartbeat) then went on beating and
    the node never stopped.  Every deadline here is asyncio.timeout, which keeps the cancel."""
    home = HomeLoop(asyncio.get_running_loop())
    assert await cancelled_as_it_answers(lambda coro: home.run(coro, 30.0), turns)
    assert await cancelled_as_it_answers(home.crossing(30.0).run, turns)
    io = IoThread().start()
    try:
        assert await cancelled_as_it_answers(lambda coro: io.run(coro, 30.0), turns)
    finally:
        io.stop()
