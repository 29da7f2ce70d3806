"""Operating the queues on PostgreSQL with real `jobd run` nodes: a pause holds every node off
the queue (one started during the pause too) until the resume; bulk actions by filter go in
bounded batches; run-now and priority; each action in the audit trail with who did it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from jobd import Client
from jobd.domain import NewJob, State
from jobd.store import JobFilter, Store

from .conftest import eventually, wait_for

pytestmark = pytest.mark.postgres


def paused_gauge(client: Client, queue: str) -> bool:
    return f'jobd_queue_paused{{queue="{queue}"}} 1.0' in client.metrics()


async def states(store: Store, ids: list[int]) -> set[State]:
    return {(await store.get(i)).state for i in ids}


async def test_a_paused_queue_is_claimed_by_no_node_until_resumed(
    make_daemon, pg_store: Store
) -> None:
    nodes = [make_daemon(f"n{i}").start() for i in range(3)]
    sockets = [n.env["JOBD_SOCKET"] for n in nodes]
    with Client(sockets[0], timeout=10) as client:
        client.call("queue_pause", {"name": "held", "reason": "downstream API down"})
    for sock in sockets:  # every node has read the pause (the notification, or a heartbeat)
        with Client(sock, timeout=10) as c:
            wait_for(lambda c=c: paused_gauge(c, "held"), what="the node to see the pause")
    held = [s.job.id for s in await pg_store.submit_many([NewJob("noop", queue="held")] * 20)]
    free = [s.job.id for s in await pg_store.submit_many([NewJob("noop")] * 20)]

    async def free_done() -> bool:
        return await states(pg_store, free) == {State.COMPLETED}

    await eventually(free_done, 30, "the nodes to run the other queue")
    late = make_daemon("late").start()  # starts while the queue is paused
    with Client(late.env["JOBD_SOCKET"], timeout=10) as c:
        wait_for(lambda: paused_gauge(c, "held"), what="the late node to see the pause")
        more = [s.job.id for s in await pg_store.submit_many([NewJob("noop")] * 6)]

        async def more_done() -> bool:
            return await states(pg_store, more) == {State.COMPLETED}

        await eventually(more_done, 30, "the nodes to run jobs after the late start")
        health = c.call("health")
        assert "queue 'held' is paused: downstream API down" in health["warnings"]
        assert health["status"] == "ok"
        row = next(q for q in c.call("queues")["queues"] if q["name"] == "held")
        assert (row["paused"], row["pending"], row["running"]) == (True, 20, 0)
    assert await states(pg_store, held) == {State.PENDING}, "a node claimed a paused queue"

    with Client(sockets[1], timeout=10) as client:
        client.call("queue_resume", {"name": "held"})

    async def held_done() -> bool:
        return await states(pg_store, held) == {State.COMPLETED}

    await eventually(held_done, 30, "the nodes to run the resumed queue")
    with Client(sockets[2], timeout=10) as client:
        records = client.call("audit", {"limit": 10})["records"]
    actions = [(r["action"], r["target"], r["actor"]) for r in records]
    uid = f"uid:{os.getuid()}"
    assert actions[:2] == [("queue_resume", "held", uid), ("queue_pause", "held", uid)]
    assert records[1]["details"] == {"reason": "downstream API down"}


async def test_a_bulk_retry_by_filter_runs_in_bounded_batches(make_daemon, pg_store: Store) -> None:
    node = make_daemon().start()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    specs = [{"type": "noop", "queue": "outage", "run_at": later}] * 25
    with Client(node.env["JOBD_SOCKET"], timeout=30) as client:
        client.call("submit_many", {"jobs": specs})
        filters = {"queue": "outage", "state": "pending"}
        assert client.call("cancel_many", {**filters, "dry_run": True}) == {"matched": 25}
        canceled = client.call("cancel_many", {**filters, "batch": 10})
        assert (canceled["changed"], canceled["batches"]) == (25, 3)
        assert canceled["next_cursor"] is None
        retry = {"queue": "outage", "state": "canceled", "batch": 4, "limit": 20}
        first = client.call("retry_many", retry)
        # Never more than the batch size in one transaction: 20 jobs are 5 batches of 4.
        assert (first["changed"], first["batches"], first["batch_size"]) == (20, 5, 4)
        assert first["next_cursor"] is not None
        rest = client.call("retry_many", {**retry, "cursor": first["next_cursor"]})
        assert (rest["changed"], rest["next_cursor"]) == (5, None)
        with pytest.raises(Exception, match="another action or filter"):
            client.call("retry_many", {"queue": "other", "cursor": first["next_cursor"]})
        audit = client.call("audit", {"limit": 3})["records"]
        assert [r["action"] for r in audit] == ["retry_many", "retry_many", "cancel_many"]
        assert audit[2]["details"]["filter"] == {"state": ["pending"], "queue": "outage"}

    async def all_done() -> bool:
        page = await pg_store.list(JobFilter(queue="outage"), 100)
        return {j.state for j in page.jobs} == {State.COMPLETED} and len(page.jobs) == 25

    await eventually(all_done, 30, "the retried jobs to run")


async def test_run_now_and_priority_fix_a_delayed_job(make_daemon, pg_store: Store) -> None:
    node = make_daemon().start()
    later = datetime.now(UTC) + timedelta(hours=1)
    job_id = (await pg_store.submit(NewJob("noop", run_at=later))).job.id
    env = {**node.env, "PYTHONPATH": os.pathsep.join(sys.path)}

    def jobctl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "jobctl", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    done = jobctl("priority", str(job_id), "9")
    assert done.returncode == 0 and f"job {job_id} has priority 9" in done.stdout, done.stderr
    assert (await pg_store.get(job_id)).priority == 9
    assert jobctl("run-now", str(job_id)).returncode == 0

    async def ran() -> bool:
        return (await pg_store.get(job_id)).state is State.COMPLETED

    await eventually(ran, 20, "the job to run now")
    conflict = jobctl("run-now", str(job_id))
    assert conflict.returncode == 1 and "completed" in conflict.stderr
    await pg_store.submit(NewJob("noop", queue="reports", run_at=later))
    listed = jobctl("queues")
    assert listed.returncode == 0 and "reports" in listed.stdout, listed.stderr
    bulk = jobctl("cancel", "--queue", "nothing-here", "--yes")
    assert bulk.returncode == 0 and "0 jobs match" in bulk.stdout
    audit = jobctl("audit", "--json")
    actions = [r["action"] for r in json.loads(audit.stdout)["records"]]
    assert actions == ["run_now", "set_priority"]
