"""The metrics module: names, totals, rates, and the docs that list them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from jobd.domain import State
from jobd.metrics import CountsCache, Metrics, Rates
from jobd.store.base import CountRow, Counts

DOC = Path(__file__).parents[2] / "docs" / "observability.md"


def test_every_metric_is_documented() -> None:
    cache = CountsCache()
    cache.put(Counts([CountRow("default", "echo", State.PENDING, 2)]))
    metrics = Metrics(counts=cache.get)
    metrics.job("completed", "echo", "default")
    names = {f.name for f in text_string_to_metric_families(metrics.exposition())}
    doc = DOC.read_text()
    for name in names:
        family = name if name == "jobd_jobs" or name.endswith("_seconds") else f"{name}_total"
        if name in ("jobd_workers", "jobd_jobs_unrunnable"):  # gauges
            family = name
        assert f"`{family}`" in doc, f"{family} is not in docs/observability.md"


def test_counts_come_from_the_cache_and_totals_sum_labels() -> None:
    cache = CountsCache()
    metrics = Metrics(counts=cache.get)
    assert "jobd_jobs{" not in metrics.exposition()  # nothing cached yet: no samples
    cache.put(Counts([CountRow("q", "echo", State.PENDING, 2)]))
    assert 'jobd_jobs{queue="q",state="pending"} 2.0' in metrics.exposition()
    metrics.job("completed", "a", "q1")
    metrics.job("completed", "b", "q2")
    metrics.worker_crashes.inc()
    totals = metrics.totals()
    assert totals["completed"] == 2 and totals["failed"] == 0 and totals["worker_crashes"] == 1


def test_rates_over_the_window() -> None:
    rates = Rates(window=60, every=5)
    rates.sample({"completed": 0}, now=0)
    assert not rates.due(now=4) and rates.due(now=5)
    rates.sample({"completed": 50}, now=10)
    assert rates.per_second({"completed": 100}, now=20) == {"completed": 5.0}
    rates.sample({"completed": 600}, now=100)  # the first snapshots fall out of the window
    assert rates.per_second({"completed": 600}, now=110)["completed"] < 10
    assert Rates().per_second({"completed": 3}) == {"completed": 0.0}


def test_cache_staleness() -> None:
    cache = CountsCache(max_age=0.0)
    assert cache.stale() and cache.get() is None
    cache.put(Counts([]))
    assert cache.get() == Counts([])
