"""A small synchronous client of the control protocol: what jobctl, the HTTP shim and
application code use to talk to a running jobd.

    from jobd import Client

    with Client() as client:                       # $JOBD_SOCKET, or the default socket
        job = client.submit("send_email", {"to": "a@example.com"}).job
        done = client.wait(job.id, timeout=60).job
        print(done.state, done.result)

One method per protocol method, each returning typed values (jobs as jobd.protocol.JobView, the
rest as the small dataclasses below).  Replies only gain members as the daemon evolves, so what
this version does not know -- a new state, a new member -- is carried through, not refused.
Errors are the exceptions of jobd.errors, rebuilt from the wire code: `NotFound`, `Conflict`,
`UnknownType`, … each carrying `.code`, `.message` and `.data`.  A daemon that cannot be reached
raises `DaemonUnreachable` naming the socket.

One connection per Client, opened on first use and kept; calls from several threads take turns
on it.  A read-only call (get, list, wait, …) that finds its kept connection dropped -- the daemon
restarted -- is sent once more on a fresh one; a submit, cancel or retry never is, since the
daemon may have acted on it before the connection broke.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

from jobd.errors import (
    DaemonUnreachable,
    InvalidParams,
    InvalidRequest,
    JobdError,
    Unavailable,
)
from jobd.jobspec import (
    SUBMIT_FIELDS,
    SubmitOptions,
    in_batch,
    parse_job_spec,
    unknown_fields,
)
from jobd.protocol import (
    METHODS,
    JobView,
    encode,
    job_from_dict,
    parse_reply,
    request,
)

SOCKET_ENV = "JOBD_SOCKET"
SYSTEM_SOCKET = Path("/run/jobd/jobd.sock")  # jobd.service's RuntimeDirectory=jobd
CONFIG_ENV = "JOBD_CONFIG"
DEFAULT_TIMEOUT = 30.0
WAIT_CHUNK = 300.0  # a wait with no timeout is sent as waits of this long, one after another
_WAIT_MARGIN = 10.0  # a wait's reply may take this much longer than its timeout


def default_socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where jobd listens: $JOBD_SOCKET, else control.socket of the file in $JOBD_CONFIG, else
    the default `jobd run` uses (jobd.config.default_socket_path) if a socket is there, else
    the system service's socket if one is there (an operator's shell has no RUNTIME_DIRECTORY),
    else that default."""
    explicit = env.get(SOCKET_ENV)
    if explicit:
        return Path(explicit)
    configured = _socket_in_config_file(env.get(CONFIG_ENV))
    if configured:
        return configured
    from jobd.config import default_socket_path as computed

    default = computed(env)
    if not default.exists() and SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    return default


def _socket_in_config_file(path: str | None) -> Path | None:
    """control.socket from the YAML file, best effort: a file jobctl cannot read is the
    daemon's problem to report, not jobctl's."""
    if not path:
        return None
    try:
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        value = (data or {}).get("control", {}).get("socket")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return Path(value) if isinstance(value, str) and value else None


# --- typed results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    job: JobView
    created: bool  # False: the idempotency key was taken; `job` is the job holding it


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobView]
    next_cursor: str | None  # pass as `cursor` with the same filters; None: this was the last


@dataclass(frozen=True)
class WaitResult:
    job: JobView
    timed_out: bool  # True: the daemon says the job had not finished when the timeout passed


class ListFilters(TypedDict, total=False):
    """The filters of `list` and `iter_jobs`; a job must match every one given."""

    state: str | Iterable[str] | None  # one state name or several
    type: str | None
    queue: str | None
    created_after: datetime | str | None  # a datetime with a time zone, or ISO-8601 text
    created_before: datetime | str | None
    schedule: str | None  # the jobs this schedule created
    workflow: int | None  # the jobs linked to this job id through `after`, either way


@dataclass(frozen=True)
class Batch:
    """A submit_many's answer: each job as submitted, and the id of each name the batch gave."""

    results: list[SubmitResult]
    names: dict[str, int]


@dataclass(frozen=True)
class SubmittedIds:
    """A submit_many answered with ids only (`Client.submit_ids`): each job's id in the order
    given, whether it was created (False: its idempotency key named a job that existed), and
    the id of each name the batch gave."""

    ids: list[int]
    created: list[bool]
    names: dict[str, int]


