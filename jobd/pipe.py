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
import os
import pickle
import socket
import struct
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


class Inbox:
    """The supervisor's reading end of one worker's pipe: every message the worker has written
    so far, in one non-blocking read, instead of a poll and two reads per message through
    `Connection.recv` (a worker writes a message per job: at thousands of jobs a second those
    system calls were a tenth of the supervisor's CPU).

    The frames are multiprocessing's, as `Connection.send` writes them: a 4-byte big-endian
    length (-1, then an 8-byte length, past 2 GiB), then the pickle.  The pipe is a socket
    pair; the inbox reads its own duplicate of the descriptor, without changing the blocking
    mode the sends rely on."""

    CHUNK = 1 << 16

    def __init__(self, conn: Connection):
        self._socket = socket.socket(fileno=os.dup(conn.fileno()))
        self._buffer = bytearray()

    def read(self) -> tuple[list[FromWorker], bool]:
        """The messages complete so far, and whether the worker has closed its end (EOF).
        OSError if the pipe broke."""
        closed = False
        while True:
            try:
                chunk = self._socket.recv(self.CHUNK, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                closed = True
                break
            self._buffer += chunk
            if len(chunk) < self.CHUNK:
                break
        return self._messages(), closed

    def _messages(self) -> list[FromWorker]:
        buffer, at, messages = self._buffer, 0, []
        while len(buffer) - at >= 4:
            (size,), head = struct.unpack_from("!i", buffer, at), 4
            if size == -1:
                if len(buffer) - at < 12:
                    break
                (size,), head = struct.unpack_from("!Q", buffer, at + 4), 12
            end = at + head + size
            if end > len(buffer):
                break
            messages.append(decode(pickle.loads(memoryview(buffer)[at + head : end])))
            at = end
        del buffer[:at]
        return messages

    def close(self) -> None:
        self._socket.close()


def receive_from_supervisor(conn: Connection) -> ToWorker:
    message: ToWorker = decode(conn.recv())
    return message
