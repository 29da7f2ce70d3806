"""The control protocol, without any I/O: framing, requests, responses, errors, and the method
table with each method's parameters.

JSON-RPC 2.0, one JSON value per line (UTF-8, `\\n`-terminated) over a SOCK_STREAM Unix socket;
docs/protocol.md is the reference for people writing a client.  This module is the reference for
code: the server (jobd.control) and the client (jobd.client) both build on it, and it is pure --
no sockets, no clock, no store -- so tests/unit/test_protocol.py covers it without a daemon.

    bytes ──LineFramer.feed──► lines ──decode──► JSON ──parse_call──► Call ──METHODS[m].parse──►
    typed params  …server runs the method…  result / JobdError ──response──► dict ──encode──► bytes

Evolution is additive: unknown members of params are ignored, results only gain members, and a
breaking change gets a new method name.  `PROTOCOL_VERSION` (sent by `hello`) changes only if
the framing or the envelope ever does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

from jobd import fields
from jobd.domain import TIME_FIELDS, WIRE_FIELDS, ErrorInfo, State
from jobd.errors import (
    InvalidParams,
    InvalidRequest,
    JobdError,
    MethodNotFound,
    ParseError,
    PayloadTooLarge,
    error_from_code,
)
from jobd.jobspec import JobSpec, in_batch, named_batch, parse_job_spec
from jobd.limits import MAX_LIST_LIMIT, MAX_SUBMIT_MANY, MAX_SUBSCRIBE_IDS
from jobd.protocol_queues import QUEUE_METHODS

PROTOCOL_VERSION = 1
JSONRPC = "2.0"

DEFAULT_LIST_LIMIT = 100
DEFAULT_WAIT = 30.0  # seconds a `wait` without a timeout waits
MAX_WAIT = 3600.0  # longer waits are cut to this; the answer says timed_out and clients loop

JsonId = str | int | float | None


# --- framing --------------------------------------------------------------------------------


class LineFramer:
    """Splits a byte stream into lines, refusing any line longer than `max_bytes`.

    Feed it what the socket gave; it returns the complete lines (without their `\\n`).  Once the
    unfinished line grows past the limit, `too_large` becomes true and everything after is
    ignored: the server answers payload_too_large and closes, since it cannot find where the
    next request starts without reading the rest of the oversized one.  The check is made as
    bytes arrive, so an endless line costs at most `max_bytes` of memory, not the whole line.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.too_large = False
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if self.too_large:
            return []
        lines: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            piece = data[start:end]
            if len(self._buffer) + len(piece) > self.max_bytes:
                self.too_large = True
                self._buffer.clear()
                return lines
            lines.append(bytes(self._buffer + piece) if self._buffer else piece)
            self._buffer.clear()
            start = end + 1
        self._buffer += data[start:]
        if len(self._buffer) > self.max_bytes:
            self.too_large = True
            self._buffer.clear()
        return lines

    def rest(self) -> bytes:
        """The unfinished last line, at end of stream (a request sent without its newline)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest

    def oversize_error(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request line longer than {self.max_bytes} bytes"
            " (control.max_request_bytes); closing the connection",
            limit=self.max_bytes,
        )


def encode(message: Any) -> bytes:
    """One message as a line: compact JSON, UTF-8, `\\n`-terminated (a JSON text never
    contains a raw newline, so the framing needs no escaping)."""
    return _dumps(message).encode() + b"\n"


#: Elements of an array encoded together, as one piece of encode_pieces: encoding 1,000 jobs
#: one call each costs a third more than 100 at a time (each call sets up the encoder again).
ELEMENTS_PER_PIECE = 100


def encode_pieces(message: Any, elements: int = ELEMENTS_PER_PIECE) -> Iterator[str]:
    """The text of encode(message), less its newline, in pieces: objects with string keys are
    walked here, and the elements of an array are encoded `elements` at a time.  A reply of
    1,000 jobs is then ten pieces of 100 jobs, which the server encodes with turns of the
    event loop between them instead of in one go (joined, the pieces are exactly encode()'s
    text)."""
    if isinstance(message, dict) and all(isinstance(key, str) for key in message):
        yield "{"
        for i, (key, value) in enumerate(message.items()):
            yield ("," if i else "") + _dumps(key) + ":"
            yield from encode_pieces(value, elements)
        yield "}"
    elif isinstance(message, list):
        yield "["
        for start in range(0, len(message), elements):
            # "[a,b]" less its brackets: compact separators put nothing else around them.
            text = _dumps(message[start : start + elements])[1:-1]
            yield ("," if start else "") + text
        yield "]"
    else:
        yield _dumps(message)


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_dumps = _ENCODER.encode


def decode(line: bytes) -> Any:
    """The JSON value of one line; ParseError if it is not UTF-8 or not JSON."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"request is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"request is not valid JSON: {_short(exc)}") from None
    if _SURROGATE_ESCAPE.search(text) and not _is_unicode(value):
        # JSON's syntax allows "\ud800", but no Unicode text holds it: stored, logged or sent
        # back it raised UnicodeEncodeError deep inside (an internal_error, a dropped
        # connection).  Refused here, once, for everything that reads requests.
        raise ParseError(
            "request is not valid JSON: a string holds an unpaired surrogate (\\ud800-\\udfff),"
            " which is no Unicode character"
        )
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a cheap look first: rarely there


