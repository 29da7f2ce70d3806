"""The contract of `record_progress`, run against memory, SQLite and PostgreSQL alike: a
running attempt's latest progress, fenced on its claim, kept when the job ends, across a
retry, and read back as the handler reported it."""

from __future__ import annotations

from datetime import UTC, datetime

from jobd.domain import ErrorInfo, NewJob, State
from jobd.store import Outcome, OutcomeKind, ProgressReport, Store

NODE = "node-a"
OTHER = "node-b"
LEASE = 30.0
AT = datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
LATER = datetime(2030, 1, 2, 3, 4, 7, tzinfo=UTC)
PAST = datetime(2020, 1, 1, tzinfo=UTC)
STATUS = {"current": 3, "total": 10, "message": "resizing é✓", "ratio": 0.3, "tags": [None]}


def report(job, progress=STATUS, at=AT, **kw) -> ProgressReport:  # type: ignore[no-untyped-def]
    values = {"job_id": job.id, "attempt": job.attempts, "token": job.lease_token}
    return ProgressReport(**{**values, **kw}, progress=progress, at=at)


async def test_a_new_job_has_no_progress(store: Store) -> None:
    job = (await store.submit(NewJob(type="echo"))).job
    assert (job.progress, job.progress_at) == (None, None)
    assert (await store.get(job.id)).progress is None


async def test_progress_is_written_for_the_running_attempt_and_the_latest_wins(
    store: Store,
) -> None:
    await store.submit_many([NewJob(type="echo"), NewJob(type="echo")])
    first, second = await store.claim(NODE, 2, lease=LEASE)
    assert await store.record_progress(NODE, []) == []
    written = await store.record_progress(NODE, [report(first), report(second, progress=1)])
    assert sorted(written) == sorted([first.id, second.id])
    got = await store.get(first.id)
    assert (got.progress, got.progress_at, got.state) == (STATUS, AT, State.RUNNING)
    assert (await store.get(second.id)).progress == 1
    await store.record_progress(NODE, [report(first, progress={"current": 4}, at=LATER)])
    got = await store.get(first.id)
    assert (got.progress, got.progress_at) == ({"current": 4}, LATER)


async def test_progress_is_fenced_on_the_claim(store: Store) -> None:
    job = (await store.submit(NewJob(type="echo"))).job
    pending = await store.record_progress(NODE, [report(job, attempt=1, token=None)])
    assert pending == []  # not running
    job = (await store.claim(NODE, 1, lease=LEASE))[0]
    stale = [
        report(job, token=(job.lease_token or 0) + 1),  # another claim's
        report(job, attempt=job.attempts + 1),
    ]
    assert await store.record_progress(NODE, stale) == []
    assert await store.record_progress(OTHER, [report(job)]) == []
    assert await store.record_progress(NODE, [report(job, job_id=987654)]) == []
    assert (await store.get(job.id)).progress is None


async def test_progress_stays_when_the_job_ends_and_across_retries(store: Store) -> None:
    await store.submit(NewJob(type="echo", max_attempts=2))
    job = (await store.claim(NODE, 1, lease=LEASE))[0]
    await store.record_progress(NODE, [report(job)])
    failed = Outcome(job.id, 1, OutcomeKind.FAILED, error=ErrorInfo("E", "x"), retry_at=PAST)
    assert await store.finish(NODE, [failed]) == {job.id: State.PENDING}
    again = await store.get(job.id)
    assert (again.progress, again.progress_at) == (STATUS, AT)  # until the next attempt reports
    job = (await store.claim(NODE, 1, lease=LEASE))[0]
    assert (job.attempts, job.progress) == (2, STATUS)
    await store.record_progress(NODE, [report(job, progress={"current": 10}, at=LATER)])
    last = Outcome(job.id, 2, OutcomeKind.FAILED, error=ErrorInfo("E", "y"), token=job.lease_token)
    assert await store.finish(NODE, [last]) == {job.id: State.FAILED}
    ended = await store.get(job.id)
    assert (ended.state, ended.progress, ended.progress_at) == (
        State.FAILED,
        {"current": 10},
        LATER,
    )
    assert await store.record_progress(NODE, [report(job)]) == []  # ended: refused
    listed = (await store.list(limit=10)).jobs
    assert [j.progress for j in listed if j.id == job.id] == [{"current": 10}]
    retried = await store.retry(job.id)
    assert (retried.state, retried.progress) == (State.PENDING, {"current": 10})
