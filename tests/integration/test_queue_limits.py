"""Fleet-wide queue limits on PostgreSQL with real `jobd run` nodes (docs/adr/0032): a rate
held across three nodes while nodes leave and join, a global concurrency never exceeded,
and `queue_limit` over the socket, jobctl and HTTP, with its bad input, reset and audit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests

from jobd import Client
from jobd.domain import NewJob, State
from jobd.errors import InvalidParams
from jobd.store import Store

from .conftest import eventually, wait_for
from .test_http import start_shim

pytestmark = pytest.mark.postgres


def gauge(client: Client, name: str, queue: str, value: float) -> bool:
    return f'{name}{{queue="{queue}"}} {value}' in client.metrics()


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "limits.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def db(pg_url: str, pg_schema: str) -> psycopg.Connection:
    conn = psycopg.connect(pg_url, autocommit=True)
    conn.execute(f'SET search_path TO "{pg_schema}"')
    return conn


class RunningSampler:
    """Samples the queue's running count from the database until stopped: the largest seen."""

    def __init__(self, pg_url: str, pg_schema: str, queue: str):
        self.conn = db(pg_url, pg_schema)
        self.queue = queue
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sql = "SELECT count(*) FROM jobs WHERE queue = %s AND state = 'running'"
        while not self._stop.is_set():
            (n,) = self.conn.execute(sql, (self.queue,)).fetchone()  # type: ignore[misc]
            self.samples.append(n)
            time.sleep(0.02)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        self.conn.close()
        return self.samples


@pytest.mark.slow
async def test_a_rate_holds_across_three_nodes_while_nodes_leave_and_join(
    make_daemon, pg_store: Store, pg_url: str, pg_schema: str, tmp_path: Path
) -> None:
    config = config_file(tmp_path, "queues:\n  rated: {rate: 20/s}\n")
    settings = {"JOBD_CONFIG": config, "JOBD_WORKERS": "4"}
    nodes = [make_daemon(f"n{i}", **settings).start() for i in range(3)]
    await pg_store.submit_many([NewJob("noop", queue="rated")] * 1000)
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun > 10, timeout=20, what="10 s of claims")
    nodes[0].stop()  # SIGTERM: it drains and leaves
    make_daemon("late", **settings).start()
    wait_for(lambda: time.monotonic() - begun > 38, timeout=60, what="the run to go on")
    with db(pg_url, pg_schema) as conn:
        (first,) = conn.execute(
            "SELECT min(started_at) FROM all_jobs WHERE queue = 'rated'"
        ).fetchone()  # type: ignore[misc]
        rows = conn.execute(
            "SELECT count(*) FROM all_jobs WHERE queue = 'rated'"
            " AND started_at >= %s + interval '2 s' AND started_at < %s + interval '32 s'",
            (first, first),
        ).fetchone()
    started = rows[0]  # type: ignore[index]
    assert 540 <= started <= 660, f"{started} starts in 30 s at 20/s"


async def test_a_global_concurrency_is_never_exceeded_while_nodes_leave_and_join(
    make_daemon, pg_store: Store, pg_url: str, pg_schema: str
) -> None:
    nodes = [make_daemon(f"n{i}", JOBD_WORKERS="3").start() for i in range(3)]
    with Client(nodes[0].env["JOBD_SOCKET"], timeout=10) as client:
        answer = client.call("queue_limit", {"name": "narrow", "global_concurrency": 3})
    assert answer["queue"]["limits"] == {"global_concurrency": 3}
    assert answer["queue"]["limit_sources"] == {"global_concurrency": "runtime"}
    for node in nodes:  # every node has read it (the notification, or a heartbeat)
        with Client(node.env["JOBD_SOCKET"], timeout=10) as c:
            wait_for(
                lambda c=c: gauge(c, "jobd_queue_global_concurrency", "narrow", 3.0),
                what="the node to see the limit",
            )
    sampler = RunningSampler(pg_url, pg_schema, "narrow")
    try:
        specs = [NewJob("napper", {"seconds": 0.3}, queue="narrow")] * 40
        ids = [s.job.id for s in await pg_store.submit_many(specs)]
        other = [s.job.id for s in await pg_store.submit_many([NewJob("noop")] * 20)]
        wait_for(lambda: max(sampler.samples, default=0) >= 3, what="the queue to fill its room")
        nodes[1].stop()
        make_daemon("late", JOBD_WORKERS="3").start()

        async def done() -> bool:
            return {(await pg_store.get(i)).state for i in ids + other} == {State.COMPLETED}

        await eventually(done, 90, "every job to run")
    finally:
        samples = sampler.stop()
    assert len(samples) > 50 and max(samples) == 3, f"the running count reached {max(samples)}"


