"""The worker process: runs one job at a time, handed over its own pipe by the supervisor.

Two threads share the pipe.  The reader thread receives messages — jobs go into a local inbox,
cancel and stop requests take effect at once — while the main thread runs handlers.  The main
thread announces every job it takes from the inbox ("start") before running it, so when the
process dies the supervisor knows exactly which job killed it; a job still in the inbox at that
point never started and goes back untouched.

Messages, supervisor → worker (tuples, pickled by multiprocessing):
    ("run", job, job, ...)  jobs to run in this order, each a tuple
                            (job_id, attempt, max_attempts, type, queue, payload,
                             correlation_id, timeout); several travel in one message
    ("cancel", job_id)      stop that job (cancel, timeout or drain): ctx.cancelled becomes true
    ("stop",)               give back every job not started, finish the current one, then exit
Worker → supervisor:
    ("ready", pid)
    ("start", job_id)
    ("done", job_id, result)
    ("fail", job_id, kind, error_type, message, traceback, retry_delay)
                            kind: "error" | "permanent" | "retry" | "cancelled"
    ("released", job_id)    a job given back without being started
    ("progress", job_id, data)
    ("many", message, message, ...)
                            several of the above in order: a job's "done" or "fail" travels
                            with the next job's "start" when that job was already queued
    ("retiring", reason)    the worker leaves after its current job (recycling)
"""

from __future__ import annotations

import json
import logging
import os
import queue
import resource
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from setproctitle import setproctitle

from jobd import logs
from jobd.context import JobCancelled, JobContext
from jobd.domain import PermanentError, RetryLater
from jobd.handlers import HandlerImportError, Registry, load_modules

log = logging.getLogger("jobd.worker")

MAX_TRACEBACK = 16 * 1024
#: Exit status of a worker whose handler modules failed to import: the supervisor halts on it
#: instead of starting replacement after replacement (gunicorn's WORKER_BOOT_ERROR).
BOOT_ERROR = 3
#: How long a worker whose supervisor vanished lets its current job wind down.
ORPHAN_GRACE = 5.0
_NOTHING_QUEUED = object()


