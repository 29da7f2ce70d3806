"""Catch-up and overlap through real `jobd run` nodes on PostgreSQL, with `every: 1s` schedules.

After every node was down for longer than ON_TIME, the first node back enqueues, in one
transaction, the ticks its schedules' `catch_up` policies call for: the on-time ticks (at most
ON_TIME seconds old, enqueued whatever the policy) and, before them, none (`skip`), the latest
missed one (`once`) or every missed one within `catch_up_window` (`all`, at most
CATCH_UP_ALL_MAX).  The ticks in between have no job and are counted as missed, in the metrics
and in the log.  The database's clock is never on a whole second, so exactly int(ON_TIME)
ticks are on time.

`overlap: skip` with a job longer than the interval: a new run only once the previous one has
finished, and the ticks passed over are counted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from jobd.domain import Job, State
from jobd.schedules import parse_schedule
from jobd.schedules.catchup import CATCH_UP_ALL_MAX, ON_TIME
from jobd.store import Store

from .conftest import Daemon, eventually
from .schedule_support import (
    ENQUEUED,
    MISSED,
    SKIPPED_OVERLAP,
    WITH_METRICS,
    History,
    assert_one_job_per_tick,
    fleet_counters,
    jobs_of,
    logged_missed,
    metrics_address,
    write_schedules,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SECOND = timedelta(seconds=1)
ON_TIME_TICKS = int(ON_TIME)
#: `all`'s window: longer than ON_TIME, so some missed ticks are within it, and shorter than
#: the outage, so some are not.
WINDOW = int(ON_TIME) + 2
#: Seconds from the last tick before the outage to the restart: past the window.
OUTAGE = WINDOW + 2

#: Each policy, and how many missed ticks it enqueues after the outage.
POLICIES = {
    "catchup-skip": ({"catch_up": "skip"}, 0),
    "catchup-once": ({"catch_up": "once"}, 1),
    "catchup-all": ({"catch_up": "all", "catch_up_window": f"{WINDOW}s"}, WINDOW - ON_TIME_TICKS),
}


def every_second(type: str = "noop", **fields: object) -> dict[str, object]:
    return {"every": "1s", "type": type, **fields}


def start_fleet(make_daemon: Callable[..., Daemon], config: Path, names: str) -> list[Daemon]:
    return [make_daemon(name, JOBD_CONFIG=str(config), **WITH_METRICS).start() for name in names]


@dataclass(frozen=True)
class Snapshot:
    """The fleet's schedule counters, and each schedule's jobs and last tick settled."""

    counters: dict[tuple[str, str], float]
    jobs: dict[str, list[Job]]
    last_tick: dict[str, datetime | None]

    def count(self, metric: str, schedule: str) -> float:
        return self.counters.get((metric, schedule), 0.0)


async def settled_snapshot(
    store: Store,
    nodes: Iterable[Daemon],
    schedules: Iterable[str],
    holds: Callable[[Snapshot], bool] = lambda _: True,
    after: Mapping[str, datetime | None] | None = None,
) -> Snapshot:
    """A snapshot taken while no tick changed it: a node moves its counters just after a
    tick's transaction commits, so the counters are read before and after the database, until
    they agree with each other, with the jobs the nodes made (those of ticks after `after`,
    the last ticks before the nodes started), and satisfy `holds`."""
    addresses = [metrics_address(node) for node in nodes]
    names = list(schedules)

    def made(jobs: list[Job], name: str) -> int:
        since = (after or {}).get(name)
        return sum(1 for job in jobs if since is None or job.run_at > since)

    async def agreeing() -> Snapshot | None:
        before = fleet_counters(addresses)
        jobs = {name: await jobs_of(store, name) for name in names}
        last = {record.name: record.last_tick for record in await store.schedule_records()}
        now = Snapshot(fleet_counters(addresses), jobs, last)
        enqueued = all(now.count(ENQUEUED, name) == made(jobs[name], name) for name in names)
        return now if before == now.counters and enqueued and holds(now) else None

    return await eventually(agreeing, 20, "the counters to agree with the jobs")


async def test_each_catch_up_policy_after_every_node_was_down(
    make_daemon, pg_store: Store, history: History, tmp_path: Path
) -> None:
    config = write_schedules(
        tmp_path / "catchup.yaml",
        {name: every_second(**fields) for name, (fields, _) in POLICIES.items()},
    )
    nodes = start_fleet(make_daemon, config, "ab")

    async def every_schedule_ran() -> bool:
        return all([await jobs_of(pg_store, name) for name in POLICIES])

    await eventually(every_schedule_ran, 30, "a job of each schedule")
    for node in nodes:
        assert node.stop() == 0
    last = {record.name: record.last_tick for record in await pg_store.schedule_records()}
    before = {name: len(await jobs_of(pg_store, name)) for name in POLICIES}

    # The outage: every node down past the window of `all`.
    latest = max(tick for tick in last.values() if tick is not None)
    await asyncio.sleep(max(latest.timestamp() + OUTAGE - time.time(), 0.0))
    for node in nodes:
        node.start()

    async def on_schedule_again() -> bool:
        # The catch-up, then two ticks on schedule.
        return all(
            [
                len(await jobs_of(pg_store, name)) >= before[name] + ON_TIME_TICKS + caught + 2
                for name, (_, caught) in POLICIES.items()
            ]
        )

    await eventually(on_schedule_again, 30, "the catch-up and two ticks on schedule")
    snapshot = await settled_snapshot(pg_store, nodes, POLICIES, after=last)

    for name, (fields, caught) in POLICIES.items():
        tick = await history.ticks_of_jobs(name)
        since = [job for job in snapshot.jobs[name] if tick[job.id] > last[name]]
        assert [job.schedule for job in since] == [name] * len(since)
        assert [job.run_at for job in since] == [tick[job.id] for job in since]
        assert_one_job_per_tick([job.run_at for job in since])
        # The first node back made the catch-up in one transaction.
        batch = [job for job in since if job.created_at == since[0].created_at]
        assert len(batch) == ON_TIME_TICKS + caught, (name, [job.run_at for job in batch])
        assert all(
            job.created_at - job.run_at <= timedelta(seconds=ON_TIME) for job in batch[caught:]
        )
        missed = round((since[0].run_at - last[name]) / SECOND) - 1
        assert missed >= OUTAGE - WINDOW, f"{name}: only {missed} missed ticks"
        assert snapshot.count(MISSED, name) == missed, name
        assert snapshot.count(SKIPPED_OVERLAP, name) == 0, name
        assert logged_missed(nodes, name) == missed, name
        if fields.get("catch_up") == "all":
            assert batch[0].created_at - batch[0].run_at <= timedelta(seconds=WINDOW)


async def test_catch_up_all_enqueues_at_most_the_newest_hundred_missed_ticks(
    make_daemon, pg_store: Store, pg_url: str, pg_schema: str, tmp_path: Path
) -> None:
    name, fields = "catchup-capped", every_second(catch_up="all", catch_up_window="1d")
    # The fleet's record of a schedule last ticked long ago: a first ask records it, and the
    # record is moved back as if every node had been down since.
    await pg_store.enqueue_ticks(parse_schedule(name, fields))
    down = CATCH_UP_ALL_MAX + 50
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL(
                "UPDATE {}.schedules SET last_tick = last_tick - %s * interval '1 second'"
            ).format(sql.Identifier(pg_schema)),
            [down],
        )
    (record,) = await pg_store.schedule_records()
    assert record.last_tick is not None
    config = write_schedules(tmp_path / "capped.yaml", {name: fields})
    (node,) = start_fleet(make_daemon, config, "a")

    batch_size = CATCH_UP_ALL_MAX + ON_TIME_TICKS
    jobs = await eventually(
        lambda: _at_least(pg_store, name, batch_size), 30, "the catch-up of a long outage"
    )
    batch = [job for job in jobs if job.created_at == jobs[0].created_at]
    assert len(batch) == batch_size
    assert_one_job_per_tick([job.run_at for job in batch])
    missed = round((batch[0].run_at - record.last_tick) / SECOND) - 1
    assert missed >= down - batch_size
    snapshot = await settled_snapshot(pg_store, [node], [name])
    assert snapshot.count(MISSED, name) == missed
    assert logged_missed([node], name) == missed


async def _at_least(store: Store, name: str, count: int) -> list[Job]:
    jobs = await jobs_of(store, name)
    return jobs if len(jobs) >= count else []


async def test_overlap_skip_starts_no_run_while_the_previous_one_runs(
    make_daemon, pg_store: Store, history: History, tmp_path: Path
) -> None:
    name, runs = "one-at-a-time", 3
    job_seconds = 1.5  # longer than the interval: a tick or two fall in each run
    config = write_schedules(
        tmp_path / "overlap.yaml",
        {name: every_second("sleep", payload={"seconds": job_seconds}, overlap="skip")},
    )
    nodes = start_fleet(make_daemon, config, "ab")

    async def finished_runs() -> list[Job]:
        jobs = await jobs_of(pg_store, name)
        done = [job for job in jobs if job.state is State.COMPLETED]
        return jobs if len(done) >= runs else []

    await eventually(finished_runs, 60, f"{runs} runs of the schedule")

    def ticks_since_first_run(now: Snapshot) -> int:
        # Every tick from the first run's to the last one settled got a job or was skipped.
        first, last = now.jobs[name][0].run_at, now.last_tick[name]
        return 0 if last is None else round((last - first) / SECOND) + 1

    def accounted(now: Snapshot) -> bool:
        ran_or_skipped = len(now.jobs[name]) + now.count(SKIPPED_OVERLAP, name)
        return ran_or_skipped == ticks_since_first_run(now)

    snapshot = await settled_snapshot(pg_store, nodes, [name], accounted)
    jobs = snapshot.jobs[name]
    tick = await history.ticks_of_jobs(name)
    assert [job.run_at for job in jobs] == [tick[job.id] for job in jobs], "a run was retried"
    assert snapshot.count(SKIPPED_OVERLAP, name) >= len(jobs) - 1
    assert snapshot.count(MISSED, name) == 0
    for previous, following in itertools.pairwise(jobs):
        assert previous.finished_at is not None, "a run began before the previous one ended"
        assert following.created_at >= previous.finished_at
        assert following.run_at - previous.run_at >= timedelta(seconds=job_seconds)
