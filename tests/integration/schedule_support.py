"""What the schedule tests share: a configuration file of schedules, the jobs a schedule made
and the ticks the store recorded for them, the one-job-per-tick check, and the schedule
counters of the nodes' metrics endpoints."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import yaml
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from jobd.domain import Job
from jobd.store import JobFilter, Store
from tests.eventually import wait_for

if TYPE_CHECKING:  # the conftest imports this module
    from .conftest import Daemon

METRICS_TOKEN = "schedule-metrics-token"
#: The settings that give a node an HTTP shim on a free port, for its /metrics.
WITH_METRICS = {"JOBD_HTTP_LISTEN": "127.0.0.1:0", "JOBD_HTTP_TOKENS": METRICS_TOKEN}
#: The schedules' counters (jobd/supervisor/schedules.py), as the endpoint names them.
ENQUEUED = "jobd_schedule_ticks_enqueued_total"
MISSED = "jobd_schedule_ticks_missed_total"
SKIPPED_OVERLAP = "jobd_schedule_ticks_skipped_overlap_total"


def write_schedules(path: Path, schedules: Mapping[str, Mapping[str, Any]]) -> Path:
    """A configuration file whose `schedules:` section is `schedules`."""
    path.write_text(yaml.safe_dump({"schedules": {k: dict(v) for k, v in schedules.items()}}))
    return path


async def jobs_of(store: Store, schedule: str) -> list[Job]:
    """Every job the schedule made, pending or finished, oldest tick first."""
    page = await store.list(JobFilter(schedule=schedule), limit=1000)
    return sorted(page.jobs, key=lambda job: job.run_at)


@dataclass(frozen=True)
class History:
    """The ticks the store recorded (its schedule_runs table): the tick that created each job.
    A job's run_at is its tick only until a retry moves it (a lease recovered from a killed
    node, a failure's backoff), so the tests read the ticks here."""

    url: str
    schema: str

    async def ticks_of_jobs(self, schedule: str) -> dict[int, datetime]:
        """Job id -> the tick that created it."""
        query = sql.SQL(
            "SELECT job_id, tick FROM {}.schedule_runs WHERE name = %s AND kind = 'tick'"
        ).format(sql.Identifier(self.schema))
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            cursor = await conn.execute(query, [schedule])
            return {job_id: tick for job_id, tick in await cursor.fetchall()}

    async def ticks(self, schedule: str) -> list[datetime]:
        return sorted((await self.ticks_of_jobs(schedule)).values())


def assert_one_job_per_tick(ticks: list[datetime], every: float = 1.0) -> None:
    assert len(ticks) == len(set(ticks)), f"a tick got two jobs: {ticks}"
    step = timedelta(seconds=every)
    gaps = [b for a, b in itertools.pairwise(ticks) if b - a != step]
    assert not gaps, f"ticks without a job before {gaps}"


def metrics_address(node: Daemon) -> str:
    """Where the node's HTTP shim (started with WITH_METRICS) listens, once it does."""
    event = wait_for(lambda: node.event("http shim listening"), what=f"{node.name}'s HTTP shim")
    return str(event["listen"])


def scrape(address: str) -> dict[tuple[str, str], float]:
    """The node's schedule counters: (sample name, schedule) -> value."""
    request = urllib.request.Request(
        f"http://{address}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels["schedule"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("jobd_schedule_")
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def fleet_counters(addresses: Iterable[str]) -> dict[tuple[str, str], float]:
    """The schedule counters summed over the nodes (each counts what it did itself)."""
    total: dict[tuple[str, str], float] = {}
    for address in addresses:
        for key, value in scrape(address).items():
            total[key] = total.get(key, 0.0) + value
    return total


def logged_missed(nodes: Iterable[Daemon], schedule: str) -> int:
    """The missed ticks the nodes' current runs logged for `schedule`."""
    return sum(
        int(event["count"])
        for node in nodes
        for event in node.events()
        if event.get("message") == "schedule ticks missed" and event.get("schedule") == schedule
    )
