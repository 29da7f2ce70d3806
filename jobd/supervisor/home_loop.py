"""The supervisor's PostgreSQL store on the supervision loop itself (docs/adr/0040).

The PostgreSQL store is asynchronous through and through (psycopg's async connections and
pool, the LISTEN connection a task): a database that hangs makes its calls wait, never the
loop.  Run there, its calls need no other thread, so no interpreter lock passes between two
threads at each step of a claim or a write-back.  The deadlines are the I/O thread's: a call
past its deadline is given up at once and cancelled where it runs, to end in its own time
(`Crossing`, whose loop is then this one).  SQLite's calls block, and keep the I/O thread."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from jobd.supervisor.crossing import Crossing

T = TypeVar("T")


class HomeLoop:
    """The I/O thread's interface (`run`, `crossing`) on the caller's own loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    def crossing(self, timeout: float, what: str = "store") -> Crossing:
        """Calls on this loop, under `timeout` each."""
        return Crossing(self.loop, timeout, what)

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """`coro`, given up after `timeout` (None: no deadline) and then cancelled without
        waiting for it, as IoThread.run does."""
        task = asyncio.ensure_future(coro)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(task)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            raise
