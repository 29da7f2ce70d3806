"""`jobd config check` and `jobd run` refuse, exit 2, a schedule defined twice (in the file and
by a handler module) and one whose type no handler of the node runs, naming the schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = """
import jobd

@jobd.handler("tick_type")
def tick_type(ctx, payload):
    return {}

jobd.schedule("nightly", cron="0 2 * * *", type="tick_type")
"""


def jobd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "XDG_"))}
    env.update(
        HOME=str(tmp_path),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]),
        JOBD_DATABASE_URL="memory://",
    )
    return subprocess.run(
        [sys.executable, "-m", "jobd.cli", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["config", "check"], ["run"]])
def test_a_name_in_the_file_and_in_code_exits_2(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "sched_module.py").write_text(MODULE)
    config = tmp_path / "jobd.yaml"
    config.write_text(
        "handlers: {modules: [sched_module]}\nschedules:\n  nightly: {every: 1h, type: tick_type}\n"
    )
    result = jobd(tmp_path, "--config", str(config), *command)
    assert result.returncode == 2, result.stderr
    assert "schedule nightly: defined twice" in result.stderr
    assert "module sched_module" in result.stderr


@pytest.mark.parametrize("command", [["config", "check"], ["run"]])
def test_a_type_no_handler_runs_exits_2(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "jobd.yaml"
    config.write_text("schedules:\n  orphan: {every: 1m, type: nobody_runs_this}\n")
    result = jobd(tmp_path, "--config", str(config), *command)
    assert result.returncode == 2, result.stderr
    assert "schedule orphan.type: no handler runs jobs of type 'nobody_runs_this'" in result.stderr
