"""The messages on the pipe between the supervisor and one of its workers.

Each message is a small named tuple (immutable, cheap to build); both ends `match` on the
class.  Several messages may travel in one write (`Run` carries several jobs, `Many` several
reports): one write and one wake-up of the reader instead of several (ADR 0020).  On the wire
a message is a plain tuple (see `encode`).

Supervisor → worker: `Run` (jobs to run in this order), `Cancel` (stop that job: cancel,
timeout or drain), `Stop` (give back every job not started, finish the current one, exit),
`ParentResults` (the answer to an `AskParents`).

Worker → supervisor: `Ready`, `Started` (announced before the handler is called, so a death
names its job), `Done`, `Failed`, `Released` (given back unstarted), `Progress`, `Retiring`
(recycling: it leaves after its current job), `AskParents` (the running handler called
`ctx.parent_results()`), and `Many` (several of these in order: a job's report travels with
the next job's `Started` when that job was already queued).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from jobd.context import JobContext
from jobd.domain import ErrorInfo


class RunJob(NamedTuple):
    """One job as a worker receives it: what its handler's context needs, and its payload."""

    job_id: int
    attempt: int
    max_attempts: int
    type: str
    queue: str
    payload: dict[str, Any]
    correlation_id: str | None
    timeout: float | None

    def context(
        self,
        stop: threading.Event,
        progress: Callable[[Any], None],
        parent_results: Callable[[], dict[int, Any]] = dict,
    ) -> JobContext:
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
            _parent_results=parent_results,
        )


# --- supervisor → worker ----------------------------------------------------------------


class Run(NamedTuple):
    jobs: tuple[RunJob, ...]


class Cancel(NamedTuple):
    job_id: int


class Stop(NamedTuple):
    pass


class ParentResults(NamedTuple):
    """The results of job `job_id`'s parents, or why they could not be read (`error`)."""

    job_id: int
    results: dict[int, Any]
    error: str | None = None


ToWorker = Run | Cancel | Stop | ParentResults


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


class Ready(NamedTuple):
    pid: int


class Started(NamedTuple):
    job_id: int


class Done(NamedTuple):
    job_id: int
    result: Any


class Failed(NamedTuple):
    job_id: int
    failure: Failure


class Released(NamedTuple):
    job_id: int


class Progress(NamedTuple):
    job_id: int
    data: Any


class Retiring(NamedTuple):
    reason: str


class AskParents(NamedTuple):
    """The handler of running job `job_id` asks for its parents' results."""

    job_id: int


Report = Ready | Started | Done | Failed | Released | Progress | Retiring | AskParents


class Many(NamedTuple):
    messages: tuple[Report, ...]


FromWorker = Report | Many


# --- the wire form --------------------------------------------------------------------------
#
# Each message is pickled as a plain tuple: a small number naming its class, then its fields.
# Pickled as themselves, the classes would cost a class lookup per object at both ends
# (measured: 11 us to pickle and unpickle a Many of a Done and a Started, 0.6 us as tuples), and
# every job crosses a pipe three times.  A Failure travels as itself: failures are rare.

_WIRE: tuple[type, ...] = (
    RunJob,
    Run,
    Cancel,
    Stop,
    Ready,
    Started,
    Done,
    Failed,
    Released,
    Progress,
    Retiring,
    Many,
    ParentResults,
    AskParents,
)
_TAG = {cls: tag for tag, cls in enumerate(_WIRE)}
_RUN, _MANY = _TAG[Run], _TAG[Many]


def encode(message: ToWorker | FromWorker) -> tuple[Any, ...]:
    if isinstance(message, Run):
        return (_RUN, *map(tuple, message.jobs))
    if isinstance(message, Many):
        return (_MANY, *map(encode, message.messages))
    return (_TAG[type(message)], *message)


def decode(wire: tuple[Any, ...]) -> Any:
    """The message `encode` made `wire` of (callers know which direction it came from)."""
    tag = wire[0]
    if tag == _RUN:
        return Run(tuple(RunJob._make(job) for job in wire[1:]))
    if tag == _MANY:
        return Many(tuple(map(decode, wire[1:])))
    return _WIRE[tag]._make(wire[1:])


def send(conn: Connection, message: ToWorker | FromWorker) -> None:
    conn.send(encode(message))


def receive_from_worker(conn: Connection) -> FromWorker:
    message: FromWorker = decode(conn.recv())
    return message


def receive_from_supervisor(conn: Connection) -> ToWorker:
    message: ToWorker = decode(conn.recv())
    return message