async def test_a_global_concurrencys_room_is_taken_again_without_waiting_for_a_heartbeat(
    make_daemon, pg_store: Store
) -> None:
    """A job of a full queue ends on this node: the room it frees is claimed once its end is
    written, not at the next heartbeat (here 30 s, longer than the test's deadline)."""
    settings = {"JOBD_JOBS_HEARTBEAT_SECONDS": "30", "JOBD_JOBS_LEASE_SECONDS": "90"}
    node = make_daemon(JOBD_WORKERS="3", JOBD_JOBS_POLL_INTERVAL="1", **settings).start()
    with Client(node.env["JOBD_SOCKET"], timeout=10) as client:
        client.call("queue_limit", {"name": "one", "global_concurrency": 1})
        wait_for(
            lambda: gauge(client, "jobd_queue_global_concurrency", "one", 1.0),
            what="the node to see the limit",
        )
    specs = [NewJob("napper", {"seconds": 0.2}, queue="one")] * 4
    ids = [s.job.id for s in await pg_store.submit_many(specs)]

    async def done() -> bool:
        return {(await pg_store.get(i)).state for i in ids} == {State.COMPLETED}

    await eventually(done, 20, "the four jobs to run one after another")


def test_bad_limits_are_refused_naming_the_member(make_daemon, pg_store: Store) -> None:
    node = make_daemon().start()
    bad = [
        ({"global_concurrency": 0}, "global_concurrency"),
        ({"global_concurrency": -2}, "global_concurrency"),
        ({"global_concurrency": "3"}, "global_concurrency"),
        ({"rate": "10/h"}, "rate"),
        ({"rate": "0/s"}, "rate"),
        ({}, "global_concurrency"),
    ]
    with Client(node.env["JOBD_SOCKET"], timeout=10) as client:
        for params, field in bad:
            with pytest.raises(InvalidParams) as info:
                client.call("queue_limit", {"name": "q", **params})
            assert info.value.message.startswith(f"{field}: "), info.value.message
        assert "10/s or 600/m" in _message(client, {"name": "q", "rate": "10/h"})


def _message(client: Client, params: dict[str, object]) -> str:
    with pytest.raises(InvalidParams) as info:
        client.call("queue_limit", params)
    return info.value.message


def test_limits_through_jobctl_and_http_then_reset_all_audited(
    make_daemon, pg_store: Store
) -> None:
    node = make_daemon(JOBD_HTTP_TOKENS="secret-token").start()
    env = {**node.env, "PYTHONPATH": os.pathsep.join(sys.path)}

    def jobctl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "jobctl", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    done = jobctl("queues", "limit", "fresh", "--global-concurrency", "4", "--rate", "10/s")
    assert done.returncode == 0, done.stderr
    assert "global concurrency 4 (runtime), rate 10/s (runtime)" in done.stdout
    table = jobctl("queues").stdout
    assert "fresh" in table and "4 (runtime)" in table and "10/s (runtime)" in table
    refused = jobctl("queues", "limit", "fresh", "--rate", "10/h")
    assert refused.returncode != 0 and "rate" in refused.stderr
    assert jobctl("queues", "limit", "fresh").returncode != 0  # nothing to set

    shim = start_shim(SimpleNamespace(home=node.workdir, env=node.env))  # type: ignore[arg-type]
    headers = {"Authorization": "Bearer secret-token"}
    try:
        base = f"{shim.url}/queues/fresh/limit"
        answer = requests.post(base, json={"rate": "600/m"}, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["queue"]["limits"] == {"global_concurrency": 4, "rate": "600/m"}
        wrong = requests.post(base, json={"rate": "10/h"}, headers=headers, timeout=30)
        assert wrong.status_code == 400 and wrong.json()["field"] == "rate"
        zero = requests.post(base, json={"global_concurrency": 0}, headers=headers, timeout=30)
        assert zero.status_code == 400 and zero.json()["field"] == "global_concurrency"
        unknown = requests.post(base, json={"burst": 3}, headers=headers, timeout=30)
        assert unknown.status_code == 400
        reset = requests.post(base, json={"reset": True}, headers=headers, timeout=30)
        assert reset.json()["queue"]["limits"] == {}
        listed = requests.get(f"{shim.url}/queues", headers=headers, timeout=30).json()
        assert "fresh" not in [q["name"] for q in listed["queues"]]  # no jobs, no limits
    finally:
        shim.stop()
    with Client(node.env["JOBD_SOCKET"], timeout=10) as client:
        records = client.call("audit", {"limit": 10})["records"]
    limits = [r for r in records if r["action"] == "queue_limit"]
    assert [r["details"] for r in limits] == [
        {"reset": True, "via": f"uid:{os.getuid()}"},
        {"rate": "600/m", "via": f"uid:{os.getuid()}"},
        {"global_concurrency": 4, "rate": "10/s"},
    ]
    assert limits[0]["actor"].startswith("token:") and limits[2]["actor"] == f"uid:{os.getuid()}"
