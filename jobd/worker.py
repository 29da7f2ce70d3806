"""The worker process: runs one job at a time, handed over its own pipe by the supervisor.

Two threads share the pipe.  The reader thread receives messages — jobs go into a local inbox,
cancel and stop requests take effect at once — while the main thread runs handlers.  The main
thread announces every job it takes from the inbox (Started) before running it, so when the
process dies the supervisor knows exactly which job killed it; a job still in the inbox at that
point never started and goes back untouched.

The messages and their order are in jobd.pipe.
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
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from setproctitle import setproctitle

from jobd import garbage_collection, logs, pipe
from jobd.context import JobCancelled, JobContext, ParentResultsUnavailable
from jobd.domain import ErrorInfo, PermanentError, RetryLater
from jobd.handlers import HandlerImportError, Registry, load_modules
from jobd.jobspec import DEFAULT_MAX_RESULT_BYTES
from jobd.pipe import (
    AskParents,
    Cancel,
    Done,
    Failed,
    Failure,
    FailureKind,
    FromWorker,
    Many,
    ParentResults,
    Progress,
    Ready,
    Released,
    Report,
    Retiring,
    Run,
    RunJob,
    Started,
    Stop,
)
from jobd.progress import ProgressThrottle

log = logging.getLogger("jobd.worker")

MAX_TRACEBACK = 16 * 1024


class ResultTooLarge(PermanentError):
    """The handler returned a result over jobs.max_result_bytes: the attempt fails for good
    (another attempt would return as much); last_error.type names this class."""


#: Exit status of a worker whose handler modules failed to import: the supervisor halts on it
#: instead of starting replacement after replacement (gunicorn's WORKER_BOOT_ERROR).
BOOT_ERROR = 3
#: How long a worker whose supervisor vanished lets its current job wind down.
ORPHAN_GRACE = 5.0
#: How often a handler waiting for its parents' results looks whether it must stop.
ANSWER_POLL = 0.1


class _NothingQueued:
    """The inbox holds no job right now (None in the inbox means: stop)."""


_NOTHING_QUEUED = _NothingQueued()


def main(
    index: int,
    conn: Connection,
    modules: list[str],
    max_jobs: int = 0,
    max_memory: int = 0,
    setup_logging: Callable[[], None] | None = None,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
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
    garbage_collection.settle(collect_first=False)
    Worker(index, conn, registry, max_jobs, max_memory, max_result_bytes).run()


class Worker:
    def __init__(
        self,
        index: int,
        conn: Connection,
        registry: Registry,
        max_jobs: int,
        max_memory: int,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ):
        self.index = index
        self.conn = conn
        self.registry = registry
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.max_result_bytes = max_result_bytes
        self.jobs_done = 0
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[RunJob | None] = queue.SimpleQueue()
        self._state_lock = threading.Lock()
        self._current: tuple[int, threading.Event] | None = None
        self._cancelled: set[int] = set()
        self._stopping = False
        self._answers: queue.SimpleQueue[ParentResults] = queue.SimpleQueue()

    # --- the main thread ----------------------------------------------------------------

    def run(self) -> None:
        self._title("idle")
        threading.Thread(target=self._read, name="jobd-worker-reader", daemon=True).start()
        self.send(Ready(os.getpid()))
        report: Report | None = None  # how the last job ended, not sent yet
        while True:
            job = self._next_job(report)
            if not isinstance(job, RunJob):  # say how the last job ended first
                if report is not None:
                    self.send(report)
                    report = None
                if job is None:
                    break
                self._title("idle")
                continue
            report = self._run_one(job, report)
            reason = self._retire_reason()
            if reason:
                if report is not None:
                    self.send(report)
                self.send(Retiring(reason))
                self._stop()
                break
        self.conn.close()

    def _next_job(self, report: Report | None) -> RunJob | _NothingQueued | None:
        """The next job (None: stop).  While a report waits to be sent, only a job already
        queued is taken, so the report goes out with its Started in one message."""
        if report is None:
            return self._inbox.get()
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return _NOTHING_QUEUED

    def _run_one(self, job: RunJob, report: Report | None) -> Report | None:
        """Run one job; returns its report (Done or Failed; None if it was given back), for
        the caller to send.  `report` (the previous job's) travels with this job's Started
        (or its Released)."""
        job_id = job.job_id
        stop = threading.Event()
        with self._state_lock:
            if self._stopping:
                self._say(report, Released(job_id))
                return None
            self._current = (job_id, stop)
            if job_id in self._cancelled:
                stop.set()
        self._say(report, Started(job_id))
        self._title(f"running {job.type}#{job_id}")
        progress = ProgressThrottle(lambda data: self.send(Progress(job_id, data)))
        ctx = job.context(stop, progress.report, lambda: self._parent_results(job_id, stop))
        logs.bind_job({**ctx.log_fields(), "worker": self.index})
        try:
            return Done(job_id, self._call(ctx, job.payload))
        except BaseException as exc:  # every failure is reported, never raised
            return Failed(job_id, describe_failure(exc, stop.is_set()))
        finally:
            progress.flush()  # the last report, ahead of the job's end
            logs.bind_job(None)
            with self._state_lock:
                self._current = None
                self._cancelled.discard(job_id)
            self.jobs_done += 1

    def _say(self, report: Report | None, message: Report) -> None:
        """Send `message`, with the previous job's report ahead of it in one message: one
        write and one wake-up of the supervisor per job instead of two."""
        self.send(message if report is None else Many((report, message)))

    def _call(self, ctx: JobContext, payload: dict[str, Any]) -> Any:
        spec = self.registry.get(ctx.type)
        if spec is None:
            known = ", ".join(self.registry.types())
            raise PermanentError(f"unknown job type {ctx.type!r} (this node runs: {known})")
        ctx.check_cancelled()
        result = spec.fn(ctx, payload)
        try:
            encoded = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"the handler's result is not JSON: {exc}") from None
        # Checked here, in the worker, so that an oversized result never crosses the pipe nor
        # reaches the supervisor's loop or the database.
        # A character is at most 4 bytes of UTF-8: most results need no encoding to be sized.
        if len(encoded) * 4 > self.max_result_bytes and (
            len(encoded.encode()) > self.max_result_bytes
        ):
            raise ResultTooLarge(
                f"the handler's result is {len(encoded.encode())} bytes of JSON, over"
                f" jobs.max_result_bytes ({self.max_result_bytes})"
            )
        return result

    def _parent_results(self, job_id: int, stop: threading.Event) -> dict[int, Any]:
        """Ask the supervisor for the job's parents' results and wait for its answer (the
        reader thread queues it), giving up when the job is asked to stop."""
        self.send(AskParents(job_id))
        while True:
            try:
                answer = self._answers.get(timeout=ANSWER_POLL)
            except queue.Empty:
                if stop.is_set():
                    raise JobCancelled(f"job {job_id} was asked to stop") from None
                continue
            if answer.job_id != job_id:
                continue  # an answer to an earlier job's question, come too late
            if answer.error is not None:
                raise ParentResultsUnavailable(answer.error)
            return answer.results

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
                match pipe.receive_from_supervisor(self.conn):
                    case Run(jobs):
                        for job in jobs:
                            self._take(job)
                    case Cancel(job_id):
                        self._cancel(job_id)
                    case Stop():
                        self._stop()
                    case ParentResults() as answer:
                        self._answers.put(answer)
        except (EOFError, OSError):
            self._orphaned()

    def _take(self, job: RunJob) -> None:
        with self._state_lock:
            stopping = self._stopping
        if stopping:  # leaving: it goes straight back
            self.send(Released(job.job_id))
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
                self.send(Released(job.job_id))
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

    def send(self, message: FromWorker) -> None:
        try:
            with self._send_lock:
                pipe.send(self.conn, message)
        except (OSError, ValueError):
            pass  # the supervisor is gone; the reader thread notices and winds down

    def _title(self, what: str) -> None:
        setproctitle(f"jobd: worker {self.index} {what}")


def describe_failure(exc: BaseException, stop_requested: bool) -> Failure:
    """A handler's exception as data: its kind, the error, and the delay a RetryLater asks."""
    error_type = type(exc).__name__
    message = str(exc) or error_type
    if isinstance(exc, JobCancelled) or (stop_requested and isinstance(exc, KeyboardInterrupt)):
        return Failure(FailureKind.CANCELLED, ErrorInfo(error_type, message))
    if isinstance(exc, RetryLater):
        return Failure(FailureKind.RETRY, ErrorInfo(error_type, message), exc.delay)
    tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
    kind = FailureKind.PERMANENT if isinstance(exc, PermanentError) else FailureKind.ERROR
    return Failure(kind, ErrorInfo(error_type, message, tb))


def resident_memory() -> int:
    """This process's resident set size in bytes (peak, where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
