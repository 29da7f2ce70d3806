"""The supervisor's side of its worker processes: starting them, talking to them, killing them,
and telling how they died.

Workers come from a `forkserver` context: the supervisor holds a connection pool, threads and an
event loop, none of which survive a plain fork safely, while the fork server is a small clean
process that has imported the handler modules once, so a replacement worker starts in
milliseconds.  With forkserver the workers are not our children for waitpid(): each one's
`Process.sentinel` becomes readable when it dies, and the event loop watches that.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from jobd import pipe
from jobd import worker as worker_module
from jobd.domain import Job
from jobd.jobspec import DEFAULT_MAX_RESULT_BYTES
from jobd.pipe import FromWorker, ToWorker

log = logging.getLogger("jobd.workers")


@dataclass
class StopRequest:
    """Why the supervisor is stopping a worker's running job, and how far it has got."""

    reason: str  # "cancel" | "timeout" | "drain"
    since: float  # monotonic time of the cooperative request
    stage: str = "asked"  # "asked" → "sigterm" → "sigkill"


@dataclass
class WorkerProcess:
    index: int
    process: BaseProcess  # a ForkServerProcess
    conn: Connection
    ready: bool = False
    retiring: bool = False
    assigned: dict[int, Job] = field(default_factory=dict)  # sent, not finished (in order)
    running: int | None = None  # the job it announced it started
    started_at: float = 0.0
    stop: StopRequest | None = None
    cancelled: set[int] = field(default_factory=set)  # cancelled before they started
    jobs_done: int = 0
    inbox: pipe.Inbox = field(init=False)  # what it sent us, read in bursts

    def __post_init__(self) -> None:
        self.inbox = pipe.Inbox(self.conn)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, message: ToWorker) -> bool:
        """Send a message; False if the worker is already gone (its sentinel will say so)."""
        try:
            pipe.send(self.conn, message)
            return True
        except (OSError, ValueError):
            return False

    def receive(self) -> FromWorker:
        return pipe.receive_from_worker(self.conn)

    def receive_all(self) -> tuple[list[FromWorker], bool]:
        """Every message sent so far, and whether the worker closed its end (Inbox.read)."""
        return self.inbox.read()

    def close(self) -> None:
        self.inbox.close()
        self.conn.close()
        self.process.close()

    def signal_group(self, signum: int) -> None:
        """Signal the worker's process group: its handler's subprocesses go with it."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:  # not (yet) a group leader: signal the process itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def state(self) -> str:
        if not self.ready:
            return "starting"
        if self.running is not None:
            return "stopping" if self.stop else "busy"
        return "retiring" if self.retiring else "idle"


class WorkerFactory:
    """Starts worker processes through one fork server with the handler modules preloaded."""

    def __init__(
        self,
        modules: list[str],
        *,
        max_jobs: int = 0,
        max_memory: int = 0,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        setup_logging: Callable[[], None] | None = None,
    ):
        self.modules = list(modules)
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.max_result_bytes = max_result_bytes
        self.setup_logging = setup_logging
        self.context = multiprocessing.get_context("forkserver")
        # Import failures in the preload are ignored by the fork server; each worker imports
        # the modules again (a no-op when preloaded) and exits with BOOT_ERROR if one fails.
        self.context.set_forkserver_preload(
            ["jobd.forkserver", "jobd.worker", *_main_module(), *self.modules]
        )

    def spawn(self, index: int) -> WorkerProcess:
        parent_end, child_end = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=worker_module.main,
            kwargs={
                "index": index,
                "conn": child_end,
                "modules": self.modules,
                "max_jobs": self.max_jobs,
                "max_memory": self.max_memory,
                "setup_logging": self.setup_logging,
                "max_result_bytes": self.max_result_bytes,
            },
            name=f"jobd-worker-{index}",
            daemon=False,
        )
        process.start()
        child_end.close()  # only the worker holds it now: its death gives us EOF
        return WorkerProcess(index, process, parent_end)


def _main_module() -> list[str]:
    """What the fork server must preload so that a worker does not import the daemon again.

    multiprocessing re-runs the parent's main module in every child it starts, to mirror the
    parent's __main__: by path for a script (the installed `jobd`), by name under `python -m
    jobd.cli`.  The fork server preloads the script when told "__main__", and a module named
    in its list; without either, each new worker imported the whole daemon (click, psycopg,
    the HTTP shim...) before it could take a job (measured: 138 ms from a worker's SIGKILL
    to a job running in its replacement, 21 ms with the main module preloaded)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return ["__main__", name] if name else ["__main__"]


def describe_exit(exitcode: int | None, stopped_by_us: bool = False) -> str:
    """A worker's exit status in words: 'exited with code 3', 'killed by SIGSEGV', ..."""
    if exitcode is None:
        return "exited with an unknown status"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    signum = -exitcode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL and not stopped_by_us:
        return "killed by SIGKILL (perhaps out of memory)"
    return f"killed by {name}"


def resident_memory_of(pid: int | None) -> int | None:
    """Resident set size of another process, in bytes (None where unknown)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
