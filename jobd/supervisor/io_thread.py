"""The I/O thread: an event loop of its own for a store whose calls block (SQLite) and the
control server beside it, so that nothing they wait for can delay the supervisor's loop on the
main thread (docs/adr/0022); on PostgreSQL, the control server's own thread (docs/adr/0036),
the supervisor's store running on the supervisor's loop (docs/adr/0040).

A daemon thread: a database that hangs can leave a call stuck in it, and that must not keep
the process alive once the supervisor has finished (`stop` waits a bounded time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from jobd.supervisor.crossing import Crossing
from jobd.supervisor.event_loop import new_event_loop

log = logging.getLogger("jobd.supervisor")

T = TypeVar("T")

#: How long `stop` waits for the thread's loop to wind down before leaving it behind.
STOP_TIMEOUT = 1.0


class IoThread:
    def __init__(self, name: str = "jobd-io"):
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._running = threading.Event()

    def start(self) -> IoThread:
        self._thread.start()
        self._running.wait()
        return self

    def crossing(self, timeout: float, what: str = "store") -> Crossing:
        """Calls onto this thread's loop, under `timeout` each."""
        return Crossing(self.loop, timeout, what)

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """`coro` run on this thread, for a caller on another loop (no deadline by default:
        for the daemon's start, which has its own)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        async with asyncio.timeout(timeout):
            return await asyncio.wrap_future(future)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel what still runs on the thread, stop its loop, and wait `timeout` at most."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._cancel_all)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the I/O thread did not stop in time; leaving it behind")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._running.set)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.close()

    def _cancel_all(self) -> None:
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        if not tasks:
            self.loop.stop()
            return
        gathered = asyncio.gather(*tasks, return_exceptions=True)
        # Tasks get a moment to finish cancelling; a stuck one is left behind with the loop.
        self.loop.call_later(STOP_TIMEOUT / 2, self.loop.stop)
        gathered.add_done_callback(lambda _: self.loop.stop())