def _is_unicode(value: Any) -> bool:
    """No string in `value` (keys included) holds an unpaired surrogate."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One JSON-RPC request.  A notification (no `id` member) gets no answer, not even an error."""

    method: str
    params: dict[str, Any]
    id: JsonId = None
    notification: bool = False


class RequestError(Exception):
    """A request that cannot be run, with the id to answer it under (None when unknown)."""

    def __init__(self, error: JobdError, id: JsonId = None, notification: bool = False):
        super().__init__(error.message)
        self.error = error
        self.id = id
        self.notification = notification


def parse_call(message: Any) -> Call:
    """Check a decoded JSON value is a JSON-RPC 2.0 request; RequestError if it is not."""
    if not isinstance(message, dict):
        raise RequestError(InvalidRequest("a request must be a JSON object"))
    notification = "id" not in message
    call_id = message.get("id")
    if not _valid_id(call_id):
        raise RequestError(InvalidRequest("id: must be a string, a number or null"))
    if message.get("jsonrpc") != JSONRPC:
        raise RequestError(
            InvalidRequest('jsonrpc: must be "2.0"'), call_id, notification=notification
        )
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RequestError(
            InvalidRequest("method: must be a non-empty string"), call_id, notification
        )
    params = message.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        # By-position parameters are allowed by JSON-RPC, but every jobd method takes names.
        raise RequestError(
            InvalidParams("params: must be an object (jobd methods take named parameters)"),
            call_id,
            notification,
        )
    return Call(method, params, call_id, notification)


