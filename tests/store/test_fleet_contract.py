"""The store contract for mixed fleets, on memory, SQLite and PostgreSQL alike: the lease token
that fences every write-back on its claim, and the nodes the heartbeat reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobd import __version__
from jobd.domain import NewJob, State
from jobd.store import Outcome, OutcomeKind, Store
from jobd.store.nodes import NodeReport, WorkerSlot, too_old

NODE = "node-a"
LEASE = 30.0


async def claim_one(store: Store) -> object:
    (job,) = await store.claim(NODE, 1, lease=LEASE)
    return job


async def test_a_replayed_release_cannot_end_a_later_claim(store: Store) -> None:
    """Claim, release, claim again (same node, same attempt number), then the first release
    arrives again (its answer was lost and it was retried): refused."""
    job_id = (await store.submit(NewJob("echo"))).job.id
    (first,) = await store.claim(NODE, 1, lease=LEASE)
    release = Outcome(job_id, first.attempts, OutcomeKind.RELEASED, token=first.lease_token)
    assert await store.finish(NODE, [release]) == {job_id: State.PENDING}
    (second,) = await store.claim(NODE, 1, lease=LEASE)
    assert (second.attempts, second.lease_owner) == (first.attempts, first.lease_owner)
    assert second.lease_token is not None and second.lease_token != first.lease_token

    assert await store.finish(NODE, [release]) == {}
    stored = await store.get(job_id)
    assert stored.state is State.RUNNING and stored.lease_token == second.lease_token
    done = Outcome(job_id, second.attempts, OutcomeKind.COMPLETED, token=second.lease_token)
    assert await store.finish(NODE, [done]) == {job_id: State.COMPLETED}


async def test_every_claim_draws_a_token_and_the_end_of_the_attempt_clears_it(
    store: Store,
) -> None:
    ids = [s.job.id for s in await store.submit_many([NewJob("echo") for _ in range(3)])]
    claimed = await store.claim(NODE, 3, lease=LEASE)
    tokens = {job.lease_token for job in claimed}
    assert None not in tokens and len(tokens) == 3
    outcomes = [
        Outcome(j.id, j.attempts, OutcomeKind.RELEASED, token=j.lease_token) for j in claimed
    ]
    await store.finish(NODE, outcomes)
    assert [(await store.get(i)).lease_token for i in ids] == [None, None, None]
    assert "lease_token" not in (await store.get(ids[0])).to_dict()


def report(node: str, types: tuple[str, ...], job_id: int | None = None) -> NodeReport:
    workers = (WorkerSlot(1, job_id), WorkerSlot(2, None))
    started = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    return NodeReport(node, "host-1", 4242, "0.1.0", started, types, workers)


async def test_nodes_report_their_heartbeat(store: Store) -> None:
    await store.report_node(report("a", ("echo",)))
    await store.report_node(report("b", ("echo", "new_type"), job_id=7))
    await store.report_node(report("a", ("echo", "sleep")))  # its next heartbeat
    fleet = await store.fleet(LEASE)
    assert [n.report.id for n in fleet.nodes] == ["a", "b"]
    a, b = fleet.nodes
    assert a.live and a.report.types == ("echo", "sleep")
    assert b.report == report("b", ("echo", "new_type"), job_id=7)
    assert b.to_dict()["workers"] == [{"index": 1, "job_id": 7}, {"index": 2, "job_id": None}]
    # None, or what the latest migration raised it to: never above this version.
    assert not too_old(__version__, fleet.min_node_version)


async def test_pending_types_no_live_node_runs_are_unrunnable(store: Store) -> None:
    await store.submit_many([NewJob("echo"), NewJob("new_type"), NewJob("new_type")])
    await store.submit(NewJob("gone"))
    await claim_one(store)  # an echo: running, not pending
    await store.report_node(report("a", ("echo",)))
    fleet = await store.fleet(LEASE)
    assert fleet.pending_by_type == {"new_type": 2, "gone": 1}
    assert fleet.unrunnable() == {"gone": 1, "new_type": 2}
    await store.report_node(report("b", ("new_type",)))
    assert (await store.fleet(LEASE)).unrunnable() == {"gone": 1}
    # a node whose heartbeat is older than the lease runs nothing
    assert (await store.fleet(0.0)).unrunnable() == {"gone": 1, "new_type": 2}


async def test_dead_nodes_rows_are_pruned(store: Store) -> None:
    await store.report_node(report("a", ("echo",)))
    assert await store.prune_nodes(timedelta(hours=1)) == 0
    assert await store.prune_nodes(timedelta(seconds=-1)) == 1
    assert (await store.fleet(LEASE)).nodes == []
