"""Calls from one thread's event loop onto another's, each under a deadline.

The supervisor's loop reaches the store on the I/O thread this way, and the control server on
the I/O thread reaches the supervisor's state the same way (docs/adr/0022).  Waiting for the
other side never blocks the caller's loop: the answer comes back as a future
(run_coroutine_threadsafe + wrap_future), and once the deadline has passed the caller goes on
without it; the call left behind is cancelled on its own loop and ends there in its own time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from jobd.errors import Unavailable

T = TypeVar("T")


class Crossing:
    """Runs functions and coroutines on `loop` (another thread's) for callers on any loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, what: str):
        self.loop = loop
        self.timeout = timeout
        self.what = what  # names the other side in errors: "store", "supervisor"

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """`coro`'s result, run on the other loop; Unavailable once `timeout` has passed."""
        limit = self.timeout if timeout is None else timeout
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the other loop has stopped (shutting down)
            coro.close()
            raise Unavailable(f"{self.what} unavailable: its thread has stopped") from None
        try:
            async with asyncio.timeout(limit):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise Unavailable(f"{self.what} unavailable: no answer within {limit:g}s") from None

    async def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """`fn()`, called on the other loop."""
        return await self.run(_called(fn), timeout)

    async def await_(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """`await fn()`, on the other loop."""
        return await self.run(_awaited(fn), timeout)

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Call `fn(*args)` on the other loop soon, without waiting (nothing if it stopped)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)


async def _called(fn: Callable[[], T]) -> T:
    return fn()


async def _awaited(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
