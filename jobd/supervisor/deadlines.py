"""Stopping a running job: at its timeout, on a cancel, at the end of a drain.  The worker is
asked first (its handler sees ctx.cancelled), then its process group gets SIGTERM and, another
`shutdown.kill_grace` later, SIGKILL."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable

from jobd.domain import Job
from jobd.pipe import Cancel
from jobd.workers import StopRequest, WorkerProcess

log = logging.getLogger("jobd.supervisor")

#: How far each stage of stopping a job is from the request, in kill_grace periods.
_KILL_STEPS = {"asked": 1, "sigterm": 2}


class Deadlines:
    def __init__(self, kill_grace: float, timeout_of: Callable[[Job], float]):
        self.kill_grace = kill_grace
        self._timeout_of = timeout_of
        self.immediate = False  # a second signal: no time for jobs to wind down by themselves

    def next(self, workers: Iterable[WorkerProcess], wake_at: float) -> float:
        """The earliest of `wake_at` and the workers' next timeout or kill step."""
        for w in workers:
            if w.stop is not None:
                steps = _KILL_STEPS.get(w.stop.stage)
                if steps:
                    wake_at = min(wake_at, w.stop.since + steps * self.kill_grace)
            elif w.running is not None and w.running in w.assigned:
                wake_at = min(wake_at, w.started_at + self._timeout_of(w.assigned[w.running]))
        return wake_at

    def enforce(self, workers: Iterable[WorkerProcess], drain_over: bool) -> None:
        """Stop the running jobs past their timeout (all of them once the drain is over), and
        take the stops already asked for to their next stage when it is due."""
        now = time.monotonic()
        for w in list(workers):
            if w.running is None:
                continue
            if w.stop is None:
                if drain_over:
                    self.stop(w, "drain")
                elif now - w.started_at > self._timeout_of(w.assigned[w.running]):
                    self.stop(w, "timeout")
            else:
                self._escalate(w, w.stop, now)

    def stop(self, w: WorkerProcess, reason: str) -> None:
        """Ask the worker's running job to stop; the kill follows if it does not."""
        log.info("stopping job", extra={"job_id": w.running, "worker": w.index, "reason": reason})
        now = time.monotonic()
        w.stop = StopRequest(reason, now)
        if w.running is not None:
            w.send(Cancel(w.running))
        if self.immediate:
            w.stop.since = now - self.kill_grace
            self._escalate(w, w.stop, now)

    def _escalate(self, w: WorkerProcess, stop: StopRequest, now: float) -> None:
        if stop.stage == "asked" and now - stop.since >= self.kill_grace:
            stop.stage = "sigterm"
            w.signal_group(signal.SIGTERM)
        elif stop.stage == "sigterm" and now - stop.since >= 2 * self.kill_grace:
            stop.stage = "sigkill"
            w.signal_group(signal.SIGKILL)
