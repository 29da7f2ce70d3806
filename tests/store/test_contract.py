"""The contract every store keeps, run against memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from jobd.domain import ErrorInfo, NewJob, State
from jobd.errors import Conflict, InvalidParams, NotFound
from jobd.store import (
    ClaimRequest,
    JobFilter,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    Start,
    Store,
)
from tests.eventually import eventually as poll_until

NODE = "node-a"
OTHER = "node-b"
LEASE = 30.0


def spec(type_: str = "echo", **kw: object) -> NewJob:
    return NewJob(type=type_, payload=kw.pop("payload", {"n": 1}), **kw)  # type: ignore[arg-type]


def past(seconds: float = 1.0) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# The shared poll, with this file's deadline.
eventually = partial(poll_until, timeout=5.0)


async def claim_one(store: Store, node: str = NODE, lease: float = LEASE, **kw: object):
    jobs = await store.claim(node, 1, lease=lease, **kw)  # type: ignore[arg-type]
    assert len(jobs) == 1
    return jobs[0]


# --- submit, get, idempotency -------------------------------------------------------------


async def test_submit_then_get_returns_every_field(store: Store) -> None:
    run_at = past(5).replace(microsecond=0)
    new = NewJob(
        type="send_email",
        payload={"to": ["a@example.com"], "deep": {"list": [1, 2.5, None, True]}, "s": "é✓"},
        queue="mail",
        priority=7,
        max_attempts=5,
        run_at=run_at,
        timeout=12.5,
        idempotency_key="k-1",
        correlation_id="corr-1",
    )
    submitted = await store.submit(new)
    assert submitted.created
    job = await store.get(submitted.job.id)
    assert job == submitted.job
    assert (job.type, job.queue, job.priority, job.max_attempts) == ("send_email", "mail", 7, 5)
    assert job.payload == new.payload
    assert job.state is State.PENDING
    assert (job.attempts, job.crashes, job.cancel_requested) == (0, 0, False)
    assert job.run_at == run_at
    assert job.timeout == 12.5
    assert (job.idempotency_key, job.correlation_id) == ("k-1", "corr-1")
    assert job.created_at.tzinfo is not None and job.finished_at is None


async def test_get_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get(987654)


async def test_ids_increase(store: Store) -> None:
    a = (await store.submit(spec())).job
    b = (await store.submit(spec())).job
    assert b.id > a.id


async def test_idempotency_key_returns_the_existing_job(store: Store) -> None:
    first = await store.submit(spec(idempotency_key="same", payload={"v": 1}))
    again = await store.submit(spec(idempotency_key="same", payload={"v": 2}))
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert again.job.payload == {"v": 1}
    assert len((await store.list()).jobs) == 1


async def test_submit_many_in_order_with_duplicates(store: Store) -> None:
    existing = (await store.submit(spec(idempotency_key="dup"))).job
    results = await store.submit_many(
        [spec(payload={"i": 0}), spec(idempotency_key="dup"), spec(payload={"i": 2})]
    )
    assert [r.created for r in results] == [True, False, True]
    assert results[1].job.id == existing.id
    assert results[0].job.payload == {"i": 0} and results[2].job.payload == {"i": 2}


async def test_submit_many_refuses_more_than_a_thousand(store: Store) -> None:
    with pytest.raises(InvalidParams):
        await store.submit_many([spec() for _ in range(1001)])
    assert (await store.list()).jobs == []


# --- list -------------------------------------------------------------------------------------


async def test_list_filters_and_paginates_newest_first(store: Store) -> None:
    await store.submit_many([spec("a", queue="q1") for _ in range(5)])
    await store.submit_many([spec("b", queue="q2") for _ in range(4)])
    page = await store.list(JobFilter(type="a"), limit=2)
    seen = [j.id for j in page.jobs]
    while page.next_cursor:
        page = await store.list(JobFilter(type="a"), limit=2, cursor=page.next_cursor)
        seen += [j.id for j in page.jobs]
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    assert {j.queue for j in (await store.list(JobFilter(queue="q2"))).jobs} == {"q2"}
    assert len((await store.list(JobFilter(queue="q2"))).jobs) == 4


async def test_list_by_state_and_creation_time(store: Store) -> None:
    await store.submit_many([spec() for _ in range(3)])
    await claim_one(store)
    assert len((await store.list(JobFilter(states=(State.RUNNING,)))).jobs) == 1
    both = JobFilter(states=(State.RUNNING, State.PENDING))
    assert len((await store.list(both)).jobs) == 3
    assert (await store.list(JobFilter(created_after=datetime.now(UTC) + timedelta(1)))).jobs == []
    assert (
        len((await store.list(JobFilter(created_before=datetime.now(UTC) + timedelta(1)))).jobs)
        == 3
    )


async def test_list_limit_is_capped_and_cursor_checked(store: Store) -> None:
    await store.submit_many([spec() for _ in range(3)])
    assert len((await store.list(limit=10**6)).jobs) == 3
    with pytest.raises(InvalidParams):
        await store.list(cursor="not-a-cursor")
    with pytest.raises(InvalidParams):
        await store.list(limit=0)


async def test_last_page_has_no_cursor(store: Store) -> None:
    await store.submit_many([spec() for _ in range(2)])
    assert (await store.list(limit=2)).next_cursor is None


# --- claim ------------------------------------------------------------------------------------


async def test_claim_sets_lease_and_counts_the_attempt(store: Store) -> None:
    job_id = (await store.submit(spec())).job.id
    job = await claim_one(store)
    assert job.id == job_id
    assert job.state is State.RUNNING and job.attempts == 1
    assert job.lease_owner == NODE and job.lease_expires_at > datetime.now(UTC)
    assert job.started_at is None  # claimed is not started
    assert await store.claim(OTHER, 5, lease=LEASE) == []
    assert await store.get(job_id) == job


async def test_claim_order_priority_then_run_at_then_id(store: Store) -> None:
    low = (await store.submit(spec(priority=0, run_at=past(10)))).job
    high = (await store.submit(spec(priority=5))).job
    old = (await store.submit(spec(priority=0, run_at=past(20)))).job
    same_a = (await store.submit(spec(priority=-1, run_at=past(30)))).job
    jobs = await store.claim(NODE, 10, lease=LEASE)
    assert [j.id for j in jobs] == [high.id, old.id, low.id, same_a.id]


async def test_claim_skips_future_jobs_and_respects_the_limit(store: Store) -> None:
    await store.submit(spec(run_at=datetime.now(UTC) + timedelta(hours=1)))
    await store.submit_many([spec() for _ in range(3)])
    assert len(await store.claim(NODE, 2, lease=LEASE)) == 2
    assert len(await store.claim(NODE, 2, lease=LEASE)) == 1
    assert await store.claim(NODE, 2, lease=LEASE) == []


async def test_claim_restricted_to_queues_and_types(store: Store) -> None:
    await store.submit(spec("a", queue="q1"))
    b = (await store.submit(spec("b", queue="q1"))).job
    c = (await store.submit(spec("a", queue="q2"))).job
    assert [j.id for j in await store.claim(NODE, 5, lease=LEASE, types=["b"])] == [b.id]
    assert [j.id for j in await store.claim(NODE, 5, lease=LEASE, queues=["q2"])] == [c.id]
    assert await store.claim(NODE, 5, lease=LEASE, types=["zzz"]) == []


async def test_claim_can_leave_queues_out(store: Store) -> None:
    await store.submit(spec(queue="limited"))
    free = (await store.submit(spec(queue="free"))).job
    claimed = await store.claim(NODE, 5, lease=LEASE, exclude_queues=["limited"])
    assert [j.id for j in claimed] == [free.id]


# --- a submit with a claim (docs/adr/0042) --------------------------------------------------


async def test_a_submit_with_a_claim_answers_the_job_as_inserted_and_claims_it(
    store: Store,
) -> None:
    answer = await store.submit_claiming(spec(), ClaimRequest(NODE, 2, LEASE, types=["echo"]))
    job = answer.submitted.job
    assert answer.submitted.created and job.state is State.PENDING and job.attempts == 0
    (claimed,) = answer.claimed
    assert claimed.id == job.id and claimed.state is State.RUNNING and claimed.attempts == 1
    assert claimed.lease_owner == NODE and claimed.lease_token is not None
    assert await store.get(job.id) == claimed
    assert await store.claim(OTHER, 5, lease=LEASE) == []


async def test_a_submit_with_a_claim_claims_in_claim_order_and_leaves_out_what_it_is_told(
    store: Store,
) -> None:
    first = (await store.submit(spec(priority=5))).job
    await store.submit(spec(queue="paused", priority=9))
    claim = ClaimRequest(NODE, 1, LEASE, exclude_queues=["paused"])
    answer = await store.submit_claiming(spec(), claim)
    assert [j.id for j in answer.claimed] == [first.id]  # ahead of the new one
    assert (await store.get(answer.submitted.job.id)).state is State.PENDING
    keyed = await store.submit_claiming(spec(idempotency_key="k"), claim)
    assert [j.id for j in keyed.claimed] == [answer.submitted.job.id]
    again = await store.submit_claiming(spec(idempotency_key="k"), claim)
    assert not again.submitted.created and again.submitted.job.id == keyed.submitted.job.id
    assert [j.id for j in again.claimed] == [keyed.submitted.job.id]
    other = await store.submit_claiming(spec(type_="other"), ClaimRequest(NODE, 1, LEASE, ["zzz"]))
    assert other.claimed == [] and other.submitted.job.state is State.PENDING


# --- finishing an attempt -------------------------------------------------------------------


async def test_complete_records_result(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    done = await store.finish(
        NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED, result={"ok": [1, "two"]})]
    )
    assert done == {job.id: State.COMPLETED}
    got = await store.get(job.id)
    assert got.state is State.COMPLETED and got.result == {"ok": [1, "two"]}
    assert got.lease_owner is None and got.finished_at is not None


async def test_failure_with_retry_goes_back_to_pending(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    retry_at = datetime.now(UTC) + timedelta(seconds=60)
    err = ErrorInfo("ValueError", "boom", "Traceback ...")
    done = await store.finish(
        NODE, [Outcome(job.id, 1, OutcomeKind.FAILED, error=err, retry_at=retry_at)]
    )
    assert done == {job.id: State.PENDING}
    got = await store.get(job.id)
    assert got.state is State.PENDING and got.attempts == 1
    assert got.last_error == err
    assert abs((got.run_at - retry_at).total_seconds()) < 0.01
    assert await store.claim(NODE, 1, lease=LEASE) == []  # not before run_at


async def test_failure_without_retry_fails_the_job(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    err = ErrorInfo("PermanentError", "bad input")
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.FAILED, error=err)]) == {
        job.id: State.FAILED
    }
    got = await store.get(job.id)
    assert got.state is State.FAILED and got.last_error == err and got.finished_at


async def test_no_attempts_left_fails_even_with_a_retry_time(store: Store) -> None:
    await store.submit(spec(max_attempts=1))
    job = await claim_one(store)
    err = ErrorInfo("E", "x")
    out = await store.finish(
        NODE, [Outcome(job.id, 1, OutcomeKind.FAILED, error=err, retry_at=past(0))]
    )
    assert out == {job.id: State.FAILED}


async def test_attempts_never_exceed_max(store: Store) -> None:
    await store.submit(spec(max_attempts=2))
    for attempt in (1, 2):
        job = await claim_one(store)
        assert job.attempts == attempt
        await store.finish(
            NODE,
            [
                Outcome(
                    job.id, attempt, OutcomeKind.FAILED, error=ErrorInfo("E", "x"), retry_at=past(0)
                )
            ],
        )
    assert (await store.get(job.id)).state is State.FAILED
    assert await store.claim(NODE, 1, lease=LEASE) == []


async def test_crash_counts_a_crash(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    err = ErrorInfo("WorkerCrashed", "worker exited with code 3")
    await store.finish(
        NODE, [Outcome(job.id, 1, OutcomeKind.FAILED, error=err, retry_at=past(0), crashed=True)]
    )
    assert (await store.get(job.id)).crashes == 1


async def test_release_gives_the_attempt_back(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.RELEASED)]) == {
        job.id: State.PENDING
    }
    got = await store.get(job.id)
    assert got.state is State.PENDING and got.attempts == 0 and got.lease_owner is None
    assert (await claim_one(store)).attempts == 1


async def test_finish_in_a_batch(store: Store) -> None:
    await store.submit_many([spec() for _ in range(4)])
    jobs = await store.claim(NODE, 4, lease=LEASE)
    outcomes = [
        Outcome(jobs[0].id, 1, OutcomeKind.COMPLETED, result=1),
        Outcome(jobs[1].id, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "x")),
        Outcome(jobs[2].id, 1, OutcomeKind.RELEASED),
        Outcome(jobs[3].id, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "y"), retry_at=past(0)),
    ]
    assert await store.finish(NODE, outcomes) == {
        jobs[0].id: State.COMPLETED,
        jobs[1].id: State.FAILED,
        jobs[2].id: State.PENDING,
        jobs[3].id: State.PENDING,
    }


async def test_finish_is_fenced_on_owner_and_attempt(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    wrong_node = Outcome(job.id, 1, OutcomeKind.COMPLETED, result="x")
    assert await store.finish(OTHER, [wrong_node]) == {}
    wrong_attempt = Outcome(job.id, 2, OutcomeKind.COMPLETED, result="x")
    assert await store.finish(NODE, [wrong_attempt]) == {}
    assert (await store.get(job.id)).state is State.RUNNING
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)]) == {
        job.id: State.COMPLETED
    }
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)]) == {}
    assert await store.finish(NODE, [Outcome(424242, 1, OutcomeKind.COMPLETED)]) == {}


async def test_stale_owner_is_refused_after_recovery(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store, lease=0.05)
    await eventually(store.recover_expired)
    again = await claim_one(store, node=OTHER)
    assert again.attempts == 2
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)]) == {}
    assert await store.finish(OTHER, [Outcome(job.id, 2, OutcomeKind.COMPLETED)]) == {
        job.id: State.COMPLETED
    }


# --- leases -----------------------------------------------------------------------------------


async def test_heartbeat_extends_only_my_leases(store: Store) -> None:
    await store.submit_many([spec(), spec()])
    mine = await claim_one(store, lease=0.5)
    theirs = await claim_one(store, node=OTHER, lease=0.5)
    assert await store.heartbeat(NODE, 60) == []
    assert (await store.get(mine.id)).lease_expires_at > mine.lease_expires_at
    assert (await store.get(theirs.id)).lease_expires_at == theirs.lease_expires_at


async def test_heartbeat_given_ids_extends_only_those(store: Store) -> None:
    """A job the node does not know it holds (its claim's answer was lost) is not renewed:
    it expires and is recovered (tests/integration/test_guarantees.py)."""
    await store.submit_many([spec(), spec(), spec()])
    known, unknown, cancelled = await store.claim(NODE, 3, lease=0.5)
    await store.request_cancel(cancelled.id)
    assert await store.heartbeat(NODE, 60, [known.id, cancelled.id]) == [cancelled.id]
    assert (await store.get(known.id)).lease_expires_at > known.lease_expires_at
    assert (await store.get(unknown.id)).lease_expires_at == unknown.lease_expires_at
    assert await store.heartbeat(NODE, 60, []) == []
    assert (await store.get(unknown.id)).lease_expires_at == unknown.lease_expires_at
    recovered = await eventually(store.recover_expired)
    assert [j.id for j in recovered] == [unknown.id]


async def test_recover_expired_leases(store: Store) -> None:
    await store.submit_many([spec(max_attempts=1), spec(max_attempts=3), spec()])
    last, retry, fresh = await store.claim(NODE, 3, lease=0.05)
    await store.heartbeat(NODE, 0.05)
    await store.claim(NODE, 0, lease=LEASE)
    recovered = await eventually(store.recover_expired)
    assert {j.id for j in recovered} == {last.id, retry.id, fresh.id}
    assert (await store.get(last.id)).state is State.FAILED
    got = await store.get(retry.id)
    assert got.state is State.PENDING and got.attempts == 1 and got.lease_owner is None
    assert got.last_error is not None and got.last_error.type == "LeaseExpired"
    assert await store.recover_expired() == []


async def test_live_leases_are_not_recovered(store: Store) -> None:
    await store.submit(spec())
    await claim_one(store)
    assert await store.recover_expired() == []


# --- cancel and operator retry ----------------------------------------------------------------


async def test_cancel_pending_is_immediate(store: Store) -> None:
    job = (await store.submit(spec())).job
    got = await store.request_cancel(job.id)
    assert got.state is State.CANCELED and got.finished_at is not None
    assert await store.claim(NODE, 1, lease=LEASE) == []


async def test_cancel_running_is_requested_then_reported(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    got = await store.request_cancel(job.id)
    assert got.state is State.RUNNING and got.cancel_requested
    assert await store.heartbeat(NODE, LEASE) == [job.id]
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.CANCELED)]) == {
        job.id: State.CANCELED
    }
    assert (await store.get(job.id)).cancel_requested is False


async def test_cancel_requested_wins_over_retry_and_release(store: Store) -> None:
    await store.submit_many([spec(), spec()])
    a, b = await store.claim(NODE, 2, lease=LEASE)
    await store.request_cancel(a.id)
    await store.request_cancel(b.id)
    out = await store.finish(
        NODE,
        [
            Outcome(a.id, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "x"), retry_at=past(0)),
            Outcome(b.id, 1, OutcomeKind.RELEASED),
        ],
    )
    assert out == {a.id: State.CANCELED, b.id: State.CANCELED}


async def test_completing_a_cancel_requested_job_completes_it(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    await store.request_cancel(job.id)
    assert await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)]) == {
        job.id: State.COMPLETED
    }
    assert (await store.get(job.id)).cancel_requested is False


async def test_cancel_requested_while_node_dead_ends_canceled(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store, lease=0.05)
    await store.request_cancel(job.id)
    recovered = await eventually(store.recover_expired)
    assert [j.state for j in recovered] == [State.CANCELED]


async def test_cancel_finished_job_conflicts(store: Store) -> None:
    await store.submit(spec())
    job = await claim_one(store)
    await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)])
    with pytest.raises(Conflict):
        await store.request_cancel(job.id)
    with pytest.raises(NotFound):
        await store.request_cancel(99999)


async def test_started_at_is_written_when_the_worker_starts_the_job(store: Store) -> None:
    await store.submit_many([spec(), spec(), spec()])
    started, ended, unstarted = await store.claim(NODE, 3, lease=LEASE)
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    starts = [Start(started.id, 1, started.lease_token, at)]
    assert await store.finish(NODE, [], starts) == {}  # a start alone changes no state
    assert (await store.get(started.id)).started_at == at
    assert (await store.get(unstarted.id)).started_at is None
    stale = Start(unstarted.id, 1, (unstarted.lease_token or 0) + 1, at)  # another claim's
    done = Outcome(ended.id, 1, OutcomeKind.COMPLETED, token=ended.lease_token, started_at=at)
    assert await store.finish(NODE, [done], [stale]) == {ended.id: State.COMPLETED}
    assert (await store.get(ended.id)).started_at == at
    assert (await store.get(unstarted.id)).started_at is None
    released = Outcome(unstarted.id, 1, OutcomeKind.RELEASED, token=unstarted.lease_token)
    await store.finish(NODE, [released])
    again = await claim_one(store)
    assert again.id == unstarted.id and again.started_at is None


async def test_operator_retry_of_failed_and_canceled(store: Store) -> None:
    await store.submit_many([spec(max_attempts=1), spec()])
    failed, _ = await store.claim(NODE, 2, lease=LEASE)
    await store.finish(NODE, [Outcome(failed.id, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "x"))])
    again = await store.retry(failed.id)
    assert again.state is State.PENDING and again.attempts == 0 and again.finished_at is None
    canceled = (await store.submit(spec())).job
    await store.request_cancel(canceled.id)
    assert (await store.retry(canceled.id)).state is State.PENDING
    assert {j.id for j in await store.claim(NODE, 5, lease=LEASE)} == {failed.id, canceled.id}


async def test_operator_retry_tells_the_state_it_left(store: Store) -> None:
    await store.submit(spec(max_attempts=1))
    job = await claim_one(store)
    await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "x"))])
    from_failed = await store.operator_retry(job.id)
    assert (from_failed.previous, from_failed.job.state) == (State.FAILED, State.PENDING)
    await store.request_cancel(job.id)
    from_canceled = await store.operator_retry(job.id)
    assert (from_canceled.previous, from_canceled.job.state) == (State.CANCELED, State.PENDING)


async def test_operator_retry_of_pending_or_running_conflicts(store: Store) -> None:
    job = (await store.submit(spec())).job
    with pytest.raises(Conflict):
        await store.retry(job.id)
    await claim_one(store)
    with pytest.raises(Conflict):
        await store.retry(job.id)
    with pytest.raises(NotFound):
        await store.retry(99999)


# --- counts, prune ----------------------------------------------------------------------------


async def test_counts_by_state_queue_and_type(store: Store) -> None:
    await store.submit_many([spec("a", queue="q1"), spec("a", queue="q1"), spec("b", queue="q2")])
    await store.claim(NODE, 1, lease=LEASE, types=["b"])
    counts = await store.counts()
    assert counts.by_state() == {
        "waiting": 0,
        "pending": 2,
        "running": 1,
        "completed": 0,
        "failed": 0,
        "canceled": 0,
    }
    assert counts.by("queue") == {"q1": {"pending": 2}, "q2": {"running": 1}}
    assert counts.by("type") == {"a": {"pending": 2}, "b": {"running": 1}}


async def test_prune_removes_only_old_finished_jobs(store: Store) -> None:
    await store.submit_many([spec() for _ in range(5)])
    jobs = await store.claim(NODE, 3, lease=LEASE)
    await store.finish(NODE, [Outcome(j.id, 1, OutcomeKind.COMPLETED) for j in jobs])
    assert await store.prune(timedelta(hours=1)) == 0
    assert await store.prune(timedelta(seconds=-1), batch=2) == 3
    assert len((await store.list()).jobs) == 2


# --- notifications ----------------------------------------------------------------------------


async def test_submit_and_cancel_notify_listeners(store: Store) -> None:
    seen: list[Notification] = []
    store.add_listener(seen.append)
    await store.submit(spec(queue="mail"))
    await eventually(lambda: any(n.kind is NotificationKind.SUBMITTED for n in seen))
    assert any(n.queue == "mail" for n in seen if n.kind is NotificationKind.SUBMITTED)
    job = await claim_one(store)
    await store.request_cancel(job.id)
    await eventually(
        lambda: any(n.kind is NotificationKind.CANCEL and n.job_id == job.id for n in seen)
    )
    store.remove_listener(seen.append)


async def test_finishing_notifies_listeners(store: Store) -> None:
    seen: list[Notification] = []
    store.add_listener(seen.append)
    await store.submit(spec())
    job = await claim_one(store)
    await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)])
    await eventually(
        lambda: any(n.kind is NotificationKind.FINISHED and n.job_id == job.id for n in seen)
    )


async def test_ping_and_migrate_again(store: Store) -> None:
    await store.ping()
    assert await store.migrate() == []
    assert await store.pending_migrations() == []


async def test_a_nul_byte_in_a_filter_is_invalid_params_or_matches_nothing(store: Store) -> None:
    await store.submit(spec())
    try:
        page = await store.list(JobFilter(type="a\x00b"))
    except InvalidParams:
        return
    assert page.jobs == []


# --- edge values: every store gives the same answer ----------------------------------------
# What no store can hold is refused as invalid_params naming the field (jobd.store.values), by
# every store alike, even for callers that bypass the job spec.

UNSTORABLE_JSON = [
    pytest.param({"a": "x\x00y"}, "payload.a", id="nul-in-value"),
    pytest.param({"a\x00": 1}, "payload", id="nul-in-name"),
    pytest.param({"a": ["ok", {"b": "\ud800"}]}, "payload.a[1].b", id="lone-surrogate"),
    pytest.param({"a": "\udfff"}, "payload.a", id="lone-low-surrogate"),
]


@pytest.mark.parametrize(("payload", "field"), UNSTORABLE_JSON)
async def test_a_payload_no_store_can_hold_is_invalid_params(
    store: Store, payload: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        await store.submit(spec(payload=payload))
    assert caught.value.field == field
    assert (await store.counts()).by_state().get("pending", 0) == 0


async def test_a_batch_names_the_job_holding_the_bad_value(store: Store) -> None:
    with pytest.raises(InvalidParams) as caught:
        await store.submit_many([spec(), spec(payload={"s": "\x00"})])
    assert caught.value.field == "jobs[1].payload.s"
    assert (await store.counts()).by_state().get("pending", 0) == 0


@pytest.mark.parametrize("name", ["idempotency_key", "correlation_id"])
@pytest.mark.parametrize("value", ["k\x00", "k\udc00"], ids=["nul", "lone-surrogate"])
async def test_a_key_no_store_can_hold_is_invalid_params(
    store: Store, name: str, value: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        await store.submit(spec(**{name: value}))
    assert caught.value.field == name


@pytest.mark.parametrize(
    "run_at",
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:00:00-01:00",
        "9999-12-31T23:59:59.999999+00:00",
    ],
)
async def test_a_run_at_outside_what_every_store_holds_is_invalid_params(
    store: Store, run_at: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        await store.submit(spec(run_at=datetime.fromisoformat(run_at)))
    assert caught.value.field == "run_at"


@pytest.mark.parametrize(
    "run_at",
    [
        "0001-01-01T00:00:00+00:00",
        "1900-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59+00:00",
        "2024-06-01T12:00:00-23:59",
        "2024-06-01T12:00:00+23:59",
    ],
)
async def test_every_run_at_from_year_1_to_9999_utc_is_kept(store: Store, run_at: str) -> None:
    when = datetime.fromisoformat(run_at)
    submitted = await store.submit(spec(run_at=when))
    assert (await store.get(submitted.job.id)).run_at == when


async def test_a_far_past_run_at_is_claimed_first_among_equals(store: Store) -> None:
    later = await store.submit(spec())
    earliest = await store.submit(spec(run_at=datetime(1, 1, 1, tzinfo=UTC)))
    assert [j.id for j in await store.claim(NODE, 2, lease=LEASE)] == [
        earliest.job.id,
        later.job.id,
    ]


async def test_the_extreme_priorities_are_kept_and_ordered(store: Store) -> None:
    low = await store.submit(spec(priority=-(2**31)))
    high = await store.submit(spec(priority=2**31 - 1))
    assert (await store.get(low.job.id)).priority == -(2**31)
    claimed = await store.claim(NODE, 2, lease=LEASE)
    assert [(j.id, j.priority) for j in claimed] == [
        (high.job.id, 2**31 - 1),
        (low.job.id, -(2**31)),
    ]


async def test_strings_at_their_limits_round_trip(store: Store) -> None:
    # 200 characters of names, 255 of keys, each of them beyond the BMP or accented.
    new = NewJob(
        type="é" * 200,
        queue="\U0001f600" * 200,
        payload={"\U0001f600" * 1000: "\u2028\ufeff" * 100_000, "big": 2**70, "neg": -(2**63)},
        idempotency_key="\U0001f600" * 255,
        correlation_id="ß" * 255,
    )
    job = await store.get((await store.submit(new)).job.id)
    assert (job.type, job.queue, job.payload) == (new.type, new.queue, new.payload)
    assert (job.idempotency_key, job.correlation_id) == (new.idempotency_key, new.correlation_id)


async def test_a_result_no_store_can_hold_fails_the_attempt_not_the_batch(store: Store) -> None:
    bad, good = [(await store.submit(spec())).job.id for _ in range(2)]
    claimed = {j.id: j for j in await store.claim(NODE, 2, lease=LEASE)}
    outcomes = [
        Outcome(bad, claimed[bad].attempts, OutcomeKind.COMPLETED, result={"r": "x\x00"}),
        Outcome(good, claimed[good].attempts, OutcomeKind.COMPLETED, result={"r": "fine"}),
    ]
    assert await store.finish(NODE, outcomes) == {bad: State.FAILED, good: State.COMPLETED}
    failed = await store.get(bad)
    assert failed.result is None and failed.last_error is not None
    assert failed.last_error.type == "UnstorableResult"
    assert "result.r" in failed.last_error.message and "NUL" in failed.last_error.message
    assert (await store.get(good)).result == {"r": "fine"}


async def test_an_error_text_no_store_can_hold_is_kept_cleaned(store: Store) -> None:
    job_id = (await store.submit(spec())).job.id
    job = await claim_one(store)
    error = ErrorInfo("Bad\x00Type", "nul \x00 and \ud800 here", "trace\x00back")
    outcome = Outcome(job_id, job.attempts, OutcomeKind.FAILED, error=error)
    assert await store.finish(NODE, [outcome]) == {job_id: State.FAILED}
    kept = (await store.get(job_id)).last_error
    assert kept == ErrorInfo("Bad\ufffdType", "nul \ufffd and \ufffd here", "trace\ufffdback")
