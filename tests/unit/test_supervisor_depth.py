"""How many jobs the supervisor lets a worker hold: the running one plus `workers.prefetch`,
and more for short jobs while a backlog waits (Supervisor._depth), never past the bound."""

from __future__ import annotations

from jobd.handlers import Registry
from jobd.store import create_store
from jobd.supervisor import QUEUE_AHEAD_PER_WORKER, Supervisor, SupervisorSettings


def supervisor(prefetch: int, *, backlog: bool, run_time: float, claim_time: float) -> Supervisor:
    sup = Supervisor(create_store("memory://"), Registry(), SupervisorSettings(prefetch=prefetch))
    sup._backlog, sup._run_time, sup._claim_time = backlog, run_time, claim_time
    return sup


def test_long_jobs_get_the_prefetch_only() -> None:
    assert supervisor(1, backlog=True, run_time=2.0, claim_time=0.002)._depth() == 2


def test_without_a_backlog_nothing_waits_in_a_worker_beyond_the_prefetch() -> None:
    assert supervisor(1, backlog=False, run_time=0.0002, claim_time=0.002)._depth() == 2


def test_before_any_job_has_run_the_prefetch_applies() -> None:
    assert supervisor(0, backlog=True, run_time=0.0, claim_time=0.002)._depth() == 1


def test_short_jobs_with_a_backlog_queue_what_two_claims_take() -> None:
    # 1 ms jobs, 2 ms claims: a worker finishes 4 jobs in two claim round trips.
    assert supervisor(1, backlog=True, run_time=0.001, claim_time=0.002)._depth() == 1 + 4


def test_the_queue_is_bounded() -> None:
    sup = supervisor(1, backlog=True, run_time=0.00001, claim_time=0.01)
    assert sup._depth() == 1 + QUEUE_AHEAD_PER_WORKER


def test_a_larger_prefetch_is_kept() -> None:
    assert supervisor(20, backlog=True, run_time=0.001, claim_time=0.002)._depth() == 21
