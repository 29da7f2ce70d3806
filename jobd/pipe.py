"""The messages on the pipe between the supervisor and one of its workers.

Each message is a small frozen dataclass, pickled by multiprocessing; both ends `match` on the
class.  Several messages may travel in one write (`Run` carries several jobs, `Many` several
reports): one write and one wake-up of the reader instead of several (ADR 0020).

Supervisor → worker: `Run` (jobs to run in this order), `Cancel` (stop that job: cancel,
timeout or drain), `Stop` (give back every job not started, finish the current one, exit).

Worker → supervisor: `Ready`, `Started` (announced before the handler is called, so a death
names its job), `Done`, `Failed`, `Released` (given back unstarted), `Progress`, `Retiring`
(recycling: it leaves after its current job), and `Many` (several of these in order: a job's
report travels with the next job's `Started` when that job was already queued).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobd.context import JobContext
from jobd.domain import ErrorInfo


@dataclass(frozen=True, slots=True)
class RunJob:
    """One job as a worker receives it: what its handler's context needs, and its payload."""

    job_id: int
    attempt: int
    max_attempts: int
    type: str
    queue: str
    payload: dict[str, Any]
    correlation_id: str | None
    timeout: float | None

    def context(self, stop: threading.Event, progress: Callable[[Any], None]) -> JobContext:
        return JobContext(
            job_id=self.job_id,
            type=self.type,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            queue=self.queue,
            correlation_id=self.correlation_id,
            timeout=self.timeout,
            _stop=stop,
            _report_progress=progress,
        )


# --- supervisor → worker ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    jobs: tuple[RunJob, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    job_id: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


ToWorker = Run | Cancel | Stop


# --- worker → supervisor ----------------------------------------------------------------


class FailureKind(enum.Enum):
    ERROR = "error"  # an exception: retried after the backoff while attempts are left
    PERMANENT = "permanent"  # PermanentError: never retried
    RETRY = "retry"  # RetryLater: retried after the delay the handler asked for
    CANCELLED = "cancelled"  # the handler stopped on JobCancelled (or Ctrl-C once asked to)


@dataclass(frozen=True, slots=True)
class Failure:
    """How a handler failed, as data: the supervisor decides the outcome from it."""

    kind: FailureKind
    error: ErrorInfo
    retry_delay: float | None = None  # FailureKind.RETRY only


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class Started:
    job_id: int


@dataclass(frozen=True, slots=True)
class Done:
    job_id: int
    result: Any


@dataclass(frozen=True, slots=True)
class Failed:
    job_id: int
    failure: Failure


@dataclass(frozen=True, slots=True)
class Released:
    job_id: int


@dataclass(frozen=True, slots=True)
class Progress:
    job_id: int
    data: Any


@dataclass(frozen=True, slots=True)
class Retiring:
    reason: str


Report = Ready | Started | Done | Failed | Released | Progress | Retiring


@dataclass(frozen=True, slots=True)
class Many:
    messages: tuple[Report, ...]


FromWorker = Report | Many
