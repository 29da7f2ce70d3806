"""This node's place in the fleet, kept at each heartbeat: it writes its row of the nodes
table (what it runs, what its workers do), reads the fleet back, counts the pending jobs no
live node runs (the `jobd_jobs_unrunnable` gauge, a warning in the log when the set changes),
and stops claiming and drains once the fleet's minimum node version is above its own
(ADR 0023)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from jobd import __version__
from jobd.metrics import Metrics
from jobd.store import Store
from jobd.store.nodes import NODE_RETENTION, NodeReport, WorkerSlot, version_refusal
from jobd.workers import WorkerProcess

log = logging.getLogger("jobd.supervisor")


def node_report(
    node: str, started_at: float, types: list[str], workers: Iterable[WorkerProcess]
) -> NodeReport:
    """What this node tells the fleet about itself (`started_at`: its time.time() at start)."""
    return NodeReport(
        id=node,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        started_at=datetime.fromtimestamp(started_at, UTC),
        types=tuple(types),
        workers=tuple(WorkerSlot(w.index, w.running) for w in sorted(workers, key=_index)),
    )


def _index(w: WorkerProcess) -> int:
    return w.index


class FleetMember:
    def __init__(
        self,
        store: Store,
        lease_seconds: float,
        metrics: Metrics,
        *,
        describe: Callable[[], NodeReport],
        drain: Callable[[str], None],
    ):
        self.store = store
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self._describe = describe
        self._drain = drain
        self.refusal: str | None = None  # why this node stopped claiming, once it has
        self._unrunnable: frozenset[str] = frozenset()

    async def beat(self) -> None:
        """Report this node, then act on what the fleet says (raises Unavailable)."""
        await self.store.report_node(self._describe())
        fleet = await self.store.fleet(self.lease_seconds)
        self._count_unrunnable(fleet.unrunnable())
        self._check_version(fleet.min_node_version)

    async def prune(self) -> int:
        """Delete the rows of nodes dead for longer than NODE_RETENTION."""
        return await self.store.prune_nodes(NODE_RETENTION)

    def _count_unrunnable(self, by_type: dict[str, int]) -> None:
        self.metrics.set_unrunnable(by_type)
        types = frozenset(by_type)
        if types - self._unrunnable:
            log.warning(
                "pending jobs of types no live node runs: they wait for a node that does",
                extra={"unrunnable": by_type},
            )
        self._unrunnable = types

    def _check_version(self, minimum: str | None) -> None:
        if self.refusal is not None:
            return
        self.refusal = version_refusal(__version__, minimum)
        if self.refusal is not None:
            log.error(self.refusal, extra={"version": __version__, "min_node_version": minimum})
            self._drain(f"fleet minimum node version {minimum}")