def main(
    index: int,
    conn: Connection,
    modules: list[str],
    max_jobs: int = 0,
    max_memory: int = 0,
    setup_logging: Any = None,
) -> None:
    """Entry point of a worker process (started by the supervisor's forkserver context)."""
    os.setpgid(0, 0)  # own process group: a hard kill also takes the handler's children
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if setup_logging is not None:
        setup_logging()
    try:
        registry = load_modules(modules)
    except HandlerImportError as exc:
        print(f"jobd worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(BOOT_ERROR)
    Worker(index, conn, registry, max_jobs, max_memory).run()


class Worker:
    def __init__(
        self, index: int, conn: Connection, registry: Registry, max_jobs: int, max_memory: int
    ):
        self.index = index
        self.conn = conn
        self.registry = registry
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.jobs_done = 0
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._state_lock = threading.Lock()
        self._current: tuple[int, threading.Event] | None = None
        self._cancelled: set[int] = set()
        self._stopping = False

    # --- the main thread ----------------------------------------------------------------

    def run(self) -> None:
        self._title("idle")
        threading.Thread(target=self._read, name="jobd-worker-reader", daemon=True).start()
        self.send("ready", os.getpid())
        report: tuple | None = None  # how the last job ended, not sent yet
        while True:
            job = self._next_job(report)
            if job is None or job is _NOTHING_QUEUED:  # say how the last job ended first
                if report is not None:
                    self.send(*report)
                    report = None
                if job is None:
                    break
                self._title("idle")
                continue
            report = self._run_one(job, report)
            reason = self._retire_reason()
            if reason:
                if report is not None:
                    self.send(*report)
                self.send("retiring", reason)
                self._stop()
                break
        self.conn.close()

    def _next_job(self, report: tuple | None) -> Any:
        """The next job (None: stop).  While a report waits to be sent, only a job already
        queued is taken, so the report goes out with its "start" in one message."""
        if report is None:
            return self._inbox.get()
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return _NOTHING_QUEUED

    def _run_one(self, job: tuple, report: tuple | None) -> tuple | None:
        """Run one job; returns its report ("done" or "fail"; None if it was given back),
        for the caller to send.  `report` (the previous job's) travels with this job's
        "start" (or its "released")."""
        job_id, attempt, max_attempts, job_type, queue_name, payload, corr, timeout = job
        stop = threading.Event()
        with self._state_lock:
            if self._stopping:
                self._say(report, ("released", job_id))
                return None
            self._current = (job_id, stop)
            if job_id in self._cancelled:
                stop.set()
        self._say(report, ("start", job_id))
        self._title(f"running {job_type}#{job_id}")
        logs.bind_job(
            {
                "job_id": job_id,
                "job_type": job_type,
                "attempt": attempt,
                "queue": queue_name,
                "correlation_id": corr,
                "worker": self.index,
            }
        )
        ctx = JobContext(
            job_id,
            job_type,
            attempt,
            max_attempts,
            queue_name,
            corr,
            timeout,
            stop,
            lambda data: self.send("progress", job_id, data),
        )
        try:
            return ("done", job_id, self._call(ctx, payload))
        except BaseException as exc:  # every failure is reported, never raised
            return ("fail", job_id, *describe_failure(exc, stop.is_set()))
        finally:
            logs.bind_job(None)
            with self._state_lock:
                self._current = None
                self._cancelled.discard(job_id)
            self.jobs_done += 1

    def _say(self, report: tuple | None, message: tuple) -> None:
        """Send `message`, with the previous job's report ahead of it in one message: one
        write and one wake-up of the supervisor per job instead of two."""
        if report is None:
            self.send(*message)
        else:
            self.send("many", report, message)

    def _call(self, ctx: JobContext, payload: dict[str, Any]) -> Any:
        spec = self.registry.get(ctx.type)
        if spec is None:
            known = ", ".join(self.registry.types())
            raise PermanentError(f"unknown job type {ctx.type!r} (this node runs: {known})")
        ctx.check_cancelled()
        result = spec.fn(ctx, payload)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"the handler's result is not JSON: {exc}") from None
        return result

    def _retire_reason(self) -> str | None:
        if self.max_jobs and self.jobs_done >= self.max_jobs:
            return f"ran {self.jobs_done} jobs (workers.max_jobs_per_worker)"
        if self.max_memory:
            rss = resident_memory()
            if rss > self.max_memory:
                return f"RSS {rss} bytes is over workers.max_memory ({self.max_memory})"
        return None

    # --- the reader thread ----------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                kind = message[0]
                if kind == "run":
                    for job in message[1:]:
                        self._take(job)
                elif kind == "cancel":
                    self._cancel(message[1])
                elif kind == "stop":
                    self._stop()
        except (EOFError, OSError):
            self._orphaned()

    def _take(self, job: tuple) -> None:
        with self._state_lock:
            stopping = self._stopping
        if stopping:  # leaving: it goes straight back
            self.send("released", job[0])
        else:
            self._inbox.put(job)

    def _cancel(self, job_id: int) -> None:
        with self._state_lock:
            self._cancelled.add(job_id)
            if self._current is not None and self._current[0] == job_id:
                self._current[1].set()

    def _stop(self) -> None:
        """Give back every job not started yet; the main thread exits after its current one."""
        with self._state_lock:
            if self._stopping:
                return
            self._stopping = True
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.send("released", job[0])
        self._inbox.put(None)

    def _orphaned(self) -> None:
        """The supervisor is gone: nobody can take results any more.  Stop the current job and
        leave; the jobs' leases expire and another supervisor runs them again."""
        with self._state_lock:
            self._stopping = True
            if self._current is not None:
                self._current[1].set()
        self._inbox.put(None)
        timer = threading.Timer(ORPHAN_GRACE, os._exit, args=(1,))
        timer.daemon = True
        timer.start()

    # --- helpers ------------------------------------------------------------------------

    def send(self, *message: Any) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except (OSError, ValueError):
            pass  # the supervisor is gone; the reader thread notices and winds down

    def _title(self, what: str) -> None:
        setproctitle(f"jobd: worker {self.index} {what}")


def describe_failure(
    exc: BaseException, stop_requested: bool
) -> tuple[str, str, str, str | None, float | None]:
    """(kind, error type, message, traceback, retry delay) of a handler's exception."""
    error_type = type(exc).__name__
    message = str(exc) or error_type
    tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
    if isinstance(exc, JobCancelled) or (stop_requested and isinstance(exc, KeyboardInterrupt)):
        return "cancelled", error_type, message, None, None
    if isinstance(exc, PermanentError):
        return "permanent", error_type, message, tb, None
    if isinstance(exc, RetryLater):
        return "retry", error_type, message, None, exc.delay
    return "error", error_type, message, tb, None


def resident_memory() -> int:
    """This process's resident set size in bytes (peak, where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
