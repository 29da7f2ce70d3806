"""The PostgreSQL store's fleet operations: a node's heartbeat row, the fleet as one node
sees it, and the pruning of dead nodes' rows (the nodes and fleet tables of schema 3)."""

from __future__ import annotations

from datetime import timedelta

from psycopg.types.json import Jsonb

from jobd.store.nodes import Fleet, NodeReport, NodeStatus, workers_from, workers_json
from jobd.store.postgres.connections import Connection
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import Row, fetch_one


async def report_node(conn: Connection, r: NodeReport) -> None:
    params = {
        "id": r.id,
        "host": r.host,
        "pid": r.pid,
        "version": r.version,
        "started_at": r.started_at,
        "types": list(r.types),
        "workers": Jsonb(workers_json(r.workers)),
    }
    await conn.execute(QUERIES["report_node"], params)


async def fleet(conn: Connection, lease: float) -> Fleet:
    minimum = await fetch_one(await conn.execute(QUERIES["min_node_version"]))
    cur = await conn.execute(QUERIES["nodes"], {"lease": lease})
    nodes = [node_from_row(row) for row in await cur.fetchall()]
    cur = await conn.execute(QUERIES["pending_by_type"])
    pending = {row["type"]: row["count"] for row in await cur.fetchall()}
    return Fleet(minimum["min_node_version"], nodes, pending)


def node_from_row(row: Row) -> NodeStatus:
    report = NodeReport(
        row["id"],
        row["host"],
        row["pid"],
        row["version"],
        row["started_at"],
        tuple(row["types"]),
        workers_from(row["workers"]),
    )
    return NodeStatus(report, row["heartbeat_at"], row["live"])


async def prune_nodes(conn: Connection, older_than: timedelta) -> int:
    cur = await conn.execute(QUERIES["prune_nodes"], {"seconds": older_than.total_seconds()})
    return cur.rowcount
