"""Schedules on PostgreSQL with three real `jobd run` nodes and `every: 1s`: exactly one job per
tick, no gap, also while one node is SIGKILLed and restarted; a pause stops every node."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobd.store import Store

from .conftest import eventually
from .schedule_support import History, assert_one_job_per_tick, jobs_of, write_schedules

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCHEDULE = "every-second"
TICKS = 30


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_schedules(tmp_path / "schedules.yaml", {SCHEDULE: {"every": "1s", "type": "noop"}})


async def test_three_nodes_make_one_job_per_tick_even_when_one_is_killed(
    make_daemon, pg_store: Store, history: History, config_file: Path
) -> None:
    nodes = [make_daemon(name, JOBD_CONFIG=str(config_file)).start() for name in "abc"]

    async def at_least(count: int) -> list[datetime]:
        ticks = await history.ticks(SCHEDULE)
        return ticks if len(ticks) >= count else []

    await eventually(lambda: at_least(TICKS // 3), 30, "ten ticks")
    nodes[1].kill()
    await eventually(lambda: at_least(TICKS // 2), 30, "ticks with a node down")
    nodes[1].start()
    ticks = await eventually(lambda: at_least(TICKS), 60, f"{TICKS} ticks")
    assert_one_job_per_tick(ticks)
    # Each job is a tick's (the one a killed node held was recovered: its run_at moved).
    before = set(await history.ticks_of_jobs(SCHEDULE))
    jobs = {job.id for job in await jobs_of(pg_store, SCHEDULE)}
    assert before <= jobs <= set(await history.ticks_of_jobs(SCHEDULE))


async def test_a_pause_stops_every_node_and_a_resume_restarts_them(
    make_daemon, pg_store: Store, history: History, config_file: Path
) -> None:
    for name in "ab":
        make_daemon(name, JOBD_CONFIG=str(config_file)).start()
    await eventually(lambda: history.ticks(SCHEDULE), 30, "a first tick")
    paused = await pg_store.set_schedule_paused(SCHEDULE, True)
    assert paused.paused

    async def settled_past(after: datetime) -> bool:
        (record,) = await pg_store.schedule_records()
        return record.last_tick is not None and record.last_tick >= after

    # A node may be inside its transaction as the pause commits: one more tick at most.
    before = await history.ticks(SCHEDULE)
    start = (await pg_store.schedule_records())[0].last_tick
    assert start is not None
    await eventually(lambda: settled_past(start + timedelta(seconds=4)), 30, "paused ticks")
    during = await history.ticks(SCHEDULE)
    assert len(during) <= len(before) + 1, "a paused schedule kept making jobs"

    await pg_store.set_schedule_paused(SCHEDULE, False)

    async def resumed() -> bool:
        return len(await history.ticks(SCHEDULE)) >= len(during) + 2

    await eventually(resumed, 30, "jobs again after the resume")
    assert_one_job_per_tick([tick for tick in await history.ticks(SCHEDULE) if tick > during[-1]])
