"""`jobd run` as a real subprocess, the way the integration tests, the control tests, the chaos
harness and the benchmarks start it.

    env = daemon_environment(home, {"JOBD_DATABASE_URL": url, "JOBD_SOCKET": str(socket)})
    daemon = DaemonProcess.start(env, cwd=home, log_path=home / "jobd.log", args=["--migrate"])
    daemon.wait_until(lambda: answers(socket), what="jobd to answer")
    ...
    assert daemon.stop() == 0

The environment is this process's, less everything that would point the daemon at the
developer's own jobd (JOBD_* settings, the XDG and systemd state and runtime folders, a service
manager's sockets), with HOME and the XDG folders moved into the daemon's own directory.
PYTHONPATH starts with this checkout, so the daemon runs the jobd under test; coverage's
variables stay, so `patch = ["subprocess"]` (pyproject.toml) measures the daemon too.

The daemon gets a session of its own: a Ctrl-C at the terminal reaches the test run, which stops
the daemon itself.  Its stdout and stderr go to one log file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from jobd.client import Client
from jobd.errors import JobdError
from tests.eventually import wait_for

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
LOG_TAIL = 20000  # characters of the log a failure shows

# Where a developer's (or a service manager's) jobd is configured or keeps its state.
DEVELOPER_PREFIXES = ("JOBD_", "XDG_")
DEVELOPER_VARIABLES = (
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)


def clean_environment(python_path: Sequence[Path] = ()) -> dict[str, str]:
    """This process's environment without the developer's jobd in it; PYTHONPATH is
    `python_path`, then this checkout, then the caller's own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(DEVELOPER_PREFIXES) and name not in DEVELOPER_VARIABLES
    }
    directories = [*map(str, python_path), str(ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, directories))
    return env


def daemon_environment(
    home: Path, settings: Mapping[str, str], python_path: Sequence[Path] = ()
) -> dict[str, str]:
    """A clean environment whose home is `home`, then `settings` (which win)."""
    env = clean_environment(python_path)
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
        XDG_RUNTIME_DIR=str(home / "run"),
    )
    env.update(settings)
    return env


def short_directory(prefix: str = "jobd") -> Path:
    """A new directory for a daemon's socket: a Unix socket path must fit in 108 bytes, which
    neither pytest's tmp_path nor a long TMPDIR promises."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def answers(socket: Path | str, timeout: float = 2.0) -> bool:
    """Whether a jobd answers `hello` on `socket` (the readiness the control tests wait for)."""
    try:
        with Client(socket, timeout=timeout) as client:
            return bool(client.hello().node)
    except JobdError:
        return False


class DaemonStuck(AssertionError):
    """The daemon did not exit within its bound after a signal; it has been killed.  `stacks`:
    where each of its threads was (DaemonProcess.stacks), taken before the kill."""

    def __init__(self, message: str, stacks: str = ""):
        super().__init__(message)
        self.stacks = stacks


@dataclass
class DaemonProcess:
    """One `jobd run` subprocess and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        env: Mapping[str, str],
        *,
        cwd: Path,
        log_path: Path,
        args: Sequence[str] = (),
        max_descriptors: int | None = None,
    ) -> DaemonProcess:
        """Start `jobd run ARGS`, not waiting for anything; `max_descriptors` is its soft
        RLIMIT_NOFILE (`ulimit -n`), as a service manager would set it."""
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "jobd.cli", "run", *args],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=None if max_descriptors is None else _descriptor_limit(max_descriptors),
            )
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        """None while it runs."""
        return self.process.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        return self.log()[-chars:]

    def wait_until(self, event: Callable[[], T], *, what: str, timeout: float = START_TIMEOUT) -> T:
        """Poll `event` until it holds and return it; the daemon exiting meanwhile fails at
        once, with its log."""

        def alive_and(event: Callable[[], T]) -> T:
            code = self.exit_code()
            if code is not None:
                raise AssertionError(f"jobd exited {code} before {what}:\n{self.log_tail()}")
            return event()

        return wait_for(lambda: alive_and(event), timeout, what)

    def send(self, signum: int) -> None:
        """Signal the supervisor, unless it has exited already."""
        if self.exit_code() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = STOP_TIMEOUT, signum: int = signal.SIGTERM) -> int:
        """Signal it (SIGTERM: drain) and wait for the exit; return its status.  Past
        `timeout` it and its workers are killed and DaemonStuck raised."""
        self.send(signum)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for an exit already asked for (a signal sent, a failing start)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = self.stacks()
            self.kill_all()
            raise DaemonStuck(
                f"jobd did not exit within {timeout}s:\n{self.log_tail()}", stacks
            ) from None

    def stacks(self, timeout: float = 5.0) -> str:
        """Every thread's Python stack, as the supervisor prints them on SIGUSR1 (appended to
        its log): what was printed once the log has stopped growing, or by `timeout`."""
        before = len(self.log())
        self.send(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        printed = ""
        while time.monotonic() < deadline and self.exit_code() is None:
            time.sleep(0.2)
            now = self.log()[before:]
            if now and now == printed:
                break
            printed = now
        return printed

    def kill(self) -> int:
        """SIGKILL the supervisor alone (a crash: its workers must notice) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        return self.process.wait()

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every process of its session: nothing left behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _descriptor_limit(soft: int) -> Callable[[], None]:
    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit
