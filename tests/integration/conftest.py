"""The real daemon, as a subprocess, on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from jobd.store import Store, create_store
from tests.daemon import DaemonProcess, DaemonStuck, answers, daemon_environment, short_directory
from tests.eventually import eventually, wait_for
from tests.integration.schedule_support import History

__all__ = ["Daemon", "RunLog", "eventually", "wait_for"]

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
QUICK_STOP = 15.0  # seconds a drain told to hurry may take before the daemon is killed


@dataclass
class Daemon:
    """One `jobd run` process at a time (started again after a stop), each with its own log."""

    env: dict[str, str]
    workdir: Path
    name: str = "jobd"
    running: DaemonProcess | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.running.process if self.running else None

    def start(self, *args: str, until_answering: bool = False) -> Daemon:
        """Start `jobd run ARGS` and wait until it logs "jobd started" (or, for a log that is
        not JSON, until it answers on its socket); fail if it exits first."""
        self.starts += 1
        log = self.workdir / f"{self.name}.{self.starts}.log"
        self.logs.append(log)
        self.running = DaemonProcess.start(self.env, cwd=self.workdir, log_path=log, args=args)
        ready, what = (self._answers, "answer") if until_answering else (self._started, "start")
        self.running.wait_until(ready, what=f"{self.name} to {what}")
        return self

    def _answers(self) -> bool:
        return answers(self.env["JOBD_SOCKET"])

    def _started(self) -> dict | None:
        return self.event("jobd started")

    def stderr(self) -> str:
        return self.running.log() if self.running else ""

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
        assert self.running is not None
        self.running.send(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.running is None:
            return 0
        return self.running.stop(timeout)

    def shut_down_quickly(self) -> None:
        """Two signals: drain at once (so coverage and logs are written), SIGKILL if stuck."""
        assert self.running is not None
        self.running.send(signal.SIGTERM)
        wait_for(
            lambda: self.event("draining") or self.running.exit_code() is not None,
            what="the drain to begin",
        )
        self.running.send(signal.SIGINT)
        with contextlib.suppress(DaemonStuck):
            self.running.wait_exit(QUICK_STOP)

    def kill(self) -> None:
        assert self.running is not None
        self.running.kill()

    def worker_pids(self) -> list[int]:
        """Pids of this daemon's workers, from their process titles."""
        assert self.running is not None
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        pids = []
        for line in out.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            if args.startswith("jobd: worker ") and _is_descendant(int(pid), self.running.pid):
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
def daemon_env(pg_url: str, pg_schema: str, runlog: RunLog, tmp_path: Path) -> dict[str, str]:
    """Settings for fast tests: short leases, quick polls, short graces."""
    settings = {
        "JOBD_DATABASE_URL": pg_url,
        "JOBD_DATABASE_SCHEMA": pg_schema,
        "JOBD_WORKERS": "2",
        "JOBD_HANDLER_MODULES": "itest_handlers",
        "JOBD_JOBS_LEASE_SECONDS": "3",
        "JOBD_JOBS_HEARTBEAT_SECONDS": "0.5",
        "JOBD_JOBS_POLL_INTERVAL": "0.2",
        "JOBD_JOBS_BACKOFF_BASE": "0.05",
        "JOBD_JOBS_BACKOFF_MAX": "0.2",
        "JOBD_SHUTDOWN_KILL_GRACE": "0.5",
        "JOBD_SHUTDOWN_DRAIN_TIMEOUT": "5",
        "JOBD_LOGGING_FORMAT": "json",
        "ITEST_LOG": str(runlog.path),
    }
    return daemon_environment(tmp_path, settings, python_path=[HERE])


@pytest.fixture
def make_daemon(daemon_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    socket_dirs: list[Path] = []

    def make(name: str = "jobd", **settings: str) -> Daemon:
        socket_dirs.append(short_directory("jobd-it"))
        sock = socket_dirs[-1] / "jobd.sock"
        d = Daemon({**daemon_env, "JOBD_SOCKET": str(sock), **settings}, tmp_path, name)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.running is not None and d.running.exit_code() is None:
            d.shut_down_quickly()
    for path in socket_dirs:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def history(pg_url: str, pg_schema: str) -> History:
    """The ticks the daemons' schedules recorded in the test's database."""
    return History(pg_url, pg_schema)


@pytest.fixture
def raw(pg_url: str, pg_schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the daemons' schema, for looking behind their back."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        yield conn


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