def _valid_id(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    # Any integer, however long (it is echoed back as sent; math.isfinite would raise
    # OverflowError on one past the largest float and drop the connection), or a finite float.
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def request(method: str, params: Mapping[str, Any] | None, call_id: JsonId) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": JSONRPC, "id": call_id, "method": method}
    if params:
        message["params"] = dict(params)
    return message


# --- responses --------------------------------------------------------------------------------


def result_response(call_id: JsonId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": call_id, "result": result}


def error_response(call_id: JsonId, error: JobdError) -> dict[str, Any]:
    """The JSON-RPC error object: the numeric code from errors.CODES, the message, and in
    `data` the stable string code plus whatever the error carries (field, type, known, …)."""
    data = {k: _jsonable(v) for k, v in error.data.items()}
    data["code"] = error.code
    return {
        "jsonrpc": JSONRPC,
        "id": call_id,
        "error": {"code": error.info.rpc_code, "message": error.message, "data": data},
    }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True, slots=True)
class Reply:
    """A response as the client reads it: a result, or an error's parts."""

    id: JsonId
    result: Any = None
    error_code: str | None = None  # data.code, the stable string
    error_message: str = ""
    error_data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def exception(self) -> JobdError:
        """The error of an error reply, as the exception of jobd.errors its code names."""
        return error_from_code(
            self.error_code or "internal_error", self.error_message, self.error_data
        )


_CODE_BY_RPC = {-32700: "parse_error", -32600: "invalid_request", -32601: "method_not_found"}
_CODE_BY_RPC |= {-32602: "invalid_params", -32603: "internal_error"}


def parse_reply(message: Any) -> Reply:
    """Read a response object; InvalidRequest if it is not one (a server bug or a stranger)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != JSONRPC:
        raise InvalidRequest(f"not a JSON-RPC 2.0 response: {_short(message)}")
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict):
            raise InvalidRequest(f"malformed error in response: {_short(error)}")
        data = dict(error.get("data") or {}) if isinstance(error.get("data"), dict) else {}
        code = data.pop("code", None)
        if not isinstance(code, str):
            rpc_code = error.get("code")
            code = _CODE_BY_RPC.get(rpc_code if isinstance(rpc_code, int) else 0, "internal_error")
        return Reply(message.get("id"), None, code, str(error.get("message", "")), data)
    if "result" not in message:
        raise InvalidRequest(f"response has neither result nor error: {_short(message)}")
    return Reply(message.get("id"), message["result"])


# --- parameters -------------------------------------------------------------------------------
#
# Each method's params are read by the readers of jobd.fields: a typed value, or InvalidParams
# naming the field.  A job's members are read by jobd.jobspec, the same for every way in.


def _job_id(params: Mapping[str, Any]) -> int:
    value: int | None = fields.integer(params, "id")
    if value is None:
        raise fields.invalid("id", "required")
    return value


@dataclass(frozen=True, slots=True)
class NoParams:
    pass


@dataclass(frozen=True, slots=True)
class IdParams:
    id: int


@dataclass(frozen=True, slots=True)
class SubscribeParams:
    topics: tuple[str, ...]
    ids: frozenset[int] | None = None  # only these jobs' changes; None: every job's


#: What a subscription can follow (jobd.subscriptions): every job's changes of state.
TOPICS = ("jobs",)


def parse_subscribe(params: Mapping[str, Any]) -> SubscribeParams:
    topics = params.get("topics", list(TOPICS))
    if not isinstance(topics, list) or not topics or not all(t in TOPICS for t in topics):
        raise fields.invalid("topics", f"must be a non-empty list of {', '.join(TOPICS)}")
    return SubscribeParams(tuple(dict.fromkeys(topics)), _subscribe_ids(params.get("ids")))


def _subscribe_ids(ids: Any) -> frozenset[int] | None:
    if ids is None:
        return None
    problem = f"must be a non-empty list of at most {MAX_SUBSCRIBE_IDS} job ids"
    if not isinstance(ids, list) or not 0 < len(ids) <= MAX_SUBSCRIBE_IDS:
        raise fields.invalid("ids", problem)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise fields.invalid("ids", problem)
    return frozenset(ids)


#: What a submit_many answers with (its `reply`): each job whole, or only the ids (ADR 0044).
SubmitReply = Literal["jobs", "ids"]
SUBMIT_REPLIES: tuple[SubmitReply, ...] = get_args(SubmitReply)


@dataclass(frozen=True, slots=True)
class SubmitManyParams:
    jobs: list[JobSpec]
    #: The batch's names (a job's `name`), each to its position; `after` uses them.
    names: dict[str, int] = field(default_factory=dict)
    #: "jobs": each job as stored; "ids": its id and whether it was created, nothing else.
    reply: SubmitReply = "jobs"


def parse_submit_many(params: Mapping[str, Any]) -> SubmitManyParams:
    reply = fields.text(params, "reply", "jobs")
    if reply not in SUBMIT_REPLIES:
        raise fields.invalid("reply", f'must be "jobs" or "ids", got {reply!r}')
    reply = cast(SubmitReply, reply)
    jobs = fields.required(params, "jobs")
    if not isinstance(jobs, list):
        raise fields.invalid("jobs", "must be an array of jobs")
    if len(jobs) > MAX_SUBMIT_MANY:
        raise fields.invalid("jobs", f"at most {MAX_SUBMIT_MANY} jobs in one call, got {len(jobs)}")
    specs: list[JobSpec] = []
    for index, job in enumerate(jobs):
        try:
            specs.append(_batch_job_spec(job))
        except InvalidParams as exc:
            raise in_batch(exc, index) from None
    return SubmitManyParams(*named_batch(specs), reply=reply)


def _batch_job_spec(job: Any) -> JobSpec:
    if not isinstance(job, dict):
        raise fields.invalid("", "must be an object")
    return parse_job_spec(job)


@dataclass(frozen=True, slots=True)
class ListCursor:
    """What a list cursor carries: the store's own cursor (where the page ended) and a
    fingerprint of the filters the page was listed under.  Clients see it as one opaque string
    (base64url of a small JSON object)."""

    store: str
    filters: str

    def encode(self) -> str:
        text = _dumps({"c": self.store, "f": self.filters})
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> ListCursor:
        try:
            value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except (ValueError, RecursionError, binascii.Error):
            value = None
        if not (isinstance(value, dict) and all(isinstance(value.get(k), str) for k in "cf")):
            raise fields.invalid("cursor", f"not a cursor this server issued: {_short(cursor)!r}")
        return cls(value["c"], value["f"])


LIST_FILTERS = (
    "states", "type", "queue", "created_after", "created_before", "schedule", "workflow",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ListParams:
    states: tuple[State, ...] = ()
    type: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    schedule: str | None = None  # the jobs this schedule created
    workflow: int | None = None  # the jobs linked to this one through `after`
    limit: int = DEFAULT_LIST_LIMIT
    cursor: ListCursor | None = None  # checked against the filters above when parsed

    def filters(self) -> dict[str, Any]:
        """The members that select jobs, by name (those of the store's JobFilter)."""
        return {name: getattr(self, name) for name in LIST_FILTERS}

    @property
    def store_cursor(self) -> str | None:
        return None if self.cursor is None else self.cursor.store

    def next_cursor(self, store_cursor: str | None) -> str | None:
        """The cursor a reply gives for the page after this one: the store's, bound to these
        filters."""
        if store_cursor is None:
            return None
        return ListCursor(store_cursor, self.filters_fingerprint()).encode()

    def filters_fingerprint(self) -> str:
        """A short hash of the filters in a canonical form: the same for the same selection
        of jobs however it was spelled (states in any order, times in any zone)."""
        canonical: dict[str, Any] = {
            "state": sorted({s.value for s in self.states}),
            "type": self.type,
            "queue": self.queue,
            "created_after": _utc_text(self.created_after),
            "created_before": _utc_text(self.created_before),
        }
        if self.schedule is not None:  # absent otherwise: earlier cursors stay good
            canonical["schedule"] = self.schedule
        if self.workflow is not None:  # absent otherwise: cursors of before it stay valid
            canonical["workflow"] = self.workflow
        digest = hashlib.sha256(_dumps(canonical).encode()).digest()
        return base64.urlsafe_b64encode(digest[:9]).decode()


def _utc_text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def parse_list(params: Mapping[str, Any]) -> ListParams:
    limit = fields.integer(params, "limit", DEFAULT_LIST_LIMIT)
    if limit < 1:
        raise fields.invalid("limit", "must be at least 1")
    filters = ListParams(
        states=_states(params.get("state")),
        type=fields.text(params, "type"),
        queue=fields.text(params, "queue"),
        created_after=fields.time(params, "created_after"),
        created_before=fields.time(params, "created_before"),
        schedule=fields.text(params, "schedule"),
        workflow=_workflow(params),
        limit=min(limit, MAX_LIST_LIMIT),
    )
    given = fields.text(params, "cursor")
    if given is None:
        return filters
    cursor = ListCursor.decode(given)
    if cursor.filters != filters.filters_fingerprint():
        # Paging on with other filters would list other jobs from where that page ended.
        raise fields.invalid(
            "cursor",
            "was issued for other filters: give it with the state, type, queue, created_after,"
            " created_before, schedule and workflow of the page it came from",
        )
    return dataclasses.replace(filters, cursor=cursor)


def _workflow(params: Mapping[str, Any]) -> int | None:
    workflow: int | None = fields.integer(params, "workflow")
    if workflow is not None and not 0 < workflow < 2**63:
        raise fields.invalid("workflow", "must be a job id")
    return workflow


def _states(value: Any) -> tuple[State, ...]:
    return fields.states({"state": value})


@dataclass(frozen=True, slots=True)
class WaitParams:
    id: int
    timeout: float = DEFAULT_WAIT


def parse_wait(params: Mapping[str, Any]) -> WaitParams:
    timeout = fields.number(params, "timeout", DEFAULT_WAIT)
    if timeout < 0:
        raise fields.invalid("timeout", "must be >= 0")
    return WaitParams(_job_id(params), min(float(timeout), MAX_WAIT))


@dataclass(frozen=True, slots=True)
class ScheduleParams:
    """The schedule a schedule_pause, schedule_resume or schedule_trigger is about."""

    name: str


def parse_schedule_name(params: Mapping[str, Any]) -> ScheduleParams:
    name = fields.text(params, "name")
    if not name:
        raise fields.invalid("name", "required: the name of a schedule")
    return ScheduleParams(name)


# --- the method table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    parse: Callable[[Mapping[str, Any]], Any]
    read_only: bool  # safe to send again after a lost connection


def _no_params(params: Mapping[str, Any]) -> NoParams:
    return NoParams()


def _id_params(params: Mapping[str, Any]) -> IdParams:
    return IdParams(_job_id(params))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("hello", _no_params, True),
        Method("submit", parse_job_spec, False),
        Method("submit_many", parse_submit_many, False),
        Method("get", _id_params, True),
        Method("list", parse_list, True),
        Method("cancel", _id_params, False),
        Method("retry", _id_params, False),
        Method("wait", parse_wait, True),
        Method("stats", _no_params, True),
        Method("workers", _no_params, True),
        Method("health", _no_params, True),
        Method("metrics", _no_params, True),
        Method("nodes", _no_params, True),
        Method("attempts", _id_params, True),
        Method("activity", _no_params, True),
        *(Method(name, parse, read_only) for name, parse, read_only in QUEUE_METHODS),
        Method("schedules", _no_params, True),
        Method("schedule_pause", parse_schedule_name, False),
        Method("schedule_resume", parse_schedule_name, False),
        Method("schedule_trigger", parse_schedule_name, False),
        Method("subscribe", parse_subscribe, True),
    )
}


