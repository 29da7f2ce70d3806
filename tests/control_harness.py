"""A real `jobd run` for tests that talk to it over its control socket.

    with running_daemon(pg_url, schema) as daemon:
        daemon.client().submit("echo", {})
        run_jobctl(daemon, "stats")

The daemon is a subprocess (`python -m jobd.cli run --migrate`, started by tests/daemon.py) on
PostgreSQL, in an environment of its own: only the JOBD_* variables given here, HOME and XDG
folders in its own directory.  Its socket lives in a short directory under the system's
temporary directory (a Unix socket path must fit in 108 bytes, which pytest's tmp_path does not
promise).  Ready means: it answers `hello`.  Leaving the block sends SIGTERM and checks it exits
0 and removes its socket.

Importable as `control_harness` (pytest puts tests/ on sys.path for the rootdir conftest).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobd.client import Client
from tests.daemon import (
    ROOT,
    START_TIMEOUT,
    DaemonProcess,
    answers,
    clean_environment,
    daemon_environment,
    short_directory,
)

__all__ = ["ROOT", "Daemon", "run_jobctl", "running_daemon", "short_dir", "start_daemon"]

TESTS = ROOT / "tests"


@dataclass
class Daemon:
    running: DaemonProcess
    socket: Path
    home: Path
    env: dict[str, str]

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.running.process

    @property
    def log_path(self) -> Path:
        return self.running.log_path

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def log(self) -> str:
        return self.running.log()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        self.running.wait_until(lambda: answers(self.socket), what="hello", timeout=timeout)

    def stop(self, expect: int | None = 0) -> int:
        """SIGTERM, then wait for the exit; check its status (unless `expect` is None)."""
        code = self.running.stop()
        if expect is not None:
            assert code == expect, f"jobd exited {code}, expected {expect}:\n{self.log()}"
        return code


def short_dir() -> Path:
    return short_directory()


def daemon_env(
    pg_url: str, schema: str, socket: Path, home: Path, workers: int, extra: Mapping[str, str]
) -> dict[str, str]:
    settings = {
        "JOBD_DATABASE_URL": pg_url,
        "JOBD_DATABASE_SCHEMA": schema,
        "JOBD_SOCKET": str(socket),
        "JOBD_WORKERS": str(workers),
        "JOBD_HANDLER_MODULES": "control_handlers",
        "JOBD_LOGGING_LEVEL": "DEBUG",
        "JOBD_JOBS_POLL_INTERVAL": "0.2",
    }
    return daemon_environment(home, {**settings, **extra}, python_path=[TESTS])


def start_daemon(
    pg_url: str,
    schema: str,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    directory: Path | None = None,
    max_descriptors: int | None = None,
) -> Daemon:
    """Start `jobd run --migrate` (not waiting for it to be ready)."""
    home = directory or short_dir()
    full_env = daemon_env(pg_url, schema, home / "jobd.sock", home, workers, env or {})
    running = DaemonProcess.start(
        full_env,
        cwd=home,
        log_path=home / "jobd.log",
        args=["--migrate"],
        max_descriptors=max_descriptors,
    )
    return Daemon(running, Path(full_env["JOBD_SOCKET"]), home, full_env)


@contextmanager
def running_daemon(
    pg_url: str,
    schema: str,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    keep_dir: bool = False,
    max_descriptors: int | None = None,
) -> Iterator[Daemon]:
    """A started, ready daemon; stopped with SIGTERM (exit 0 checked) when the block ends."""
    daemon = start_daemon(pg_url, schema, workers=workers, env=env, max_descriptors=max_descriptors)
    try:
        daemon.wait_ready()
        yield daemon
        daemon.stop(expect=0)
        assert not daemon.socket.exists(), "jobd left its socket behind"
    except BaseException:
        print(f"--- jobd's log ({daemon.log_path}) ---\n{daemon.log()[-20000:]}")
        raise
    finally:
        if daemon.running.exit_code() is None:  # the test failed: leave no daemon behind
            daemon.running.kill_all()
        if not keep_dir:
            shutil.rmtree(daemon.home, ignore_errors=True)


def run_jobctl(
    socket: Path | None, *args: str, input: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`python -m jobctl ARGS` with JOBD_SOCKET set to `socket` (None: unset)."""
    env = clean_environment()
    if socket is not None:
        env["JOBD_SOCKET"] = str(socket)
    return subprocess.run(
        [sys.executable, "-m", "jobctl", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
