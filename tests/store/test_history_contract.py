"""Every store records the attempts that end without ending their job (a retried failure, a
timeout, a crash, an expired lease) in the job's history, bounded, and counts the last hour's
finished jobs per minute (`activity`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobd.domain import AttemptOutcome, ErrorInfo, State
from jobd.limits import ATTEMPT_HISTORY_KEEP
from jobd.store import Outcome, OutcomeKind, Start, Store
from tests.store.test_contract import NODE, claim_one, eventually, past, spec


def _fail(job_id: int, attempt: int, error: ErrorInfo, **kw: object) -> Outcome:
    return Outcome(job_id, attempt, OutcomeKind.FAILED, error=error, retry_at=past(0), **kw)  # type: ignore[arg-type]


async def test_a_first_attempt_that_completes_records_nothing(store: Store) -> None:
    job = (await store.submit(spec())).job
    await claim_one(store)
    await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.COMPLETED)])
    assert (await store.get(job.id)).history == ()


async def test_each_retried_attempt_is_recorded_then_the_job_ends(store: Store) -> None:
    job = (await store.submit(spec(max_attempts=4))).job
    started = datetime.now(UTC).replace(microsecond=0)
    await claim_one(store)
    start = Start(job.id, 1, None, started)
    await store.finish(
        NODE, [_fail(job.id, 1, ErrorInfo("ValueError", "bad", "Traceback…"))], [start]
    )
    await claim_one(store)
    await store.finish(NODE, [_fail(job.id, 2, ErrorInfo("Timeout", "timed out after 1s"))])
    await claim_one(store)
    crash = ErrorInfo("WorkerCrashed", "worker 1 died")
    await store.finish(NODE, [_fail(job.id, 3, crash, crashed=True)])
    await claim_one(store)
    await store.finish(NODE, [Outcome(job.id, 4, OutcomeKind.COMPLETED, result={"ok": 1})])
    got = await store.get(job.id)
    assert got.state is State.COMPLETED
    assert [(a.attempt, a.outcome, a.error_type) for a in got.history] == [
        (1, AttemptOutcome.FAILED, "ValueError"),
        (2, AttemptOutcome.TIMEOUT, "Timeout"),
        (3, AttemptOutcome.CRASHED, "WorkerCrashed"),
    ]
    first = got.history[0]
    assert first.error_message == "bad" and first.started_at == started
    assert all(a.ended_at is not None for a in got.history)
    assert got.history[0].ended_at <= got.history[1].ended_at <= got.history[2].ended_at
    assert "history" not in got.to_dict()  # the protocol's job is unchanged


async def test_a_release_and_the_last_failure_record_nothing(store: Store) -> None:
    job = (await store.submit(spec(max_attempts=1))).job
    await claim_one(store)
    await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.RELEASED)])
    await claim_one(store)
    await store.finish(NODE, [_fail(job.id, 1, ErrorInfo("E", "x"))])
    got = await store.get(job.id)
    assert got.state is State.FAILED and got.history == ()


async def test_an_expired_lease_is_recorded(store: Store) -> None:
    job = (await store.submit(spec(max_attempts=3))).job
    await claim_one(store, lease=0.05)
    await eventually(store.recover_expired)
    got = await store.get(job.id)
    assert got.state is State.PENDING
    (entry,) = got.history
    assert entry.attempt == 1 and entry.outcome is AttemptOutcome.LEASE_EXPIRED
    assert entry.error_type == "LeaseExpired" and NODE in entry.error_message


async def test_the_history_keeps_the_first_and_last_attempts(store: Store) -> None:
    total = 2 * ATTEMPT_HISTORY_KEEP + 5
    job = (await store.submit(spec(max_attempts=total + 1))).job
    for attempt in range(1, total + 1):
        await claim_one(store)
        await store.finish(NODE, [_fail(job.id, attempt, ErrorInfo("E", f"#{attempt}"))])
    numbers = [a.attempt for a in (await store.get(job.id)).history]
    keep = ATTEMPT_HISTORY_KEEP
    assert numbers == [*range(1, keep + 1), *range(total - keep + 1, total + 1)]


async def test_an_operators_retry_starts_a_fresh_history(store: Store) -> None:
    job = (await store.submit(spec(max_attempts=2))).job
    for attempt in (1, 2):
        await claim_one(store)
        await store.finish(NODE, [_fail(job.id, attempt, ErrorInfo("E", "x"))])
    assert len((await store.get(job.id)).history) == 1
    await store.operator_retry(job.id)
    assert (await store.get(job.id)).history == ()


async def test_activity_counts_the_last_hours_ends_per_minute(store: Store) -> None:
    empty = await store.activity()
    assert empty.minutes == []
    ids = [(await store.submit(spec(max_attempts=1))).job.id for _ in range(3)]
    await store.submit(spec())  # still pending: not counted
    for job_id in ids:
        job = await claim_one(store)
        assert job.id == job_id
    await store.finish(
        NODE,
        [
            Outcome(ids[0], 1, OutcomeKind.COMPLETED),
            Outcome(ids[1], 1, OutcomeKind.COMPLETED),
            Outcome(ids[2], 1, OutcomeKind.FAILED, error=ErrorInfo("E", "x")),
        ],
    )
    activity = await store.activity()
    assert sum(m.completed for m in activity.minutes) == 2
    assert sum(m.failed for m in activity.minutes) == 1
    assert all(m.minute.second == 0 and m.minute.microsecond == 0 for m in activity.minutes)
    assert all(activity.now - m.minute < timedelta(hours=1) for m in activity.minutes)
