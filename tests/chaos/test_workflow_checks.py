"""The chaos harness's workflow checks themselves (tests/chaos/workflows.py), on made-up rows:
they see a dependent that ran early, one that ran after a failed parent, a missing cancel and a
ParentFailed naming the wrong parent.  No database, no daemon."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .workflows import batch_params, check, plan_parents


@dataclass
class Job:
    index: int
    id: int | None
    parents: list[int] = field(default_factory=list)
    policy: str = "cancel"
    params: dict[str, Any] = field(default_factory=dict)


def row(job_id: int, state: str, finished: float | None = None, error: Any = None) -> dict:
    at = None if finished is None else datetime.fromtimestamp(finished, UTC)
    return {"id": job_id, "state": state, "finished_at": at, "last_error": error}


PLAN = [Job(0, 10), Job(1, 11), Job(2, 12, [0, 1]), Job(3, 13, [1], "run")]


def violations(rows: dict[int, dict], starts: dict[int, float]) -> list[str]:
    found: list[str] = []
    check(PLAN, rows, starts, found)
    return found


def test_a_workflow_that_kept_the_rules_passes() -> None:
    rows = {10: row(10, "completed", 100.0), 11: row(11, "failed", 101.0)}
    rows |= {
        12: row(
            12, "canceled", 101.0, {"type": "ParentFailed", "message": "parent job 11 ended failed"}
        )
    }
    rows |= {13: row(13, "completed", 103.0)}
    assert violations(rows, {10: 99.0, 11: 100.5, 13: 102.0}) == []


def test_each_broken_rule_is_a_violation() -> None:
    rows = {10: row(10, "completed", 100.0), 11: row(11, "failed", 101.0)}
    rows |= {12: row(12, "completed", 105.0), 13: row(13, "completed", 103.0)}
    found = violations(rows, {12: 100.5, 13: 100.9})
    assert any("job 12 started at 100.500, before its parent 11" in v for v in found)
    assert any("job 12 cancels on a parent's failure" in v for v in found)
    assert any("job 13 started at 100.900, before its parent 11" in v for v in found)
    later = violations(rows, {12: 101.5})
    assert any("job 12 ran although its parent 11 ended failed" in v for v in later)
    wrong = {"type": "ParentFailed", "message": "parent job 10 ended failed"}
    rows[12] = row(12, "canceled", 101.0, wrong)
    named = violations(rows, {})
    assert any("parent job 10 ended failed, but that parent did not" in v for v in named)


def test_a_chunk_names_its_own_parents_and_gives_ids_of_earlier_ones() -> None:
    plan = [Job(0, 10), Job(1, None), Job(2, None, [0, 1], "run")]
    params = batch_params(plan[1:], plan)
    assert params[0] == {"name": "j1"}
    assert params[1] == {"after": [10, "j1"], "on_parent_failure": "run"}
    rng = random.Random(1)
    assert plan_parents(rng, 5, 1.0) == ([], "cancel")  # the first jobs have none
    parents, _ = plan_parents(rng, 100, 1.0)
    assert parents and all(40 <= p < 100 for p in parents)
