"""A job's own retention, `result_ttl`, the contract every store keeps (memory, SQLite,
PostgreSQL): it is stored and carried through every move of the job, and the prune drops a
finished job once its result_ttl has passed, whatever the retention says either way, but never
one a dependent that has not finished still needs (docs/adr/0033-result-retention-per-job.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobd.domain import ErrorInfo, NewJob, State
from jobd.errors import NotFound
from jobd.store import Outcome, OutcomeKind, Store

NODE = "node-a"
LEASE = 30.0
HOUR = timedelta(hours=1)
EVERYTHING = timedelta(seconds=-60)  # a retention whose cutoff is past every finished job


async def submit(store: Store, type_: str = "echo", **kw: object) -> int:
    return (await store.submit(NewJob(type=type_, **kw))).job.id  # type: ignore[arg-type]


async def run(store: Store, type_: str = "echo", kind: OutcomeKind = OutcomeKind.COMPLETED):
    """Claim every job of `type_` and end their attempts with `kind`."""
    jobs = await store.claim(NODE, 100, lease=LEASE, types=[type_])
    error = ErrorInfo("Boom", "failed") if kind is OutcomeKind.FAILED else None
    outcomes = [
        Outcome(j.id, j.attempts, kind, result={"big": "x"}, error=error, token=j.lease_token)
        for j in jobs
    ]
    await store.finish(NODE, outcomes)
    return jobs


async def exists(store: Store, job_id: int) -> bool:
    try:
        await store.get(job_id)
    except NotFound:
        return False
    return True


async def test_result_ttl_is_stored_and_kept_when_the_job_ends(store: Store) -> None:
    ttl = await submit(store, result_ttl=30)
    (batched,) = await store.submit_many([NewJob(type="echo", result_ttl=0.5)])
    plain = await submit(store)
    assert (await store.get(ttl)).result_ttl == 30.0
    assert batched.job.result_ttl == 0.5 and (await store.get(batched.job.id)).result_ttl == 0.5
    assert (await store.get(plain)).result_ttl is None
    await run(store)
    assert [(await store.get(i)).result_ttl for i in (ttl, batched.job.id, plain)] == [
        30.0, 0.5, None,
    ]  # fmt: skip


async def test_result_ttl_survives_a_failure_a_retry_and_a_cancel(store: Store) -> None:
    failing = await submit(store, "fails", result_ttl=7, max_attempts=1)
    await run(store, "fails", OutcomeKind.FAILED)
    assert (await store.get(failing)).result_ttl == 7.0
    retried = await store.retry(failing)
    assert retried.state is State.PENDING and retried.result_ttl == 7.0
    canceled = await submit(store, "waits", result_ttl=3)
    assert (await store.request_cancel(canceled)).state is State.CANCELED
    assert (await store.get(canceled)).result_ttl == 3.0


async def test_a_zero_result_ttl_goes_at_the_next_prune_whatever_the_retention(
    store: Store,
) -> None:
    gone = await submit(store, result_ttl=0)
    kept = await submit(store)
    await run(store)
    assert await store.prune(HOUR) == 1
    assert not await exists(store, gone) and await exists(store, kept)


async def test_result_ttl_applies_with_no_retention(store: Store) -> None:
    """prune(None): jobs.retention 0, the jobs that set none are kept for ever."""
    gone = await submit(store, result_ttl=0)
    kept = await submit(store)
    await run(store)
    assert await store.prune(None) == 1
    assert not await exists(store, gone) and await exists(store, kept)


async def test_a_long_result_ttl_keeps_the_job_past_the_retention(store: Store) -> None:
    kept = await submit(store, result_ttl=3600)
    gone = await submit(store)
    await run(store)
    assert await store.prune(EVERYTHING) == 1
    assert await exists(store, kept) and not await exists(store, gone)


async def test_unfinished_jobs_are_never_pruned_for_their_result_ttl(store: Store) -> None:
    pending = await submit(store, "later", result_ttl=0)
    running = await submit(store, "now", result_ttl=0)
    await store.claim(NODE, 1, lease=LEASE, types=["now"])
    assert await store.prune(None) == 0 and await store.prune(EVERYTHING) == 0
    assert await exists(store, pending) and await exists(store, running)


async def test_expired_jobs_go_in_batches(store: Store) -> None:
    ids = [s.job.id for s in await store.submit_many([NewJob("echo", result_ttl=0)] * 7)]
    await run(store)
    assert await store.prune(None, batch=2) == 7
    assert [await exists(store, i) for i in ids] == [False] * 7


async def test_a_parent_with_result_ttl_0_stays_until_its_dependent_has_run(
    store: Store,
) -> None:
    parent = await submit(store, "parent", result_ttl=0)
    child = await submit(store, "child", after=(parent,), result_ttl=0)
    await run(store, "parent")
    assert (await store.get(child)).state is State.PENDING
    assert await store.prune(None) == 0  # the child may still read the parent's result
    assert await store.prune(EVERYTHING) == 0
    await run(store, "child")
    assert await store.prune(None) == 2
    assert not await exists(store, parent) and not await exists(store, child)


@pytest.mark.parametrize("ttl", [0, 0.25, 86400, 315360000])
async def test_result_ttl_bounds_are_accepted(store: Store, ttl: float) -> None:
    assert (await store.get(await submit(store, result_ttl=ttl))).result_ttl == float(ttl)
