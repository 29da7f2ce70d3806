"""The supervisor's bookkeeping of outcomes waiting to be written, without processes: a
Supervisor over the memory store, its recording and accounting driven by hand."""

from __future__ import annotations

from jobd.domain import NewJob
from jobd.handlers import Registry
from jobd.store import Outcome, OutcomeKind, create_store
from jobd.supervisor import Supervisor, SupervisorSettings


async def test_two_outcomes_of_one_job_in_flight_are_each_counted() -> None:
    """A job queued in a worker that died is released; that write commits, the node claims
    the job again (the same attempt number: a release gives the attempt back) and finishes it
    before the first write's answer has been accounted.  Both outcomes are counted and logged
    with their job, and the finished one keeps its lease renewed until written.  (Found by the
    chaos harness: the second outcome's job was forgotten, so jobd_jobs_completed missed it
    and the heartbeat stopped renewing its lease.)"""
    store = create_store("memory://")
    await store.open()
    await store.migrate()
    sup = Supervisor(store, Registry(), SupervisorSettings())
    await store.submit(NewJob("echo", {}))
    [job] = await store.claim(sup.node, 1, lease=30)
    sup._record(Outcome(job.id, job.attempts, OutcomeKind.RELEASED), job)
    batch, sup.outcomes = sup.outcomes, []
    applied = await store.finish(sup.node, batch)  # committed; its answer not yet accounted
    [again] = await store.claim(sup.node, 1, lease=30)
    assert (again.id, again.attempts) == (job.id, job.attempts)
    sup._record(Outcome(again.id, again.attempts, OutcomeKind.COMPLETED, result={}), again)
    sup._account(batch, applied)
    assert again.id in sup._outcome_jobs  # still held: its lease is renewed until written
    second, sup.outcomes = sup.outcomes, []
    sup._account(second, await store.finish(sup.node, second))
    assert sup.counters["released"] == 1
    assert sup.counters["completed"] == 1
    assert sup._outcome_jobs == {}
    await store.close()
