"""The supervisor's Prometheus metrics (prometheus-client), read over the control protocol
(`metrics`) and served by the HTTP shim's /metrics.

Counters and histograms move as jobs move through this node; the gauges of jobs by state and
queue come from the store at scrape time, cached for a few seconds so a busy scraper cannot load
the database.  Every metric lives in a registry of its own (not the library's global one), so
several supervisors in one process (tests) do not share numbers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobd.store import Counts

# A `_created` timestamp series beside every counter doubles the series for nothing Prometheus
# needs (it sees resets by itself).
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Outcome counters, by the event that moves them; each is labelled by job type and queue.
JOB_EVENTS = {
    "submitted": "Jobs accepted by submit (duplicates of an idempotency key not counted).",
    "started": "Attempts started by a worker.",
    "completed": "Jobs completed.",
    "failed": "Jobs failed for good (no attempt left, permanent error, poison job).",
    "retried": "Failed attempts sent back to pending for another attempt.",
    "canceled": "Jobs canceled.",
    "timed_out": "Attempts stopped for running past their timeout.",
    "recovered": "Jobs taken back after their node's lease expired (also counted as failed or"
    " canceled when that is where they went).",
    "released": "Claimed jobs given back unstarted or at drain (no attempt spent).",
}

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600)


class Metrics:
    def __init__(
        self, counts: Callable[[], Counts | None] | None = None, cache_seconds: float = 5.0
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = {
            event: Counter(
                f"jobd_jobs_{event}", help_text, ["type", "queue"], registry=self.registry
            )
            for event, help_text in JOB_EVENTS.items()
        }
        self.worker_crashes = Counter(
            "jobd_worker_crashes", "Worker processes that died unasked.", registry=self.registry
        )
        self.worker_restarts = Counter(
            "jobd_worker_restarts",
            "Worker processes started to replace one that left.",
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "jobd_job_queue_wait_seconds",
            "Time from a job's run_at to the start of an attempt.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "jobd_job_run_duration_seconds",
            "Time an attempt ran in its worker.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.workers = Gauge(
            "jobd_workers", "Worker processes by state.", ["state"], registry=self.registry
        )
        self.unrunnable = Gauge(
            "jobd_jobs_unrunnable",
            "Pending jobs of a type no live node runs (they wait for a node that does), as of"
            " this node's last heartbeat.",
            ["type"],
            registry=self.registry,
        )
        if counts is not None:
            self.registry.register(StoreCountsCollector(counts, cache_seconds))
        # The labelled series each job moves, looked up once: `labels()` validates and locks
        # on every call, a third of a job's metrics cost (ADR 0038).  The series are never
        # removed, so a cached one stays the registry's.
        self._job_children: dict[tuple[str, str, str], Counter] = {}
        self._histogram_children: dict[tuple[Histogram, str], Histogram] = {}

    def job(self, event: str, job_type: str, queue: str) -> None:
        key = (event, job_type, queue)
        child = self._job_children.get(key)
        if child is None:
            child = self._job_children[key] = self.jobs[event].labels(job_type, queue)
        child.inc()

    def waited(self, job_type: str, seconds: float) -> None:
        """A job of `job_type` started `seconds` after it was due."""
        self._child(self.queue_wait, job_type).observe(seconds)

    def ran(self, job_type: str, seconds: float) -> None:
        """An attempt of a job of `job_type` ran `seconds` in its worker."""
        self._child(self.run_duration, job_type).observe(seconds)

    def _child(self, histogram: Histogram, job_type: str) -> Histogram:
        key = (histogram, job_type)
        child = self._histogram_children.get(key)
        if child is None:
            child = self._histogram_children[key] = histogram.labels(job_type)
        return child

    def set_workers(self, busy: int, idle: int) -> None:
        self.workers.labels("busy").set(busy)
        self.workers.labels("idle").set(idle)

    def set_unrunnable(self, by_type: dict[str, int]) -> None:
        """The unrunnable gauge, exactly these types (a type that became runnable goes)."""
        self.unrunnable.clear()
        for job_type, n in by_type.items():
            self.unrunnable.labels(job_type).set(n)

    def exposition(self) -> str:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry).decode()

    def totals(self) -> dict[str, float]:
        """Each job counter summed over its labels, e.g. {"completed": 1200.0, ...}, and the
        worker crashes and restarts."""
        out = {event: total(counter) for event, counter in self.jobs.items()}
        out["worker_crashes"] = total(self.worker_crashes)
        out["worker_restarts"] = total(self.worker_restarts)
        return out


def total(counter: Counter) -> float:
    """A counter's value summed over all its labels."""
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


class StoreCountsCollector(Collector):
    """`jobd_jobs{state, queue}` from the store's counts.  Collecting must not wait for the
    database, so `counts` returns the latest cached Counts (see CountsCache), which whoever
    serves the scrape refreshes first when they are older than a few seconds."""

    def __init__(self, counts: Callable[[], Counts | None], cache_seconds: float):
        self.counts = counts
        self.cache_seconds = cache_seconds

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "jobd_jobs", "Jobs in the store by state and queue.", labels=["state", "queue"]
        )
        counts = self.counts()
        if counts is not None:
            for queue, states in sorted(counts.by("queue").items()):
                for state, n in sorted(states.items()):
                    family.add_metric([state, queue], n)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "jobd_jobs", "Jobs in the store by state and queue.", labels=["state", "queue"]
        )


class Rates:
    """Per-second rates of the job counters over the last minute or so, from snapshots of
    their totals taken at most every `every` seconds (for `jobctl stats`)."""

    def __init__(self, window: float = 60.0, every: float = 5.0):
        self.window = window
        self.every = every
        self._snapshots: deque[tuple[float, dict[str, float]]] = deque()

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return not self._snapshots or now - self._snapshots[-1][0] >= self.every

    def sample(self, totals: dict[str, float], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if not self.due(now):
            return
        self._snapshots.append((now, dict(totals)))
        while len(self._snapshots) > 2 and now - self._snapshots[1][0] >= self.window:
            self._snapshots.popleft()

    def per_second(self, totals: dict[str, float], now: float | None = None) -> dict[str, float]:
        """Each counter's rate from the oldest snapshot in the window up to `totals` now."""
        now = time.monotonic() if now is None else now
        if not self._snapshots or now - self._snapshots[0][0] <= 0:
            return {name: 0.0 for name in totals}
        since, then = self._snapshots[0]
        elapsed = now - since
        return {name: (value - then.get(name, 0.0)) / elapsed for name, value in totals.items()}


class CountsCache:
    """The store's counts, refreshed by the supervisor's loop when older than `max_age`."""

    def __init__(self, max_age: float = 5.0):
        self.max_age = max_age
        self.value: Counts | None = None
        self.fetched_at = 0.0

    def stale(self) -> bool:
        return time.monotonic() - self.fetched_at >= self.max_age

    def put(self, counts: Counts) -> None:
        self.value = counts
        self.fetched_at = time.monotonic()

    def get(self) -> Counts | None:
        return self.value
