"""Operating schedules through real `jobd run` nodes on PostgreSQL: jobctl pauses a schedule
(no new ticks, on every node, across a restart), resumes and triggers it, and lists its jobs;
the HTTP shim does the same; two nodes defining one schedule differently say so in health."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from control_harness import Daemon, run_jobctl, running_daemon

from .conftest import wait_for
from .test_http import start_shim

pytestmark = pytest.mark.postgres

PULSE = "pulse"


def config(directory: Path, priority: int = 0) -> dict[str, str]:
    path = directory / f"schedules-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(
        f"schedules:\n  {PULSE}:\n    every: 1s\n    type: echo\n    priority: {priority}\n"
    )
    return {"JOBD_CONFIG": str(path)}


@pytest.fixture
def schema() -> str:
    return f"jobd_sched_ops_{uuid.uuid4().hex[:8]}"


def jobctl_json(daemon: Daemon, *args: str) -> Any:
    result = run_jobctl(daemon.socket, "--json", *args)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def pulse(daemon: Daemon) -> dict[str, Any]:
    (view,) = [v for v in jobctl_json(daemon, "schedules") if v["name"] == PULSE]
    return view


def ticks(daemon: Daemon) -> list[datetime]:
    jobs = jobctl_json(daemon, "list", "--schedule", PULSE, "--all")["jobs"]
    assert all(job["schedule"] == PULSE for job in jobs)
    return sorted(datetime.fromisoformat(job["run_at"]) for job in jobs)


def settled_past(daemon: Daemon, after: datetime) -> bool:
    last = pulse(daemon)["last_tick"]
    return last is not None and datetime.fromisoformat(last) >= after


@pytest.fixture
def node(pg_url: str, schema: str, tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(pg_url, schema, workers=1, env=config(tmp_path)) as daemon:
        yield daemon


def test_jobctl_pauses_resumes_and_triggers_a_schedule(
    pg_url: str, schema: str, tmp_path: Path, node: Daemon
) -> None:
    view = pulse(node)
    assert (view["defined_here"], view["spec"], view["paused"]) == (True, "every 1s", False)
    wait_for(lambda: ticks(node), 30, what="a first tick")

    assert "paused" in run_jobctl(node.socket, "schedules", "pause", PULSE).stdout
    assert pulse(node)["paused"] is True
    # A node may be inside its tick's transaction as the pause commits: one more job at most.
    before = ticks(node)
    paused_at = datetime.fromisoformat(pulse(node)["last_tick"])
    wait_for(lambda: settled_past(node, paused_at + timedelta(seconds=3)), 30, "paused ticks")
    during = ticks(node)
    assert len(during) <= len(before) + 1, "a paused schedule kept making jobs"

    table = run_jobctl(node.socket, "schedules").stdout
    assert "NEXT TICK" in table and "every 1s" in table and "yes" in table

    triggered = jobctl_json(node, "schedules", "trigger", PULSE)  # also while paused
    assert (triggered["schedule"], triggered["type"]) == (PULSE, "echo")
    assert pulse(node)["last_job_id"] == triggered["id"]

    assert "resumed" in run_jobctl(node.socket, "schedules", "resume", PULSE).stdout
    wait_for(lambda: len(ticks(node)) >= len(during) + 3, 30, what="ticks after the resume")


def test_a_pause_survives_a_restart(pg_url: str, schema: str, tmp_path: Path) -> None:
    env = config(tmp_path)
    with running_daemon(pg_url, schema, workers=1, env=env) as daemon:
        jobctl_json(daemon, "schedules", "pause", PULSE)
        # A tick may have passed between the start and the pause (a loaded machine): those
        # jobs are the schedule's before its pause, and no later one may join them.
        before = ticks(daemon)
    with running_daemon(pg_url, schema, workers=1, env=env) as daemon:
        assert pulse(daemon)["paused"] is True
        started = datetime.fromisoformat(pulse(daemon)["last_tick"] or "2000-01-01T00:00:00+00:00")
        wait_for(lambda: settled_past(daemon, started + timedelta(seconds=2)), 30, "ticks")
        assert ticks(daemon) == before


def test_an_unknown_schedule_is_exit_2_naming_it(node: Daemon) -> None:
    for action in ("pause", "resume", "trigger"):
        result = run_jobctl(node.socket, "schedules", action, "plse")
        assert result.returncode == 2, result.stderr
        assert "unknown schedule 'plse'" in result.stderr and "'pulse'" in result.stderr


def test_schedules_over_http(node: Daemon) -> None:
    shim = start_shim(node, name="schedules")
    try:
        listed = requests.get(f"{shim.url}/schedules").json()["schedules"]
        assert [view["name"] for view in listed] == [PULSE]
        paused = requests.post(f"{shim.url}/schedules/{PULSE}/pause")
        assert (paused.status_code, paused.json()["paused"]) == (200, True)
        job = requests.post(f"{shim.url}/schedules/{PULSE}/trigger")
        assert job.status_code == 201 and job.headers["Location"] == f"/jobs/{job.json()['id']}"
        mine = requests.get(f"{shim.url}/jobs", params={"schedule": PULSE}).json()["jobs"]
        assert job.json()["id"] in [j["id"] for j in mine]
        resumed = requests.post(f"{shim.url}/schedules/{PULSE}/resume")
        assert (resumed.status_code, resumed.json()["paused"]) == (200, False)
        assert requests.post(f"{shim.url}/schedules/plse/pause").status_code == 404
    finally:
        assert shim.stop() == 0, shim.log()[-5000:]


def test_nodes_defining_a_schedule_differently_warn_in_health(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    with (
        running_daemon(pg_url, schema, workers=1, env=config(tmp_path, priority=0)) as a,
        running_daemon(pg_url, schema, workers=1, env=config(tmp_path, priority=5)) as b,
    ):

        def warned() -> list[str]:
            found = []
            for daemon in (a, b):
                health = jobctl_json(daemon, "health")
                found += [w for w in health.get("warnings", []) if PULSE in w]
            return found

        (warning, *_) = wait_for(warned, 30, what="a definition-mismatch warning")
        assert "defined differently on another node" in warning
        assert pulse(a)["definition"] != pulse(b)["definition"]
        shown = run_jobctl(a.socket, "health").stdout + run_jobctl(b.socket, "health").stdout
        assert "defined differently" in shown
        logs = a.log() + b.log()
        assert logs.count("schedule defined differently on another node") <= 2  # once a node
