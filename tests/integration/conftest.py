"""The real daemon, as a subprocess, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobd.store import Store, create_store

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def wait_for(check: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def eventually(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Daemon:
    """One `jobd run` process with its own stderr log."""

    env: dict[str, str]
    workdir: Path
    name: str = "jobd"
    proc: subprocess.Popen | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self, *args: str) -> Daemon:
        self.starts += 1
        log = self.workdir / f"{self.name}.{self.starts}.log"
        self.logs.append(log)
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobd.cli", "run", *args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.workdir,
            )
        wait_for(lambda: self.event("jobd started") or self._died(), what=f"{self.name} to start")
        assert self.proc.poll() is None, self.stderr()
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stderr(self) -> str:
        return self.logs[-1].read_text(errors="replace") if self.logs else ""

    def events(self) -> list[dict]:
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def event(self, message: str) -> dict | None:
        return next((e for e in self.events() if e.get("message") == message), None)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def shut_down_quickly(self) -> None:
        """Two signals: drain at once (so coverage and logs are written), SIGKILL if stuck."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: self.event("draining") or self._died(), what="the drain to begin")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def worker_pids(self) -> list[int]:
        """Pids of this daemon's workers, from their process titles."""
        assert self.proc is not None
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        pids = []
        for line in out.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            if args.startswith("jobd: worker ") and _is_descendant(int(pid), self.proc.pid):
                pids.append(int(pid))
        return pids


def _is_descendant(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False


class RunLog:
    """The append-only log the test handlers write (see itest_handlers.py)."""

    def __init__(self, path: Path):
        self.path = path
        path.touch()

    def lines(self) -> list[tuple[int, int, int, str, float]]:
        out = []
        for line in self.path.read_text().splitlines():
            job_id, attempt, pid, event, ts = line.split()
            out.append((int(job_id), int(attempt), int(pid), event, float(ts)))
        return out

    def runs(self, event: str = "run") -> Counter:
        return Counter(job_id for job_id, _, _, e, _ in self.lines() if e == event)

    def of(self, job_id: int, event: str = "run") -> list[tuple[int, int, int, str, float]]:
        return [line for line in self.lines() if line[0] == job_id and line[3] == event]


@pytest.fixture
def runlog(tmp_path: Path) -> RunLog:
    return RunLog(tmp_path / "runs.log")


@pytest.fixture
def daemon_env(pg_url: str, pg_schema: str, runlog: RunLog) -> dict[str, str]:
    """Settings for fast tests: short leases, quick polls, short graces."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    env.update(
        JOBD_DATABASE_URL=pg_url,
        JOBD_DATABASE_SCHEMA=pg_schema,
        JOBD_WORKERS="2",
        JOBD_HANDLER_MODULES="itest_handlers",
        JOBD_JOBS_LEASE_SECONDS="3",
        JOBD_JOBS_HEARTBEAT_SECONDS="0.5",
        JOBD_JOBS_POLL_INTERVAL="0.2",
        JOBD_JOBS_BACKOFF_BASE="0.05",
        JOBD_JOBS_BACKOFF_MAX="0.2",
        JOBD_SHUTDOWN_KILL_GRACE="0.5",
        JOBD_SHUTDOWN_DRAIN_TIMEOUT="5",
        JOBD_LOGGING_FORMAT="json",
        ITEST_LOG=str(runlog.path),
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
    )
    return env


@pytest.fixture
def make_daemon(daemon_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    socket_dirs: list[str] = []

    def make(name: str = "jobd", **settings: str) -> Daemon:
        # A socket path must stay short (108 bytes): a directory of its own under /tmp.
        socket_dirs.append(tempfile.mkdtemp(prefix="jobd-it"))
        sock = Path(socket_dirs[-1]) / "jobd.sock"
        d = Daemon({**daemon_env, "JOBD_SOCKET": str(sock), **settings}, tmp_path, name)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.shut_down_quickly()
    for path in socket_dirs:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def pg_store(pg_url: str, pg_schema: str) -> AsyncIterator[Store]:
    """The test's own view of the daemon's database (migrated)."""
    store = create_store(pg_url, schema=pg_schema)
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
