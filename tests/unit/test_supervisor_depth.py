"""How many jobs the supervisor lets a worker hold: the running one plus `workers.prefetch`,
and more for short jobs while a backlog waits (Pacing.depth), never past the bound."""

from __future__ import annotations

from jobd.limits import QUEUE_AHEAD_PER_WORKER
from jobd.supervisor.pacing import Pacing


def pacing(prefetch: int, *, backlog: bool, run_time: float, claim_time: float) -> Pacing:
    return Pacing(prefetch=prefetch, backlog=backlog, run_time=run_time, claim_time=claim_time)


def test_long_jobs_get_the_prefetch_only() -> None:
    assert pacing(1, backlog=True, run_time=2.0, claim_time=0.002).depth() == 2


def test_without_a_backlog_nothing_waits_in_a_worker_beyond_the_prefetch() -> None:
    assert pacing(1, backlog=False, run_time=0.0002, claim_time=0.002).depth() == 2


def test_before_any_job_has_run_the_prefetch_applies() -> None:
    assert pacing(0, backlog=True, run_time=0.0, claim_time=0.002).depth() == 1


def test_short_jobs_with_a_backlog_queue_what_two_claims_take() -> None:
    # 1 ms jobs, 2 ms claims: a worker finishes 4 jobs in two claim round trips.
    assert pacing(1, backlog=True, run_time=0.001, claim_time=0.002).depth() == 1 + 4


def test_the_queue_is_bounded() -> None:
    p = pacing(1, backlog=True, run_time=0.00001, claim_time=0.01)
    assert p.depth() == 1 + QUEUE_AHEAD_PER_WORKER


def test_a_larger_prefetch_is_kept() -> None:
    assert pacing(20, backlog=True, run_time=0.001, claim_time=0.002).depth() == 21
