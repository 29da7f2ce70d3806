"""`python bench/run.py --quick` still works: every scenario, on PostgreSQL and SQLite, at tiny
sizes, against `jobd run` as a real subprocess (and the peers scenario against pgqueuer and
procrastinate, on PostgreSQL only), the burn-down's daemon running two schedules
(`--schedules 2`).  The only benchmark in the test suite, and it asserts no timing: only that
the harness runs to the end and prints its table with a row for every scenario and store.
(About 20 s: each scenario starts its own daemons.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("JOBD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCENARIOS = ("burn-down", "limit", "backlog", "latency", "cpu-bound", "memory", "respawn", "steady")
SCENARIOS += ("workflow", "bulk-retry")
PEER_ROWS = ("jobd", "pgqueuer", "procrastinate", "burn-down: jobd ÷", "latency p50: jobd ÷")

SCHEDULES = ("--schedules", "2")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_quick_run_prints_the_table(pg_url: str, tmp_path: Path) -> None:
    # pg_url is not used: asking for it skips (or fails, under JOBD_REQUIRE_POSTGRES=1) the
    # test the way every PostgreSQL test does when there is no server.  The harness creates
    # and drops a database of its own from the admin URL.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--pg", ADMIN_URL, *SCHEDULES],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    lines = result.stdout.splitlines()
    # The machine's hops (bench/hops.py) come with the machine, before any scenario.
    hops = [line for line in lines if line.startswith("- hops, medians of ")]
    assert len(hops) == 1 and "PostgreSQL `SELECT 1`" in hops[0], lines[:10]
    # The table is the last thing printed (after the machine and the detail tables).
    header = max(i for i, line in enumerate(lines) if line.startswith("| scenario "))
    rows = [line for line in lines[header:] if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    assert cells[0] == ["scenario", "store", "figure", "value", "target", "met"]
    seen = {(c[0], c[1]) for c in cells[1:]}
    for scenario in SCENARIOS:
        for store in ("postgres", "sqlite"):
            assert (scenario, store) in seen, f"no row for {scenario} on {store}"
    peers = [c[2] for c in cells[1:] if c[:2] == ["peers", "postgres"]]
    for start in PEER_ROWS:
        assert any(name.startswith(start) for name in peers), f"no peers row for {start}"
    assert not [c for c in cells[1:] if c[3].startswith("error")]
    # --schedules: the burn-down's daemon ran them, and says how many jobs they made.
    ticked = [c for c in cells[1:] if c[0] == "burn-down" and c[2].startswith("jobs the 2 sch")]
    assert len(ticked) == 2, "no row of the schedules' jobs for each store"
