"""Mixed fleets on PostgreSQL with real `jobd run` nodes: a job type only some nodes run waits
for them instead of failing on the others, and a node older than the fleet's minimum node
version stops claiming and drains (ADR 0023)."""

from __future__ import annotations

import psycopg
import pytest

from jobd import Client
from jobd.domain import NewJob, State
from jobd.store import Store

from .conftest import eventually, wait_for

pytestmark = pytest.mark.postgres

EXTRA = "itest_handlers,fleet_extra_handlers"


async def pending_of(store: Store, ids: list[int]) -> list[int]:
    return [i for i in ids if (await store.get(i)).state is State.PENDING]


async def test_a_new_type_waits_for_a_node_that_runs_it(make_daemon, pg_store: Store) -> None:
    old = make_daemon("old").start()
    specs = [NewJob("new_type", {"n": n}) for n in range(30)]
    ids = [s.job.id for s in await pg_store.submit_many(specs)]
    ids.append((await pg_store.submit(NewJob("noop"))).job.id)

    async def noop_done() -> bool:
        return (await pg_store.get(ids[-1])).state is State.COMPLETED

    await eventually(noop_done, 20, "the old node to run what it knows")
    with Client(old.env["JOBD_SOCKET"], timeout=10) as client:
        wait_for(
            lambda: client.call("health")["warnings"],
            what="the old node to warn about the new type",
        )
        health = client.call("health")
        assert health["status"] == "ok", health
        assert health["warnings"] == ["30 pending 'new_type' jobs: no live node runs that type"]
        gauge = 'jobd_jobs_unrunnable{type="new_type"} 30.0'
        wait_for(lambda: gauge in client.metrics(), what="the gauge at the next heartbeat")
    assert await pending_of(pg_store, ids[:-1]) == ids[:-1]  # none claimed, none failed

    new = make_daemon("new", JOBD_HANDLER_MODULES=EXTRA).start()

    async def all_done() -> bool:
        jobs = [await pg_store.get(i) for i in ids[:-1]]
        assert not [j for j in jobs if j.state is State.FAILED], "a node failed a job it lacks"
        return all(j.state is State.COMPLETED for j in jobs)

    await eventually(all_done, 30, "the new node to run every new_type job")
    new_pid = new.running.pid
    with Client(old.env["JOBD_SOCKET"], timeout=10) as client:
        nodes = client.call("nodes")["nodes"]
        assert sorted(n["pid"] for n in nodes) == sorted([old.running.pid, new_pid])
        by_pid = {n["pid"]: n for n in nodes}
        assert "new_type" in by_pid[new_pid]["types"]
        assert "new_type" not in by_pid[old.running.pid]["types"]
        assert all(n["live"] for n in nodes)
        wait_for(lambda: not client.call("health")["warnings"], what="the warning to clear")


async def test_a_node_older_than_the_fleet_minimum_stops_claiming_and_drains(
    make_daemon, pg_store: Store, pg_url: str, pg_schema: str
) -> None:
    node = make_daemon().start()
    first = (await pg_store.submit(NewJob("noop"))).job.id

    async def ran() -> bool:
        return (await pg_store.get(first)).state is State.COMPLETED

    await eventually(ran, 20, "the node to claim")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'UPDATE "{pg_schema}".fleet SET min_node_version = %s', ("999.0",))
    assert node.running.wait_exit(20) == 0, node.stderr()
    refusal = node.event("draining")
    assert refusal is not None and "999.0" in refusal["reason"]
    assert any("older than the fleet's minimum node version 999.0" in e.get("message", "")
               for e in node.events())  # fmt: skip
    later = (await pg_store.submit(NewJob("noop"))).job.id
    assert (await pg_store.get(later)).state is State.PENDING
