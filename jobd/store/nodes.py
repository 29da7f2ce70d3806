"""The nodes of a fleet as the store keeps them: what each node reports at its heartbeat, what
the store answers about the fleet, and the rules read from both (which pending types no live
node runs; whether a node's version is too old to claim).  Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

#: A node row whose heartbeat is older than this is deleted (the node is long gone; a day
#: keeps a crashed node visible to `jobctl nodes` long enough to be noticed).
NODE_RETENTION = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """One worker of a node, and the job it runs (None: idle)."""

    index: int
    job_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "job_id": self.job_id}


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a node writes at each heartbeat."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    types: tuple[str, ...]
    workers: tuple[WorkerSlot, ...]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A node's row as the store last heard it; `live` while its heartbeat is newer than the
    lease (by the database's clock)."""

    report: NodeReport
    heartbeat_at: datetime
    live: bool

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "version": r.version,
            "started_at": iso(r.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "live": self.live,
            "types": list(r.types),
            "workers": [w.to_dict() for w in r.workers],
        }


@dataclass(frozen=True, slots=True)
class Fleet:
    """The fleet as one node sees it: the rules, the nodes, and the pending backlog by type."""

    min_node_version: str | None
    nodes: list[NodeStatus]
    pending_by_type: dict[str, int]

    def unrunnable(self) -> dict[str, int]:
        """Pending jobs by type, for the types no live node runs: they wait until one does."""
        return unrunnable(self.pending_by_type, (n.report for n in self.nodes if n.live))


def unrunnable(pending_by_type: Mapping[str, int], live: Iterable[NodeReport]) -> dict[str, int]:
    runs = {t for node in live for t in node.types}
    return {t: n for t, n in sorted(pending_by_type.items()) if n and t not in runs}


def workers_from(raw: Iterable[Mapping[str, Any]]) -> tuple[WorkerSlot, ...]:
    return tuple(WorkerSlot(int(w["index"]), w.get("job_id")) for w in raw)


def workers_json(workers: Iterable[WorkerSlot]) -> list[dict[str, Any]]:
    return [w.to_dict() for w in workers]


_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def version_key(version: str) -> tuple[int, ...]:
    """The release numbers of a version ("0.10.2rc1" → (0, 10, 2)), compared as numbers;
    trailing zeros dropped, so 0.2 and 0.2.0 are the same release."""
    match = _RELEASE.match(version.strip().lstrip("vV"))
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    parts = [int(part) for part in match.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def too_old(version: str, minimum: str | None) -> bool:
    """Whether a node of `version` must stop claiming under the fleet's `minimum`."""
    return minimum is not None and version_key(version) < version_key(minimum)


def version_refusal(version: str, minimum: str | None) -> str | None:
    """Why a node of `version` may not claim under the fleet's `minimum` (None: it may)."""
    if not too_old(version, minimum):
        return None
    return (
        f"this node runs jobd {version}, older than the fleet's minimum node version"
        f" {minimum}: it stops claiming and drains"
    )


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
