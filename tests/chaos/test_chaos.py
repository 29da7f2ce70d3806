"""The chaos harness at its default size, as part of the normal suite: 2 nodes, a few hundred
jobs, every default fault kind (no PostgreSQL restart: other things use the server).  The full
size is run by hand: `python -m tests.chaos --jobs 5000 --seed S --daemons 3` (see harness.py
and docs/guarantees.md)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from .harness import FAULTS, Chaos, Settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_no_job_is_lost_stuck_or_run_twice_without_a_lost_lease(pg_url: str, tmp_path: Path):
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