def parse_params(call: Call) -> Any:
    """The typed parameters of `call`; MethodNotFound or InvalidParams if it has none."""
    method = METHODS.get(call.method)
    if method is None:
        raise MethodNotFound(
            f"no method {call.method!r} (methods: {', '.join(METHODS)})", method=call.method
        )
    return method.parse(call.params)


# --- jobs on the wire -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InForce:
    """One limit as it applies to a job, and where it comes from: `source` is "job" (the job's
    own), "handler" (its type's handler declares it) or "default" (the node's configuration);
    a newer daemon's source is carried through as it is."""

    value: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}

    @classmethod
    def from_dict(cls, data: object) -> InForce | None:
        if (member := _member_object(data)) is None:
            return None
        value, source = member["value"], member["source"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"value: not a number: {value!r}")
        if not isinstance(source, str):
            raise TypeError(f"source: not a string: {source!r}")
        return cls(value, source)


@dataclass(frozen=True, slots=True)
class Effective:
    """The `effective` member of a job in a `get` reply: the limits in force for the job on
    the node that answered.  A member a daemon does not send is None."""

    timeout: InForce | None
    max_attempts: InForce | None

    def to_dict(self) -> dict[str, Any]:
        return {
            name: limit.to_dict()
            for name, limit in (("timeout", self.timeout), ("max_attempts", self.max_attempts))
            if limit is not None
        }

    @classmethod
    def from_dict(cls, data: object) -> Effective | None:
        if (member := _member_object(data)) is None:
            return None
        return cls(
            InForce.from_dict(member.get("timeout")), InForce.from_dict(member.get("max_attempts"))
        )


