"""The store contract for schedules, on memory, SQLite and PostgreSQL alike: one transaction
records a tick and inserts its job, so a tick gets one job however many callers ask at once;
pause, trigger, overlap and the `schedule` field of jobs.

The stores read their own clock (the database's), so the tests wait for real ticks of
`every: 1s` schedules, polling with a deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial

from jobd.domain import NewJob, State
from jobd.schedules import Schedule, parse_schedule
from jobd.store import JobFilter, Outcome, OutcomeKind, Store
from tests.eventually import eventually as poll_until

eventually = partial(poll_until, timeout=10.0)
NODE = "node-a"


def every_second(name: str = "tick", **fields: object) -> Schedule:
    return parse_schedule(name, {"every": "1s", "type": "echo", "queue": "periodic", **fields})


async def next_run(store: Store, schedule: Schedule) -> tuple[object, ...]:
    """Ask until a tick's job was created; the jobs of that call."""

    async def ask() -> tuple[object, ...]:
        return (await store.enqueue_ticks(schedule)).jobs

    return await eventually(ask, what=f"a job of schedule {schedule.name}")


async def test_the_first_call_starts_at_the_next_tick_and_each_tick_gets_one_job(
    store: Store,
) -> None:
    schedule = every_second()
    first = await store.enqueue_ticks(schedule)
    assert (first.jobs, first.missed, first.paused) == ((), 0, False)

    (job,) = await next_run(store, schedule)
    assert job.schedule == "tick" and job.type == "echo" and job.queue == "periodic"
    assert job.run_at.microsecond == 0 and job.state is State.PENDING
    again = await store.enqueue_ticks(schedule)
    assert all(other.run_at > job.run_at for other in again.jobs)
    assert await store.get(job.id) == job


async def test_concurrent_callers_create_one_job_per_tick(store: Store) -> None:
    schedule = every_second("busy")
    await store.enqueue_ticks(schedule)
    created: list[object] = []

    async def three_ticks() -> bool:
        results = await asyncio.gather(*(store.enqueue_ticks(schedule) for _ in range(8)))
        created.extend(job for result in results for job in result.jobs)
        return len(created) >= 3

    await eventually(three_ticks, what="three ticks")
    ticks = [job.run_at for job in created]  # type: ignore[attr-defined]
    assert len(ticks) == len(set(ticks)), "a tick got two jobs"
    span = (max(ticks) - min(ticks)) / timedelta(seconds=1)
    assert span == len(ticks) - 1, "a tick between the first and the last got no job"


async def test_a_paused_schedule_creates_nothing_and_resumes_at_its_next_tick(
    store: Store,
) -> None:
    schedule = every_second("quiet")
    await store.enqueue_ticks(schedule)
    record = await store.set_schedule_paused("quiet", True)
    assert record.paused and record.name == "quiet"
    paused_at = (await store.schedule_records())[0].last_tick

    async def past_a_tick() -> bool:
        result = await store.enqueue_ticks(schedule)
        assert result.jobs == () and result.paused
        (row,) = await store.schedule_records()
        return row.last_tick is not None and paused_at is not None and row.last_tick > paused_at

    await eventually(past_a_tick, what="a tick while paused")
    assert not (await store.set_schedule_paused("quiet", False)).paused
    (job,) = await next_run(store, schedule)
    (row,) = await store.schedule_records()
    assert row.last_job_id == job.id and row.last_job_state is State.PENDING
    assert not row.paused and row.definition_hash == schedule.definition_hash


async def test_a_trigger_runs_once_now_and_is_the_last_job(store: Store) -> None:
    schedule = every_second("manual", catch_up="skip")
    job = await store.trigger_schedule(schedule)
    assert job.schedule == "manual" and job.state is State.PENDING
    (row,) = await store.schedule_records()
    assert (row.name, row.last_job_id, row.last_job_state) == ("manual", job.id, State.PENDING)


async def test_overlap_skip_makes_no_new_run_while_the_previous_one_is_pending(
    store: Store,
) -> None:
    schedule = every_second("single", overlap="skip")
    await store.enqueue_ticks(schedule)
    (job,) = await next_run(store, schedule)

    async def skipped() -> int:
        result = await store.enqueue_ticks(schedule)
        assert result.jobs == ()
        return result.overlap_skipped

    assert await eventually(skipped, what="a tick skipped for overlap") >= 1
    (claimed,) = await store.claim(NODE, 1, lease=30.0, queues=["periodic"])
    done = Outcome(job.id, claimed.attempts, OutcomeKind.COMPLETED, token=claimed.lease_token)
    assert await store.finish(NODE, [done]) == {job.id: State.COMPLETED}
    finished = await store.get(job.id)
    assert finished.schedule == "single"
    (later,) = await next_run(store, schedule)
    assert later.run_at > job.run_at


async def test_list_filters_by_schedule(store: Store) -> None:
    a, b = every_second("a"), every_second("b")
    job_a = await store.trigger_schedule(a)
    job_b = await store.trigger_schedule(b)
    other = (await store.submit(NewJob("echo"))).job
    assert other.schedule is None
    listed = await store.list(JobFilter(schedule="a"))
    assert [job.id for job in listed.jobs] == [job_a.id]
    assert [job.id for job in (await store.list(JobFilter(schedule="b"))).jobs] == [job_b.id]


async def test_a_node_with_another_definition_is_told_whose_hash_it_met(store: Store) -> None:
    old, new = every_second("changing"), every_second("changing", priority=5)
    await store.enqueue_ticks(old)
    result = await store.enqueue_ticks(new)
    assert result.other_definition == old.definition_hash
    assert (await store.enqueue_ticks(new)).other_definition is None


async def test_a_submitted_job_keeps_its_schedule_on_every_store(store: Store) -> None:
    """A plain submit of a NewJob naming a schedule stores the name, as a tick's insert does
    (jobs moved from elsewhere, a replayed tick), and `list` finds it by it."""
    one = (await store.submit(NewJob("echo", schedule="nightly"))).job
    (many,) = await store.submit_many([NewJob("echo", schedule="nightly")])
    plain = (await store.submit(NewJob("echo"))).job
    assert (one.schedule, many.job.schedule, plain.schedule) == ("nightly", "nightly", None)
    assert (await store.get(one.id)).schedule == "nightly"
    page = await store.list(JobFilter(schedule="nightly"))
    assert sorted(job.id for job in page.jobs) == sorted([one.id, many.job.id])
