"""A real `jobd run` for tests that talk to it over its control socket.

    with running_daemon(pg_url, schema) as daemon:
        daemon.client().submit("echo", {})
        run_jobctl(daemon, "stats")

The daemon is a subprocess (`python -m jobd.cli run --migrate`) on PostgreSQL, in an
environment of its own: only the JOBD_* variables given here, HOME and XDG folders in its own
directory.  Its socket lives in a short directory under /tmp (a Unix socket path must fit in
108 bytes, which pytest's tmp_path does not promise).  Ready means: it answers `hello`.
Leaving the block sends SIGTERM and checks it exits 0 and removes its socket.

Importable as `control_harness` (pytest puts tests/ on sys.path for the rootdir conftest).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobd.client import Client
from jobd.errors import Unavailable

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    socket: Path
    home: Path
    log_path: Path
    env: dict[str, str]

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"jobd exited with {self.process.returncode} before answering:\n{self.log()}"
                )
            try:
                with Client(self.socket, timeout=1.0) as client:
                    client.hello()
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"jobd did not answer hello within {timeout}s:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, expect: int | None = 0) -> int:
        """SIGTERM, then wait for the exit; check its status (unless `expect` is None)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            message = f"jobd did not stop within {STOP_TIMEOUT}s:\n{self.log()}"
            raise AssertionError(message) from None
        if expect is not None:
            assert code == expect, f"jobd exited {code}, expected {expect}:\n{self.log()}"
        return code


def short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="jobd", dir="/tmp"))


def daemon_env(
    pg_url: str, schema: str, socket: Path, home: Path, workers: int, extra: Mapping[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "XDG_"))}
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        env.pop(name, None)
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
        XDG_RUNTIME_DIR=str(home / "run"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(TESTS), env.get("PYTHONPATH")])),
        JOBD_DATABASE_URL=pg_url,
        JOBD_DATABASE_SCHEMA=schema,
        JOBD_SOCKET=str(socket),
        JOBD_WORKERS=str(workers),
        JOBD_HANDLER_MODULES="control_handlers",
        JOBD_LOGGING_LEVEL="DEBUG",
        JOBD_JOBS_POLL_INTERVAL="0.2",
    )
    env.update(extra)
    return env


def start_daemon(
    pg_url: str,
    schema: str,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> Daemon:
    """Start `jobd run --migrate` (not waiting for it to be ready)."""
    home = directory or short_dir()
    socket = home / "jobd.sock"
    full_env = daemon_env(pg_url, schema, socket, home, workers, env or {})
    log_path = home / "jobd.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobd.cli", "run", "--migrate"],
            cwd=home,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C at pytest's terminal is not the daemon's
        )
    return Daemon(process, Path(full_env["JOBD_SOCKET"]), home, log_path, full_env)


@contextmanager
def running_daemon(
    pg_url: str,
    schema: str,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    keep_dir: bool = False,
) -> Iterator[Daemon]:
    """A started, ready daemon; stopped with SIGTERM (exit 0 checked) when the block ends."""
    daemon = start_daemon(pg_url, schema, workers=workers, env=env)
    try:
        daemon.wait_ready()
        yield daemon
        daemon.stop(expect=0)
        assert not daemon.socket.exists(), "jobd left its socket behind"
    except BaseException:
        print(f"--- jobd's log ({daemon.log_path}) ---\n{daemon.log()[-20000:]}")
        raise
    finally:
        if daemon.process.poll() is None:  # the test failed: do not leave a daemon behind
            daemon.process.kill()
            daemon.process.wait()
        if not keep_dir:
            shutil.rmtree(daemon.home, ignore_errors=True)


def run_jobctl(
    socket: Path | None, *args: str, input: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`python -m jobctl ARGS` with JOBD_SOCKET set to `socket` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "XDG_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
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