@dataclass(frozen=True)
class Hello:
    protocol: int
    server: str
    methods: list[str]
    node: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    pid: int | None
    state: str  # starting | idle | busy | stopping | retiring
    job_id: int | None
    jobs_done: int
    rss: int | None  # bytes
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerInfo:
        return cls(
            index=data.get("index", 0),
            pid=data.get("pid"),
            state=data.get("state", "unknown"),
            job_id=data.get("job_id"),
            jobs_done=data.get("jobs_done", 0),
            rss=data.get("rss"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Stats:
    node: str
    uptime: float  # seconds
    draining: bool
    by_state: dict[str, int]
    by_queue: dict[str, dict[str, int]]  # queue -> state -> count
    by_type: dict[str, dict[str, int]]  # type -> state -> count
    workers: dict[str, int]  # busy, idle, total, expected
    counters: dict[str, int]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        jobs = data.get("jobs", {})
        return cls(
            node=data.get("node", ""),
            uptime=data.get("uptime", 0.0),
            draining=data.get("draining", False),
            by_state=jobs.get("by_state", {}),
            by_queue=jobs.get("by_queue", {}),
            by_type=jobs.get("by_type", {}),
            workers=data.get("workers", {}),
            counters=data.get("counters", {}),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Health:
    status: str  # ok | degraded
    store: str  # ok | unavailable
    workers_ready: int
    workers_expected: int
    draining: bool
    problems: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Health:
        workers = data.get("workers", {})
        return cls(
            status=data.get("status", "degraded"),
            store=data.get("store", "unavailable"),
            workers_ready=workers.get("ready", 0),
            workers_expected=workers.get("expected", 0),
            draining=data.get("draining", False),
            problems=list(data.get("problems", [])),
            raw=dict(data),
        )


# --- the client ---------------------------------------------------------------------------------


class Client:
    """A connection to one jobd.  `timeout` bounds each call (a wait gets its own timeout on
    top); None waits for ever."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ):
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None  # the socket's buffered reader
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    # --- the protocol's methods ---------------------------------------------------------------

    def hello(self) -> Hello:
        raw = self.call("hello")
        return Hello(raw["protocol"], raw["server"], list(raw["methods"]), raw.get("node"), raw)

    def submit(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> SubmitResult:
        """Submit one job.  `run_at` (a datetime with a time zone, or ISO-8601 text) or `delay`
        (seconds) postpone it; options left None take the handler's or the daemon's default.
        The job is checked here as the daemon checks it (jobd.jobspec) before it is sent."""
        return _submit_result(self.call("submit", job_params(type, payload, **options)))

    def submit_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[SubmitResult]:
        """Submit up to 1,000 jobs in one transaction: all or none.  Each job is a mapping of
        the submit parameters ({"type": …, "payload": …, …}); datetimes are accepted.  A bad
        job is refused naming it as the daemon would (`jobs[3].type`)."""
        return self.submit_batch(jobs).results

    def submit_batch(self, jobs: Iterable[Mapping[str, Any]]) -> Batch:
        """`submit_many`, with the batch's names: a job may carry a `name` (not stored) that
        the `after` of others in the batch uses, so a whole workflow goes in one call; a cycle
        or an unknown name or id is refused, naming the field, and nothing is created."""
        raw = self.call("submit_many", {"jobs": _batch_params(jobs)})
        results = [_submit_result(item) for item in raw["results"]]
        return Batch(results, _names(raw))

    def submit_ids(self, jobs: Iterable[Mapping[str, Any]]) -> SubmittedIds:
        """`submit_many` answered with the jobs' ids, not the jobs: what a producer submitting
        in bulk needs, for a fraction of the daemon's work and of the answer's size."""
        raw = self.call("submit_many", {"jobs": _batch_params(jobs), "reply": "ids"})
        if "ids" not in raw:  # a daemon from before the reply option answers with the jobs
            results = [_submit_result(item) for item in raw["results"]]
            return SubmittedIds(
                [r.job.id for r in results], [r.created for r in results], _names(raw)
            )
        return SubmittedIds(
            [int(i) for i in raw["ids"]], [bool(c) for c in raw["created"]], _names(raw)
        )

    def get(self, job_id: int) -> JobView:
        return job_from_dict(self.call("get", {"id": job_id})["job"])

    def list(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Unpack[ListFilters]
    ) -> JobPage:
        """One page of jobs, newest first (at most `limit`, the server's cap being 1,000).  A
        `cursor` continues from the page that gave it, under the same filters (the daemon
        refuses it with others)."""
        state = filters.get("state")
        params = {
            "state": state if state is None or isinstance(state, str) else builtins.list(state),
            "type": filters.get("type"),
            "queue": filters.get("queue"),
            "created_after": _time_text(filters.get("created_after")),
            "created_before": _time_text(filters.get("created_before")),
            "schedule": filters.get("schedule"),
            "workflow": filters.get("workflow"),
            "limit": limit,
            "cursor": cursor,
        }
        raw = self.call("list", params)
        return JobPage([job_from_dict(j) for j in raw["jobs"]], raw.get("next_cursor"))

    def iter_jobs(
        self, *, page_size: int = 1000, **filters: Unpack[ListFilters]
    ) -> Iterator[JobView]:
        """Every job matching the `list` filters, following the cursor from page to page."""
        cursor = None
        while True:
            page = self.list(limit=page_size, cursor=cursor, **filters)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: int) -> JobView:
        """Cancel a pending job, or stop a running one (the job is `running` with
        cancel_requested until its worker has stopped).  Conflict if it has finished."""
        return job_from_dict(self.call("cancel", {"id": job_id})["job"])

    def retry(self, job_id: int) -> JobView:
        """Run a failed or canceled job again, with a fresh set of attempts."""
        return job_from_dict(self.call("retry", {"id": job_id})["job"])

    def wait(self, job_id: int, timeout: float | None = None) -> WaitResult:
        """Wait until the job has finished, at most `timeout` seconds (None: for ever).  The
        daemon does the waiting; this sends one request per WAIT_CHUNK seconds at most.

        Whether the job has finished is the reply's `timed_out`, never read from the state:
        a state this version does not know may be final or not, and only the daemon knows."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = WAIT_CHUNK if deadline is None else max(deadline - time.monotonic(), 0.0)
            chunk = min(chunk, WAIT_CHUNK)
            raw = self.call(
                "wait", {"id": job_id, "timeout": chunk}, timeout=self._wait_timeout(chunk)
            )
            result = WaitResult(job_from_dict(raw["job"]), bool(raw["timed_out"]))
            if not result.timed_out or (deadline is not None and time.monotonic() >= deadline):
                return result

    def _wait_timeout(self, wait: float) -> float | None:
        return None if self.timeout is None else wait + max(self.timeout, _WAIT_MARGIN)

    def stats(self) -> Stats:
        return Stats.from_dict(self.call("stats"))

    def workers(self) -> builtins.list[WorkerInfo]:
        return [WorkerInfo.from_dict(w) for w in self.call("workers")["workers"]]

    def health(self) -> Health:
        return Health.from_dict(self.call("health"))

    def metrics(self) -> str:
        """This node's metrics in the Prometheus text format."""
        return str(self.call("metrics")["text"])

    # --- the wire ----------------------------------------------------------------------------

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = -1
    ) -> Any:
        """Send one request and return its raw result; raise the error it got.  `timeout`
        overrides the client's for this call (-1: the client's)."""
        timeout = self.timeout if timeout == -1 else timeout
        params = {k: v for k, v in (params or {}).items() if v is not None}
        with self._lock:
            reused = self._sock is not None
            try:
                return self._exchange(method, params, timeout)
            except _Dropped:
                read_only = method in METHODS and METHODS[method].read_only
                if not (reused and read_only):
                    raise self._dropped_error() from None
            # The kept connection was dead (the daemon restarted): once more, on a new one.
            try:
                return self._exchange(method, params, timeout)
            except _Dropped:
                raise self._dropped_error() from None

    def _exchange(self, method: str, params: dict[str, Any], timeout: float | None) -> Any:
        sock = self._connect()
        call_id = next(self._ids)
        try:
            line = encode(request(method, params, call_id))
        except (TypeError, ValueError) as exc:
            raise JobdError(f"cannot send {method}: parameters are not JSON: {exc}") from None
        try:
            sock.settimeout(timeout)
            # A daemon refusing the request (payload_too_large) may close before reading it
            # all; its answer is waiting all the same, so read on.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(line)
            answer = self._reader.readline()
        except TimeoutError:
            self._disconnect()
            raise Unavailable(
                f"jobd at {self.socket_path} did not answer {method} within {timeout:g}s"
            ) from None
        except OSError:
            self._disconnect()
            raise _Dropped from None
        if not answer.endswith(b"\n"):
            self._disconnect()
            raise _Dropped
        return self._result(answer, call_id)

    def _result(self, answer: bytes, call_id: int) -> Any:
        try:
            reply = parse_reply(json.loads(answer))
        except (ValueError, InvalidRequest) as exc:
            self._disconnect()
            raise JobdError(f"jobd at {self.socket_path} sent a malformed reply: {exc}") from None
        if reply.id != call_id:
            # Not the answer to this request: the stream is out of step; start afresh.
            self._disconnect()
            if not reply.ok:  # e.g. parse_error (id null): the server could not read ours
                raise reply.exception()
            raise JobdError(f"jobd at {self.socket_path} answered request {reply.id!r}")
        if not reply.ok:
            raise reply.exception()
        return reply.result

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _connect_waiting_for_room(sock, self.socket_path, self.timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise self._unreachable(exc) from None
        sock.settimeout(self.timeout)
        self._sock = sock
        self._reader = sock.makefile("rb")
        return sock

    def _unreachable(self, exc: BaseException) -> DaemonUnreachable:
        path = self.socket_path
        if isinstance(exc, FileNotFoundError):
            why = f"no socket at {path}"
        elif isinstance(exc, ConnectionRefusedError):
            why = f"nothing is listening on {path} (a socket left by a daemon that stopped?)"
        elif isinstance(exc, PermissionError):
            return DaemonUnreachable(
                f"cannot reach jobd at {path}: permission denied; the socket is only open to"
                " its owner and group (control.socket_mode, control.socket_group)",
                socket=str(path),
            )
        elif isinstance(exc, TimeoutError | BlockingIOError):
            why = f"{path} did not accept the connection in time"
        else:
            why = f"{path}: {exc}"
        return DaemonUnreachable(
            f"cannot reach jobd: {why}. Is it running? Start it with `jobd run`, or point"
            f" --socket / {SOCKET_ENV} at its socket",
            socket=str(path),
        )

    def _dropped_error(self) -> Unavailable:
        return Unavailable(
            f"jobd at {self.socket_path} closed the connection before answering"
            " (is it shutting down?)",
            socket=str(self.socket_path),
        )

    def _disconnect(self) -> None:
        reader, sock = self._reader, self._sock
        self._reader = self._sock = None
        for closable in (reader, sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()


class _Dropped(Exception):
    """The connection broke before the answer arrived."""


def job_params(
    type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
) -> dict[str, Any]:
    """The params of one submit, as the protocol takes them, checked by jobd.jobspec."""
    given = {"type": type, "payload": dict(payload) if payload is not None else None, **options}
    return parse_job_spec(given).to_params()


def job_params_from(job: Any) -> dict[str, Any]:
    """The submit params of a job given as a mapping ({"type": …, "payload": …}).  A key that
    is no submit parameter is refused here (InvalidParams about the job as a whole), so a typo
    in a batch file is reported rather than silently ignored by the daemon."""
    if not isinstance(job, Mapping):
        raise InvalidParams.of_field("", "must be an object with the submit parameters")
    unknown = unknown_fields(job)
    if unknown:
        fields = ", ".join(sorted(SUBMIT_FIELDS))
        raise InvalidParams.of_field("", f"unknown field {unknown[0]!r} (fields: {fields})")
    return parse_job_spec(job).to_params()


def _time_text(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _batch_params(jobs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A batch's jobs as submit_many's params, each checked as the daemon checks it; a bad one
    is refused naming its place (`jobs[3].type`)."""
    specs = []
    for index, job in enumerate(jobs):
        try:
            specs.append(job_params_from(job))
        except InvalidParams as exc:
            raise in_batch(exc, index) from None
    return specs


def _names(raw: Mapping[str, Any]) -> dict[str, int]:
    return {str(n): int(i) for n, i in (raw.get("names") or {}).items()}


def _submit_result(raw: Mapping[str, Any]) -> SubmitResult:
    return SubmitResult(job_from_dict(raw["job"]), bool(raw["created"]))


def _connect_waiting_for_room(sock: socket.socket, path: Path, timeout: float | None) -> None:
    """Connect `sock` to the Unix socket at `path`, waiting while its listen backlog is full
    (a daemon busy accepting a flood of clients), for `timeout` seconds at most.  A socket
    with a Python timeout is non-blocking, and a non-blocking Unix connect to a full backlog
    fails at once (EAGAIN); a blocking one waits for room, up to its send timeout."""
    if timeout is not None:
        seconds = max(timeout, 0.001)
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.connect(os.fsencode(path))