def _member_object(data: object) -> Mapping[str, Any] | None:
    """An optional member that must be an object when present."""
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(f"not an object: {data!r}")
    return data


@dataclass(frozen=True)
class JobView:
    """A job as a reply shows it: the members of jobd.domain.Job, read the way the protocol
    promises replies evolve (they only gain members).  A state this version does not know
    stays its name, a str (`state_name` is the name either way); members it does not know are
    kept (`extra`), and `to_dict()` gives back the object exactly as it came."""

    id: int
    type: str
    queue: str
    priority: int
    payload: dict[str, Any]
    state: State | str
    attempts: int
    max_attempts: int
    crashes: int
    run_at: datetime
    timeout: float | None
    last_error: ErrorInfo | None
    result: Any
    idempotency_key: str | None
    correlation_id: str | None
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: The schedule that created the job; None for other jobs (and from daemons before it).
    schedule: str | None = None
    #: What the job does when a parent fails ("cancel" from daemons before workflows).
    on_parent_failure: str = "cancel"
    #: The jobs it waits for, ascending (empty from daemons before workflows).
    parents: tuple[int, ...] = ()
    #: The latest progress its handler reported, and when (None from daemons before it).
    progress: Any = None
    progress_at: datetime | None = None
    #: Seconds it is kept once ended, overriding the retention (None from daemons before it,
    #: and for jobs that set none: jobs.retention applies).
    result_ttl: float | None = None
    #: `get` only, like `effective`: the jobs submitted after it, and the parents it still
    #: waits for (None when the reply has none).
    children: tuple[int, ...] | None = field(default=None, compare=False)
    waiting_for: tuple[int, ...] | None = field(default=None, compare=False)
    # What the answering node applies (`get` only), not part of the job: two views of one job
    # are equal whether or not they carry it.
    effective: Effective | None = field(default=None, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def state_name(self) -> str:
        return str(self.state)

    @property
    def claimed_only(self) -> bool:
        """Running but not started: a node claimed it and its worker has not started it yet
        (queued behind another job), which started_at being null tells."""
        return self.state_name == "running" and self.started_at is None

    @property
    def state_shown(self) -> str:
        """The state as people read it: `running (claimed)` while not started."""
        return self.state_name + (" (claimed)" if self.claimed_only else "")

    @property
    def extra(self) -> dict[str, Any]:
        """The members a newer daemon sent that this version does not know, as sent."""
        return {k: v for k, v in self.raw.items() if k not in _KNOWN_MEMBERS}

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


_JOB_MEMBERS = frozenset(WIRE_FIELDS)
_KNOWN_MEMBERS = _JOB_MEMBERS | {"effective", "children", "waiting_for"}


def job_from_dict(data: Mapping[str, Any]) -> JobView:
    """Read a job object of a reply (Job.to_dict() on the daemon's side)."""
    try:
        values: dict[str, Any] = {name: data.get(name) for name in _JOB_MEMBERS}
        values["state"] = _state(values["state"])
        values["last_error"] = ErrorInfo.from_dict(values["last_error"])
        values["payload"] = values["payload"] or {}
        values["on_parent_failure"] = values["on_parent_failure"] or "cancel"
        values["parents"] = tuple(int(p) for p in values["parents"] or ())
        for name in TIME_FIELDS:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        effective = Effective.from_dict(data.get("effective"))
        return JobView(
            **values,
            effective=effective,
            children=_ids(data.get("children")),
            waiting_for=_ids(data.get("waiting_for")),
            raw=dict(data),
        )
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidRequest(f"malformed job in response: {_short(exc)}") from None


def _ids(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError(f"not a list of ids: {value!r}")
    return tuple(int(i) for i in value)


def _state(name: object) -> State | str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"state: not a state name: {name!r}")
    try:
        return State(name)
    except ValueError:
        return name  # a state of a newer daemon: carried through as it is


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
