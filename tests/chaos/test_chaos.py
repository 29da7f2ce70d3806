"""The chaos harness at its default size, as part of the normal suite: 2 nodes, a few hundred
jobs, every default fault kind (no PostgreSQL restart: other things use the server; one
black hole of 10-60 s), and the proof that its stale-write check fails without the fence.  The full
size is run by hand: `python -m tests.chaos --jobs 5000 --seed S --daemons 3` (see harness.py
and docs/guarantees.md)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from .harness import FAULTS, Chaos, Settings
from .stale_writes import statement

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_no_job_is_lost_stuck_or_run_twice_without_a_lost_lease(
    pg_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        jobs=int(os.environ.get("JOBD_CHAOS_JOBS", "500")),
        seed=int(os.environ.get("JOBD_CHAOS_SEED", "1")),
        daemons=2,
        fault_interval=0.4,
        db_url=pg_url,
        schema=f"jobd_chaos_{uuid.uuid4().hex[:8]}",
        workdir=tmp_path,
        settle_timeout=60,
    )
    report = Chaos(settings).run()
    print(report.summary())
    for note in report.notes:
        print("note:", note)
    assert report.ok, "\n".join([report.summary(), *report.violations[:30]])
    assert set(report.faults) >= set(FAULTS)
    assert report.lost == report.stuck == report.unexplained_duplicates == 0


def test_the_stale_write_check_fails_when_the_fence_is_stripped(
    pg_url: str, tmp_path: Path
) -> None:
    """The proof that the stale_write fault can see a missing fence: the same replays, sent
    without the write-back's fence conditions, must end newer claims and fail the run."""
    settings = Settings(
        jobs=300,
        seed=1,
        daemons=2,
        faults=("stale_write", "worker_kill"),
        fault_interval=0.3,
        db_url=pg_url,
        schema=f"jobd_chaos_{uuid.uuid4().hex[:8]}",
        workdir=tmp_path,
        settle_timeout=60,
        fenced=False,
    )
    report = Chaos(settings).run()
    print(report.summary())
    assert not report.ok
    assert any("ended its newer claim" in v for v in report.violations), report.violations


def test_stripping_the_fence_removes_the_owner_and_attempt_conditions() -> None:
    for name in ("finish", "finish_retry"):
        fenced, stripped = statement(name, fenced=True), statement(name, fenced=False)
        assert "jobs.lease_owner = %(node)s" in fenced
        assert "jobs.attempts = o.attempt" in fenced
        assert "jobs.lease_owner = %(node)s" not in stripped
        assert "jobs.attempts = o.attempt" not in stripped
        assert "jobs.state = 'running'" in stripped


def test_workflows_under_the_faults(pg_url: str, tmp_path: Path) -> None:
    """A third of the jobs wait for earlier ones: none runs before its parents ended, none is
    left waiting, none is lost, and a parent's failure cancels what cancels on it."""
    settings = Settings(
        jobs=int(os.environ.get("JOBD_CHAOS_JOBS", "400")),
        seed=int(os.environ.get("JOBD_CHAOS_SEED", "2")),
        daemons=2,
        fault_interval=0.4,
        db_url=pg_url,
        schema=f"jobd_chaos_{uuid.uuid4().hex[:8]}",
        workdir=tmp_path,
        settle_timeout=90,
        workflows=0.3,
    )
    report = Chaos(settings).run()
    print(report.summary())
    assert report.ok, "\n".join([report.summary(), *report.violations[:30]])
    assert report.dependents > 0
    assert report.lost == report.stuck == report.unexplained_duplicates == 0
