"""What the supervisor tells about itself: its process title, its status line for systemd
(with the watchdog pings), the worker views and metrics, how long it has been short of
workers, and the schedules defined differently elsewhere."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from setproctitle import setproctitle

from jobd.errors import Unavailable
from jobd.workers import resident_memory_of

#: Seconds a turn of the supervisor's loop may take beyond its poll intervals before the
#: watchdog pings stop.
LIVENESS_SLACK = 5.0

if TYPE_CHECKING:
    from jobd.supervisor.loop import Supervisor


class Status:
    def __init__(self, supervisor: Supervisor):
        self.sup = supervisor
        self._workers_short_since: float | None = None

    async def metrics_text(self) -> str:
        """Every metric in the Prometheus text format; the job counts by state and queue are
        read from the store when the cached ones are older than a few seconds."""
        sup = self.sup
        if sup.counts_cache.stale():
            try:
                sup.counts_cache.put(await sup.store.counts())
            except Unavailable as exc:
                sup.health.trouble("count jobs", exc)
        return sup.metrics.exposition()

    def _busy(self) -> int:
        return sum(1 for w in self.sup.workers.values() if w.running is not None)

    def _state(self) -> str:
        return "draining" if self.sup.draining else "running"

    def update(self) -> None:
        """Once a turn of the loop: the worker gauges, the rates, the process title."""
        sup = self.sup
        busy = self._busy()
        sup.metrics.set_workers(busy, len(sup.workers) - busy)
        self._track_worker_count()
        if sup.rates.due():
            sup.rates.sample(sup.metrics.totals())
        setproctitle(
            f"jobd: supervisor {self._state()} {busy}/{len(sup.workers)} busy node={sup.node}"
        )

    def _track_worker_count(self) -> None:
        ready = sum(1 for w in self.sup.workers.values() if w.ready)
        if ready >= self.sup.settings.workers:
            self._workers_short_since = None
        elif self._workers_short_since is None:
            self._workers_short_since = time.monotonic()

    def workers_short_for(self) -> float:
        """Seconds this node has had fewer ready workers than configured (0: it has them all).
        A worker being replaced is short for milliseconds; health only minds a long gap."""
        if self._workers_short_since is None:
            return 0.0
        return time.monotonic() - self._workers_short_since

    def line(self) -> str:
        totals = self.sup.metrics.totals()
        return (
            f"{self._state()}: {self._busy()}/{len(self.sup.workers)} workers busy,"
            f" {totals['completed']:.0f} completed, {totals['failed']:.0f} failed"
            + ("" if self.sup.store_ok else "; store unavailable")
        )

    def live(self) -> bool:
        """The supervisor's loop has finished a turn lately (it turns at least every poll
        interval).  Whether the store answers does not matter here: a restart does not cure
        a database that hangs, and it would cost the jobs running (docs/adr/0022)."""
        limit = 2 * self.sup.settings.poll_interval + LIVENESS_SLACK
        return time.monotonic() - self.sup.last_turn < limit

    async def systemd_loop(self) -> None:
        """Watchdog pings from the loop itself, and only while its turns go on (a stuck loop
        stops them, and systemd restarts the service), a STATUS line every few seconds, and
        more stop time asked for while a drain waits for long jobs."""
        notifier = self.sup.notifier
        interval = min(notifier.watchdog_interval or 5.0, 5.0)
        while True:
            if self.live():
                notifier.watchdog()
            notifier.status(self.line())
            if self.sup.draining:
                left = max(self.sup.drain_deadline - time.monotonic(), 0.0)
                notifier.extend_timeout(left + 2 * self.sup.settings.kill_grace + 10.0)
            await asyncio.sleep(interval)

    def schedule_warnings(self) -> list[str]:
        """This node's schedules that another node defines differently (for `health`)."""
        return self.sup.housekeeping.schedules.warnings()

    def worker_views(self) -> list[dict[str, Any]]:
        return [
            {
                "index": w.index,
                "pid": w.pid,
                "state": w.state(),
                "job_id": w.running,
                "jobs_done": w.jobs_done,
                "rss": resident_memory_of(w.pid),
            }
            for w in sorted(self.sup.workers.values(), key=lambda w: w.index)
        ]
