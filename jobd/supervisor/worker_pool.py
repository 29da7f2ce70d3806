"""The supervisor's worker processes as a set: starting them (and starting again, with a pause,
when the machine is short of descriptors, processes or memory), knowing when a worker's pipe has
something to say or its process has ended, and killing them all at the end.  What a worker's
messages and its death mean for its jobs is jobd.supervisor.reports'."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from jobd.metrics import Metrics
from jobd.supervisor.respawn import RespawnBackoff, is_shortage
from jobd.worker import BOOT_ERROR
from jobd.workers import StopRequest, WorkerFactory, WorkerProcess, describe_exit

log = logging.getLogger("jobd.supervisor")

#: How long `kill_all` waits for the killed workers to be reaped.
KILL_WAIT = 5.0


class WorkerPool:
    def __init__(
        self,
        factory: WorkerFactory,
        metrics: Metrics,
        on_readable: Callable[[WorkerProcess], None],
        on_exit: Callable[[WorkerProcess], None],
    ):
        self.factory = factory
        self.metrics = metrics
        self.on_readable = on_readable
        self.on_exit = on_exit
        self.workers: dict[int, WorkerProcess] = {}
        self.respawn = RespawnBackoff()

    def spawn(self, index: int) -> None:
        w = self.factory.spawn(index)
        self.workers[index] = w
        loop = asyncio.get_running_loop()
        loop.add_reader(w.conn.fileno(), self.on_readable, w)
        loop.add_reader(w.process.sentinel, self.on_exit, w)
        log.debug("worker started", extra={"worker": index, "worker_pid": w.pid})

    def all_ready(self) -> bool:
        return all(w.ready for w in self.workers.values())

    def keep(self, count: int) -> None:
        """Start the workers missing of `count` (died or retired).  A start that fails for a
        shortage is tried again after a growing pause; the daemon and its other workers go on."""
        for index in range(1, count + 1):
            if index in self.workers:
                continue
            now = time.monotonic()
            if not self.respawn.due(now):
                return
            try:
                self.spawn(index)
            except OSError as exc:
                if not is_shortage(exc):
                    raise
                pause = self.respawn.failed(now)
                log.error(
                    "cannot start a worker; trying again",
                    extra={"worker": index, "error": str(exc), "retry_in": pause},
                )
                return
            if failures := self.respawn.succeeded():
                log.info("worker started after failed tries", extra={"failures": failures})
            self.metrics.worker_restarts.inc()

    def forget(self, w: WorkerProcess) -> None:
        """`w`'s process has ended: stop watching it and let it go."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(w.process.sentinel)
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(w.conn.fileno())
        self.on_readable(w)  # whatever it said before dying counts
        w.process.join(0)
        self.workers.pop(w.index, None)

    def ended(self, w: WorkerProcess, draining: bool) -> tuple[str, str | None]:
        """`w`'s process has ended: let it go and log it.  How it ended, and for a worker that
        never booted, why the daemon must stop (gunicorn's rule: a worker that cannot boot
        will not boot the next time either)."""
        self.forget(w)
        exitcode = w.process.exitcode
        how = describe_exit(exitcode, stopped_by_us=w.stop is not None)
        if not w.ready and not draining:
            cause = "a handler module does not import" if exitcode == BOOT_ERROR else how
            log.error("worker failed to boot", extra={"worker": w.index, "exit": how})
            return how, f"worker {w.index} failed to boot: {cause} (see its error above)"
        if w.running is not None or not (w.retiring or draining):
            log.warning("worker died", extra={"worker": w.index, "worker_pid": w.pid, "exit": how})
            self.metrics.worker_crashes.inc()
        return how, None

    @staticmethod
    def close(w: WorkerProcess) -> None:
        w.close()

    def kill_all(self) -> float:
        """SIGKILL every worker's process group (a running job's stop is a drain's); the
        deadline for their reaping."""
        for w in self.workers.values():
            if w.running is not None and w.stop is None:
                w.stop = StopRequest("drain", time.monotonic(), "sigkill")
            w.signal_group(signal.SIGKILL)
        return time.monotonic() + KILL_WAIT
