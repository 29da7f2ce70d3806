"""Workflows in the chaos harness (`--workflows SHARE`): a share of the planned jobs are
submitted `after` 1-3 earlier jobs (now and then a fan-in of 5-20), most cancelling on a
parent's failure, some running anyway (`on_parent_failure: run`).  Parents in the same
submit_many chunk are named in it; earlier ones by id.  The faults do what they do to any job.

The invariants checked at the end (each a violation when broken):
- run early: no dependent started before every parent had ended (its first `start` line is
  later than each parent's finished_at), nor, cancelling on failure, before every parent had
  completed;
- stuck: no job is left `waiting` (the harness's stuck check counts waiting jobs too);
- outcome: a dependent that cancels on failure, one of whose parents did not complete, ended
  `canceled`; one canceled `ParentFailed` names a parent that really failed or was canceled;
- lost: as for every job (harness.py).
"""

from __future__ import annotations

import random
from typing import Any, Protocol

#: The jobs planned first have no parents (every kind runs alone at least once).
FIRST_DEPENDENT = 20
#: Parents are drawn among this many jobs planned just before.
WINDOW = 60
PARENT_FAILED = "ParentFailed"


class Planned(Protocol):
    index: int
    params: dict[str, Any]
    id: int | None
    parents: list[int]
    policy: str


def plan_parents(rng: random.Random, index: int, share: float) -> tuple[list[int], str]:
    """The parents (plan indexes) and the policy of planned job `index` (none: not a
    dependent)."""
    if index < FIRST_DEPENDENT or rng.random() >= share:
        return [], "cancel"
    count = rng.randint(5, 20) if rng.random() < 0.1 else rng.choice((1, 1, 2, 3))
    window = range(max(0, index - WINDOW), index)
    parents = sorted(rng.sample(window, min(count, len(window))))
    return parents, ("run" if rng.random() < 0.2 else "cancel")


def batch_params(batch: list[Any], plan: list[Any]) -> list[dict[str, Any]]:
    """The submit_many params of a chunk: each dependent's `after` names the parents in the
    chunk (which get a `name`) and gives the ids of those submitted before."""
    in_batch = {job.index for job in batch}
    named = {parent for job in batch for parent in job.parents if parent in in_batch}
    out = []
    for job in batch:
        params = dict(job.params)
        if job.index in named:
            params["name"] = f"j{job.index}"
        if job.parents:
            params["after"] = [f"j{p}" if p in in_batch else plan[p].id for p in job.parents]
            params["on_parent_failure"] = job.policy
        out.append(params)
    return out


def check(
    plan: list[Any],
    rows: dict[int, dict[str, Any]],
    first_starts: dict[int, float],
    violations: list[str],
) -> int:
    """The invariants above; returns how many dependents were checked."""
    checked = 0
    for job in plan:
        row = rows.get(job.id) if job.id is not None else None
        if not job.parents or row is None:
            continue
        checked += 1
        parents = [rows.get(plan[p].id) for p in job.parents if plan[p].id is not None]
        parents = [p for p in parents if p is not None]
        started = first_starts.get(job.id)
        if started is not None:
            _check_started(job, row, parents, started, violations)
        bad = [p for p in parents if p["state"] in ("failed", "canceled")]
        if job.policy == "cancel" and bad and row["state"] != "canceled":
            violations.append(
                f"job {job.id} cancels on a parent's failure, parent {bad[0]['id']} ended"
                f" {bad[0]['state']}, but it ended {row['state']}"
            )
        error = row["last_error"] or {}
        if row["state"] == "canceled" and error.get("type") == PARENT_FAILED:
            named = int(str(error.get("message", "")).split(" ")[2])
            if named not in {p["id"] for p in bad}:
                violations.append(f"job {job.id}: {error.get('message')}, but that parent did not")
    return checked


def _check_started(
    job: Any,
    row: dict[str, Any],
    parents: list[dict[str, Any]],
    started: float,
    violations: list[str],
) -> None:
    for parent in parents:
        finished = parent["finished_at"]
        if finished is None or started <= finished.timestamp():
            violations.append(
                f"job {job.id} started at {started:.3f}, before its parent {parent['id']}"
                f" ended ({finished})"
            )
        elif job.policy == "cancel" and parent["state"] != "completed":
            violations.append(
                f"job {job.id} ran although its parent {parent['id']} ended {parent['state']}"
            )


def canceled_by_parent(row: dict[str, Any]) -> bool:
    """A job that jobd canceled because a parent failed: no node logs or counts that."""
    error = row.get("last_error") or {}
    return row["state"] == "canceled" and error.get("type") == PARENT_FAILED
