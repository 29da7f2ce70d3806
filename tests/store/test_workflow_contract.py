"""Workflows, the contract every store keeps (memory, SQLite, PostgreSQL): jobs submitted
`after` others wait, move on when their parents end, follow on_parent_failure, and come back
on a retry of the parent that failed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobd.domain import PARENT_FAILED, BatchRef, ErrorInfo, NewJob, ParentFailure, State
from jobd.errors import InvalidParams, NotFound
from jobd.store import JobFilter, Outcome, OutcomeKind, Store
from jobd.store.queues import BulkAction

NODE = "node-a"
LEASE = 30.0


def spec(type_: str, *after: int | BatchRef, **kw: object) -> NewJob:
    return NewJob(type=type_, after=tuple(after), **kw)  # type: ignore[arg-type]


async def submit(store: Store, type_: str, *after: int | BatchRef, **kw: object) -> int:
    return (await store.submit(spec(type_, *after, **kw))).job.id


async def state(store: Store, job_id: int) -> State:
    return (await store.get(job_id)).state


async def run(store: Store, type_: str, kind: OutcomeKind = OutcomeKind.COMPLETED, **kw: object):
    """Claim the one job of `type_` and end its attempt with `kind`."""
    (job,) = await store.claim(NODE, 10, lease=LEASE, types=[type_])
    error = ErrorInfo("Boom", "failed") if kind is OutcomeKind.FAILED else None
    outcome = Outcome(
        job.id, job.attempts, kind, result={"from": type_}, error=error,
        token=job.lease_token, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert job.id in await store.finish(NODE, [outcome])
    return job


async def test_a_chain_runs_one_step_after_the_other(store: Store) -> None:
    a = await submit(store, "a")
    b = await submit(store, "b", a)
    c = await submit(store, "c", b)
    assert [await state(store, i) for i in (a, b, c)] == [
        State.PENDING, State.WAITING, State.WAITING,
    ]  # fmt: skip
    assert await store.claim(NODE, 10, lease=LEASE, types=["b", "c"]) == []
    await run(store, "a")
    assert [await state(store, i) for i in (b, c)] == [State.PENDING, State.WAITING]
    await run(store, "b")
    assert await state(store, c) is State.PENDING
    await run(store, "c")
    job = await store.get(c)
    assert job.state is State.COMPLETED and job.parents == (b,)
    assert (await store.links(a)).children == [b] and (await store.links(c)).children == []


async def test_a_fan_in_waits_for_every_parent(store: Store) -> None:
    parents = [await submit(store, f"p{i}") for i in range(3)]
    child = await submit(store, "child", *parents)
    assert (await store.get(child)).parents == tuple(parents)
    assert (await store.links(child)).unfinished_parents == parents
    for i in range(3):
        assert await state(store, child) is State.WAITING
        await run(store, f"p{i}")
    assert await state(store, child) is State.PENDING


async def test_after_a_parent_that_ended_already(store: Store) -> None:
    done = await submit(store, "done")
    await run(store, "done")
    failed = await submit(store, "failed", max_attempts=1)
    await run(store, "failed", OutcomeKind.FAILED)
    assert await state(store, await submit(store, "x", done)) is State.PENDING
    canceled = await store.get(await submit(store, "y", done, failed))
    assert canceled.state is State.CANCELED and canceled.finished_at is not None
    assert canceled.last_error is not None and canceled.last_error.type == PARENT_FAILED
    assert str(failed) in canceled.last_error.message
    run_anyway = await submit(store, "z", failed, on_parent_failure=ParentFailure.RUN)
    assert await state(store, run_anyway) is State.PENDING


async def test_an_unknown_parent_is_refused_and_nothing_is_written(store: Store) -> None:
    parent = await submit(store, "a")
    with pytest.raises(InvalidParams) as info:
        await store.submit_many([spec("x"), spec("y", parent, 987654)])
    assert str(info.value).startswith("jobs[1].after[1]: job 987654 not found")
    assert [j.id for j in (await store.list()).jobs] == [parent]


async def test_a_batch_names_its_own_jobs_and_refuses_a_cycle(store: Store) -> None:
    out = await store.submit_many(
        [spec("sink", BatchRef(1), BatchRef(2)), spec("left", BatchRef(3)),
         spec("right", BatchRef(3)), spec("root")]
    )  # fmt: skip
    sink, left, right, root = (s.job for s in out)
    assert sink.parents == tuple(sorted((left.id, right.id)))
    assert (left.parents, root.state, left.state) == ((root.id,), State.PENDING, State.WAITING)
    assert (await store.links(root.id)).children == sorted([left.id, right.id])
    before = len((await store.list()).jobs)
    with pytest.raises(InvalidParams) as info:
        await store.submit_many([spec("a", BatchRef(1)), spec("b", BatchRef(0))])
    assert "cycle" in str(info.value) and str(info.value).startswith("jobs[")
    with pytest.raises(InvalidParams, match=r"jobs\[0\]\.after\[0\]"):
        await store.submit_many([spec("a", BatchRef(5)), spec("b")])
    assert len((await store.list()).jobs) == before


async def test_a_key_already_taken_in_a_batch_links_to_the_job_that_holds_it(
    store: Store,
) -> None:
    held = await submit(store, "held", idempotency_key="k")
    out = await store.submit_many([spec("a", idempotency_key="k"), spec("b", BatchRef(0))])
    assert not out[0].created and out[0].job.id == held
    assert out[1].job.parents == (held,) and out[1].job.state is State.WAITING


async def test_a_failed_parent_cancels_dependents_transitively(store: Store) -> None:
    root = await submit(store, "root", max_attempts=1)
    child = await submit(store, "child", root)
    grandchild = await submit(store, "grandchild", child)
    finally_step = await submit(store, "finally", child, on_parent_failure=ParentFailure.RUN)
    await run(store, "root", OutcomeKind.FAILED)
    for job_id, parent in ((child, root), (grandchild, child)):
        job = await store.get(job_id)
        assert job.state is State.CANCELED, job_id
        assert job.last_error is not None and job.last_error.type == PARENT_FAILED
        assert job.last_error.message.startswith(f"parent job {parent} ")
    assert await state(store, finally_step) is State.PENDING


async def test_a_failure_through_the_retry_path_propagates(store: Store) -> None:
    """A failed attempt asking for a retry with no attempt left ends the job failed."""
    root = await submit(store, "root", max_attempts=1)
    child = await submit(store, "child", root)
    now = (await store.get(root)).created_at
    await run(store, "root", OutcomeKind.FAILED, retry_at=now + timedelta(seconds=1))
    assert await state(store, root) is State.FAILED
    assert await state(store, child) is State.CANCELED


async def test_a_lease_recovered_with_no_attempt_left_propagates(store: Store) -> None:
    root = await submit(store, "root", max_attempts=1)
    child = await submit(store, "child", root, on_parent_failure=ParentFailure.RUN)
    await store.claim(NODE, 1, lease=0.0, types=["root"])
    recovered = await store.recover_expired()
    assert [j.state for j in recovered] == [State.FAILED]
    assert await state(store, child) is State.PENDING


async def test_cancel_of_a_root_cancels_its_waiting_descendants(store: Store) -> None:
    root = await submit(store, "root")
    child = await submit(store, "child", root)
    grandchild = await submit(store, "grandchild", child)
    await store.request_cancel(root)
    assert await state(store, child) is State.CANCELED
    assert await state(store, grandchild) is State.CANCELED
    waiting = await submit(store, "other", await submit(store, "other_root"))
    assert (await store.request_cancel(waiting)).state is State.CANCELED


async def test_retry_of_a_failed_parent_brings_back_what_its_failure_canceled(
    store: Store,
) -> None:
    root = await submit(store, "root", max_attempts=1)
    child = await submit(store, "child", root)
    grandchild = await submit(store, "grandchild", child)
    kept = await submit(store, "kept", root)
    await store.request_cancel(kept)  # canceled by an operator before the root failed
    await run(store, "root", OutcomeKind.FAILED)
    assert await state(store, child) is State.CANCELED
    retried = await store.retry(root)
    assert retried.state is State.PENDING
    assert await state(store, child) is State.WAITING
    assert await state(store, grandchild) is State.WAITING
    assert await state(store, kept) is State.CANCELED
    await run(store, "root")
    await run(store, "child")
    assert await state(store, grandchild) is State.PENDING


async def test_a_run_dependent_waiting_on_a_retried_parent_waits_for_it_again(
    store: Store,
) -> None:
    first = await submit(store, "first", max_attempts=1)
    second = await submit(store, "second")
    child = await submit(store, "child", first, second, on_parent_failure=ParentFailure.RUN)
    await run(store, "first", OutcomeKind.FAILED)
    await store.retry(first)
    await run(store, "second")
    assert await state(store, child) is State.WAITING  # first is pending again
    await run(store, "first")
    assert await state(store, child) is State.PENDING


async def test_operator_retry_of_a_dependent_waits_for_its_unfinished_parents(
    store: Store,
) -> None:
    root = await submit(store, "root")
    child = await submit(store, "child", root)
    await store.request_cancel(child)
    assert (await store.retry(child)).state is State.WAITING
    await run(store, "root")
    assert await state(store, child) is State.PENDING


async def test_parent_results(store: Store) -> None:
    a = await submit(store, "a")
    b = await submit(store, "b")
    child = await submit(store, "child", a, b, on_parent_failure=ParentFailure.RUN)
    await run(store, "a")
    await run(store, "b", OutcomeKind.CANCELED)
    assert await store.parent_results(child) == {a: {"from": "a"}, b: None}
    assert await store.parent_results(a) == {}
    with pytest.raises(NotFound):
        await store.parent_results(987654)


async def test_list_by_workflow_follows_after_both_ways(store: Store) -> None:
    root = await submit(store, "root")
    left = await submit(store, "left", root)
    right = await submit(store, "right", root)
    sink = await submit(store, "sink", left, right)
    await submit(store, "elsewhere")
    for member in (root, right, sink):
        listed = await store.list(JobFilter(workflow=member))
        assert sorted(j.id for j in listed.jobs) == [root, left, right, sink]
    listed = await store.list(JobFilter(workflow=sink, states=(State.WAITING,)))
    assert sorted(j.id for j in listed.jobs) == [left, right, sink]


async def test_prune_keeps_a_parent_while_a_dependent_is_unfinished(store: Store) -> None:
    a = await submit(store, "a")
    b = await submit(store, "b")
    await submit(store, "child", a, b)
    await run(store, "a")
    assert await store.prune(timedelta(seconds=-60)) == 0  # child still waits for b
    await run(store, "b")
    assert await store.prune(timedelta(seconds=-60)) == 0  # child pending: it may read them
    await run(store, "child")
    assert await store.prune(timedelta(seconds=-60)) == 3
    assert (await store.list()).jobs == []


# --- bulk actions (jobd.store.queues) --------------------------------------------------------


async def test_a_bulk_cancel_cancels_what_waits_for_the_jobs_it_cancels(store: Store) -> None:
    root = await submit(store, "root", queue="doomed")
    child = await submit(store, "child", root)
    batch = await store.bulk(BulkAction.CANCEL, JobFilter(queue="doomed"), 0, 100)
    assert [c.id for c in batch.changed] == [root]
    assert await state(store, child) is State.CANCELED


async def test_a_bulk_retry_of_a_parent_and_its_child_keeps_the_order(store: Store) -> None:
    """Retried in one batch with their child: the child waits for both parents again."""
    first = await submit(store, "first", queue="again", max_attempts=1)
    second = await submit(store, "second", queue="again", max_attempts=1)
    child = await submit(store, "child", first, second, queue="again")
    await store.request_cancel(child)  # an operator's cancel, before the parents failed
    await run(store, "first", OutcomeKind.FAILED)
    await run(store, "second", OutcomeKind.FAILED)
    batch = await store.bulk(BulkAction.RETRY, JobFilter(queue="again"), 0, 100)
    states = {c.id: c.state for c in batch.changed}
    assert states == {first: State.PENDING, second: State.PENDING, child: State.WAITING}
    await run(store, "second")
    assert await state(store, child) is State.WAITING
    await run(store, "first")
    assert await state(store, child) is State.PENDING


async def test_a_purge_leaves_a_job_a_dependent_still_needs(store: Store) -> None:
    parent = await submit(store, "parent", queue="old")
    child = await submit(store, "child", parent)
    await run(store, "parent")
    batch = await store.bulk(BulkAction.PURGE, JobFilter(queue="old"), 0, 100)
    assert batch.changed == [] and await state(store, parent) is State.COMPLETED
    await run(store, "child")
    batch = await store.bulk(BulkAction.PURGE, JobFilter(queue="old"), 0, 100)
    assert [c.id for c in batch.changed] == [parent]
    assert (await store.get(child)).state is State.COMPLETED
