"""A new worker does not import the daemon again as it starts: multiprocessing re-runs the
parent's main module in every child, so the fork server must have it preloaded (and with it
everything the daemon imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_workers_inherit_the_main_modules_imports_from_the_fork_server(tmp_path: Path) -> None:
    log = tmp_path / "imports"
    env = {**os.environ, "JOBD_PRELOAD_LOG": str(log), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "tests.preload.probe"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    workers = set(run.stdout.split())
    importers = set(log.read_text().split())
    assert len(workers) == 2
    assert not workers & importers, f"workers {workers} imported it again: {importers}"
    assert len(importers) == 2  # the parent, and the fork server once for all workers
