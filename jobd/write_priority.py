"""The supervisor's write-back before the control server's submits, while the node has a
backlog (docs/adr/0036).

The threads of `jobd run` share one interpreter lock.  Under a flood of `submit_many`, the
control thread's Python work (building and checking 1,000 jobs, their rows, the reply) took the
lock from the write-back's short steps on the I/O thread, one switch interval at a time, and
every step of the round trip paid it: the workers waited for jobs.  So while a write-back is
in flight and the last claim came back full (more work is waiting than the node can take),
the control server's submit work stops at its next turn (`give_way`) until that write-back
has come back, for at most MAX_GIVE_WAY after it began: a database that hangs, or a
write-back that takes long, costs submits no more than that per write-back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

#: Seconds after a write-back began that submits stop giving way to it.
MAX_GIVE_WAY = 0.05


class WritePriority:
    """Marked by the supervisor's store calls (`claimed`, `begin`, `end`); waited on by the
    control server's loop (`give_way`)."""

    def __init__(self, max_give_way: float = MAX_GIVE_WAY):
        self.max_give_way = max_give_way
        self._lock = threading.Lock()
        self._began: float | None = None  # the write-back in flight, when it began
        self._backlog = False  # the last claim came back full
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def claimed(self, full: bool) -> None:
        """A claim came back: `full` if it got all it asked for (more work is waiting)."""
        self._backlog = full

    def begin(self) -> None:
        self._began = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self._began = None
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_wake, future)

    async def give_way(self) -> None:
        """A turn of the caller's loop; and while a write-back under a backlog is in flight,
        a wait for it (bounded, see the module docstring)."""
        began = self._began
        if began is None or not self._backlog:
            await asyncio.sleep(0)
            return
        left = began + self.max_give_way - time.monotonic()
        if left <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._began is None:  # it came back meanwhile
                future.cancel()
            else:
                self._waiters.append((asyncio.get_running_loop(), future))
        if future.cancelled():
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await future


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: The one of this process: `jobd run`'s supervisor marks it, its control server waits on it.
PRIORITY = WritePriority()
