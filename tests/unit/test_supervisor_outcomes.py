"""What happens to a job when its attempt ends (jobd.supervisor.outcomes, pure), and the
bookkeeping of outcomes waiting to be written (jobd.supervisor.writeback.WriteBack over the
memory store, its writes driven by hand)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from jobd.domain import Backoff, ErrorInfo, Job, NewJob, State
from jobd.metrics import Metrics
from jobd.pipe import Failure, FailureKind
from jobd.store import Outcome, OutcomeKind, Store, create_store
from jobd.supervisor.job_events import JobEvents
from jobd.supervisor.outcomes import JobPolicy, crashed, failed, stopped
from jobd.supervisor.store_health import StoreHealth
from jobd.supervisor.writeback import WriteBack

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
POLICY = JobPolicy(timeout=10.0, backoff=Backoff(jitter=False), max_crashes=3)


def running(attempts: int = 1, crashes: int = 0) -> Job:
    job = Job.new(7, NewJob("echo", {}, max_attempts=3), NOW)
    return dataclasses.replace(job, state=State.RUNNING, attempts=attempts, crashes=crashes)


def test_a_retry_asked_for_waits_its_delay_and_a_permanent_failure_ends_the_job() -> None:
    error = ErrorInfo("RetryLater", "later")
    retry = failed(running(), Failure(FailureKind.RETRY, error, 42.0), False, POLICY, NOW)
    assert (retry.kind, retry.retry_at) == (OutcomeKind.FAILED, NOW + timedelta(seconds=42))
    permanent = Failure(FailureKind.PERMANENT, ErrorInfo("PermanentError", "no"))
    assert failed(running(), permanent, False, POLICY, NOW).retry_at is None


def test_a_handler_stopping_by_itself_fails_one_cancelled_before_its_start_is_canceled() -> None:
    failure = Failure(FailureKind.CANCELLED, ErrorInfo("JobCancelled", "stop"))
    by_itself = failed(running(), failure, False, POLICY, NOW)
    assert (by_itself.kind, by_itself.retry_at) == (OutcomeKind.FAILED, NOW + timedelta(seconds=1))
    assert failed(running(), failure, True, POLICY, NOW).kind is OutcomeKind.CANCELED


def test_the_crash_that_reaches_max_crashes_makes_the_job_poison() -> None:
    again = crashed(running(crashes=1), 2, "killed by SIGKILL", POLICY, NOW)
    assert again.error is not None and again.error.type == "WorkerCrashed"
    assert again.crashed and again.retry_at is not None
    poison = crashed(running(crashes=2), 2, "killed by SIGKILL", POLICY, NOW)
    assert poison.error is not None and poison.error.type == "PoisonJob"
    assert poison.retry_at is None


def test_stopped_jobs_end_by_the_reason_they_were_stopped() -> None:
    assert stopped(running(), "cancel", POLICY, NOW).kind is OutcomeKind.CANCELED
    assert stopped(running(), "drain", POLICY, NOW).kind is OutcomeKind.RELEASED
    timeout = stopped(running(), "timeout", POLICY, NOW)
    assert timeout.error == ErrorInfo("Timeout", "timed out after 10s")


NODE = "node-1"


async def writeback_over_memory() -> tuple[Store, Metrics, WriteBack]:
    """A write-back of NODE's outcomes to a memory store holding one pending job, its writes
    driven by hand (`take`, the store's `finish`, `account`)."""
    store = create_store("memory://")
    await store.open()
    await store.migrate()
    metrics = Metrics()
    writeback = WriteBack(
        lambda batch: store.finish(NODE, batch), JobEvents(metrics, False), StoreHealth(10.0)
    )
    await store.submit(NewJob("echo", {}))
    return store, metrics, writeback


async def test_two_outcomes_of_one_job_in_flight_are_each_counted() -> None:
    """A job queued in a worker that died is released; that write commits, the node claims
    the job again (the same attempt number: a release gives the attempt back) and finishes it
    before the first write's answer has been accounted.  Both outcomes are counted and logged
    with their job, and the finished one keeps its lease renewed until written.  (Found by the
    chaos harness: the second outcome's job was forgotten, so jobd_jobs_completed missed it
    and the heartbeat stopped renewing its lease.)"""
    store, metrics, writeback = await writeback_over_memory()
    [job] = await store.claim(NODE, 1, lease=30)
    writeback.record(Outcome(job.id, job.attempts, OutcomeKind.RELEASED), job)
    batch = writeback.take()
    applied = await store.finish(NODE, batch)  # committed; its answer not yet accounted
    [again] = await store.claim(NODE, 1, lease=30)
    assert (again.id, again.attempts) == (job.id, job.attempts)
    writeback.record(Outcome(again.id, again.attempts, OutcomeKind.COMPLETED, result={}), again)
    writeback.account(batch, applied)
    assert again.id in writeback.held()  # still held: its lease is renewed until written
    second = writeback.take()
    writeback.account(second, await store.finish(NODE, second))
    assert metrics.totals()["released"] == 1
    assert metrics.totals()["completed"] == 1
    assert not writeback.held()
    await store.close()


async def test_an_earlier_claims_outcome_written_beside_the_new_claims_is_not_credited() -> None:
    """A worker dies while the store does not answer: its release is kept.  The lease runs out,
    is recovered, and the node claims the job again and completes it; both outcomes go in one
    write.  The store applies the completion and refuses the release (its claim is gone), and
    only the completion is counted: the store's answer for the job is not the release's.
    (Found by the chaos harness: the release was logged and counted as a second completion.)"""
    store, metrics, writeback = await writeback_over_memory()
    [first] = await store.claim(NODE, 1, lease=0)
    writeback.record(Outcome(first.id, first.attempts, OutcomeKind.RELEASED), first)
    assert [job.id for job in await store.recover_expired()] == [first.id]
    [second] = await store.claim(NODE, 1, lease=30)
    writeback.record(Outcome(second.id, second.attempts, OutcomeKind.COMPLETED, result={}), second)
    batch = writeback.take()
    writeback.account(batch, await store.finish(NODE, batch))
    assert (await store.get(first.id)).state is State.COMPLETED
    assert metrics.totals()["completed"] == 1
    assert metrics.totals()["released"] == 0
    assert not writeback.held()
    await store.close()
