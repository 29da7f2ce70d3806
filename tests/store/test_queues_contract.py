"""The store contract for operating the queues, on memory, SQLite and PostgreSQL alike: the
persisted pause state, the queues' summary, bulk actions in bounded batches with a
continuation, run-now and priority of a pending job, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobd.domain import ErrorInfo, Job, NewJob, State
from jobd.errors import Conflict, InvalidParams, NotFound
from jobd.store import JobFilter, Notification, NotificationKind, Outcome, OutcomeKind, Store
from jobd.store.queues import Adjustment, AuditEntry, BulkAction

LATER = datetime.now(UTC) + timedelta(hours=1)


async def submit(store: Store, n: int, queue: str = "bulk", **fields: object) -> list[int]:
    specs = [NewJob("echo", {"n": i}, queue=queue, **fields) for i in range(n)]  # type: ignore[arg-type]
    return [s.job.id for s in await store.submit_many(specs)]


async def run_all(store: Store, action: BulkAction, filters: JobFilter, batch: int) -> list[int]:
    """Every batch of `action` until none is left; the size of each."""
    sizes, after = [], 0
    while True:
        result = await store.bulk(action, filters, after, batch)
        if result.last_id is None:
            return sizes
        sizes.append(len(result.changed))
        after = result.last_id


async def test_a_pause_is_kept_for_the_fleet_and_announced(store: Store) -> None:
    heard: list[Notification] = []
    store.add_listener(heard.append)
    assert await store.queue_records() == []
    record = await store.set_queue_paused("mail", True, reason="SMTP down", actor="uid:1000")
    assert (record.name, record.paused, record.reason, record.changed_by) == (
        "mail",
        True,
        "SMTP down",
        "uid:1000",
    )
    assert [r.name for r in await store.queue_records() if r.paused] == ["mail"]
    assert any(n.kind is NotificationKind.QUEUES for n in heard)
    resumed = await store.set_queue_paused("mail", False, actor="uid:1000")
    assert not resumed.paused and resumed.reason is None
    assert [r.paused for r in await store.queue_records()] == [False]


async def test_a_paused_queue_is_left_out_of_the_claim_it_is_excluded_from(store: Store) -> None:
    await submit(store, 2, "paused")
    (other,) = await submit(store, 1, "open")
    claimed = await store.claim("n", 10, lease=30, exclude_queues=["paused"])
    assert [j.id for j in claimed] == [other]


async def test_the_summary_counts_each_queue(store: Store) -> None:
    await submit(store, 3, "a")
    await submit(store, 1, "b", run_at=LATER)
    (summary_a, summary_b) = await store.queue_summaries(timedelta(hours=1))
    assert (summary_a.name, summary_a.count("pending"), summary_a.failed_recently) == ("a", 3, 0)
    assert summary_a.oldest_due_at is not None
    assert summary_b.count("pending") == 1 and summary_b.oldest_due_at is None  # not due


async def test_a_bulk_cancel_goes_in_batches_of_at_most_its_size(store: Store) -> None:
    ids = await submit(store, 25)
    await submit(store, 3, "other")
    filters = JobFilter(queue="bulk")
    assert await store.count_jobs(filters) == 25
    assert await run_all(store, BulkAction.CANCEL, filters, 10) == [10, 10, 5]
    assert {(await store.get(i)).state for i in ids} == {State.CANCELED}
    assert await store.count_jobs(JobFilter(queue="other", states=(State.PENDING,))) == 3


async def test_a_bulk_retry_and_purge_act_on_finished_jobs_only(store: Store) -> None:
    ids = await submit(store, 12)
    await run_all(store, BulkAction.CANCEL, JobFilter(queue="bulk"), 5)
    assert await run_all(store, BulkAction.RETRY, JobFilter(queue="bulk"), 5) == [5, 5, 2]
    job = await store.get(ids[0])
    assert job.state is State.PENDING and job.attempts == 0
    await run_all(store, BulkAction.CANCEL, JobFilter(queue="bulk"), 100)
    assert await run_all(store, BulkAction.PURGE, JobFilter(queue="bulk"), 100) == [12]
    with pytest.raises(NotFound):
        await store.get(ids[0])


async def test_a_bulk_action_refuses_a_state_it_cannot_act_on(store: Store) -> None:
    with pytest.raises(InvalidParams, match="state"):
        await store.bulk(BulkAction.RETRY, JobFilter(states=(State.PENDING,)), 0, 10)


async def test_a_bulk_cancel_marks_running_jobs_and_continues_after_its_cursor(
    store: Store,
) -> None:
    ids = await submit(store, 4)
    (running,) = await store.claim("n", 1, lease=30)
    first = await store.bulk(BulkAction.CANCEL, JobFilter(queue="bulk"), 0, 2)
    assert first.last_id == ids[1] and first.examined == 2
    rest = await store.bulk(BulkAction.CANCEL, JobFilter(queue="bulk"), ids[1], 10)
    assert rest.last_id == ids[3]
    job = await store.get(running.id)
    assert job.state is State.RUNNING and job.cancel_requested


# What two jobs changed alike may differ in: their ids and payloads, the times of the calls
# that made and changed them, and the times in their histories.
_OWN = {"id", "payload", "created_at", "updated_at", "run_at", "started_at", "finished_at"}


def _same(a: Job, b: Job) -> dict[str, tuple[object, object]]:
    """The fields in which `a` and `b` differ, beyond their own."""
    return {
        name: (getattr(a, name), getattr(b, name))
        for name in Job.__dataclass_fields__
        if name not in _OWN and getattr(a, name) != getattr(b, name)
    }


async def _failed_twice(store: Store, queue: str) -> Job:
    """A job whose first attempt crashed and was retried, and whose second failed it."""
    (job_id,) = await submit(store, 1, queue, max_attempts=2)
    for attempt, crashed in ((1, True), (2, False)):
        (job,) = await store.claim("n", 1, lease=30, queues=[queue])
        error = ErrorInfo("Boom", f"attempt {attempt}")
        outcome = Outcome(
            job_id, attempt, OutcomeKind.FAILED, error=error, retry_at=datetime.now(UTC),
            crashed=crashed, token=job.lease_token, result={"partial": attempt},
        )  # fmt: skip
        await store.finish("n", [outcome])
    job = await store.get(job_id)
    assert job.state is State.FAILED and job.crashes == 1 and job.history
    return job


async def test_a_bulk_retry_changes_each_job_as_the_one_job_retry_does(store: Store) -> None:
    one = await _failed_twice(store, "again")
    many = await _failed_twice(store, "again")
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.retry(one.id)
    batch = await store.bulk(BulkAction.RETRY, JobFilter(queue="again"), one.id, 10)
    (change,) = batch.changed
    assert (change.id, change.type, change.queue, change.state, change.previous) == (
        many.id, "echo", "again", State.PENDING, State.FAILED,
    )  # fmt: skip
    assert change.attempts == 0
    by_one, by_many = await store.get(one.id), await store.get(many.id)
    assert _same(by_one, by_many) == {}
    assert (by_many.attempts, by_many.crashes, by_many.history) == (0, 0, ())
    assert by_many.finished_at is None and not by_many.cancel_requested
    assert by_many.last_error == many.last_error  # kept: why it failed last time (ADR 0004)
    assert before <= by_many.run_at <= datetime.now(UTC) + timedelta(seconds=1)
    (claimed,) = await store.claim("n", 1, lease=30, queues=["again"])  # due now
    assert claimed.id == one.id


async def test_a_bulk_cancel_changes_each_job_as_the_one_job_cancel_does(store: Store) -> None:
    one, many, running = await submit(store, 3, "stop")
    (claimed,) = await store.claim("node-x", 1, lease=30, queues=["stop"])
    assert claimed.id == one
    await store.request_cancel(one)  # running: marked
    await store.request_cancel(many)  # pending: canceled
    batch = await store.bulk(BulkAction.CANCEL, JobFilter(queue="stop"), 0, 10)
    assert [(c.id, c.state, c.previous, c.lease_owner) for c in batch.changed] == [
        (one, State.RUNNING, State.RUNNING, "node-x"),
        (running, State.CANCELED, State.PENDING, None),
    ]
    ended_one, ended_many = await store.get(many), await store.get(running)
    assert _same(ended_one, ended_many) == {}
    assert ended_many.state is State.CANCELED and ended_many.finished_at is not None
    assert (await store.get(one)).cancel_requested


async def test_a_bulk_purge_answers_the_jobs_it_deleted(store: Store) -> None:
    ids = await submit(store, 3, "old")
    await run_all(store, BulkAction.CANCEL, JobFilter(queue="old"), 10)
    batch = await store.bulk(BulkAction.PURGE, JobFilter(queue="old"), 0, 2)
    assert [(c.id, c.state, c.previous) for c in batch.changed] == [
        (i, State.CANCELED, State.CANCELED) for i in ids[:2]
    ]
    assert (batch.examined, batch.last_id, batch.busy) == (2, ids[1], 0)


async def test_run_now_and_priority_change_a_pending_job_only(store: Store) -> None:
    (job_id,) = await submit(store, 1, run_at=LATER)
    job = await store.adjust(job_id, Adjustment(priority=7))
    assert job.priority == 7 and job.run_at > datetime.now(UTC)
    job = await store.adjust(job_id, Adjustment(run_now=True))
    assert job.run_at <= datetime.now(UTC) + timedelta(seconds=1)
    (claimed,) = await store.claim("n", 1, lease=30)
    assert claimed.id == job_id and claimed.priority == 7
    with pytest.raises(Conflict, match="running"):
        await store.adjust(job_id, Adjustment(run_now=True))
    with pytest.raises(NotFound):
        await store.adjust(10**9, Adjustment(priority=1))


async def test_the_audit_trail_lists_newest_first(store: Store) -> None:
    for n in range(3):
        await store.record_audit(AuditEntry("uid:1000", "queue_pause", f"q{n}", {"n": n}))
    records = await store.audit_records(2)
    assert [r.entry.target for r in records] == ["q2", "q1"]
    assert records[0].entry.details == {"n": 2} and records[0].entry.actor == "uid:1000"
    older = await store.audit_records(10, before=records[-1].id)
    assert [r.entry.target for r in older] == ["q0"]
