"""jobd.protocol without any socket: framing, requests, responses, parameters, jobs on the wire."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobd.domain import WIRE_FIELDS, ErrorInfo, Job, NewJob, State
from jobd.errors import (
    CODES,
    ERROR_CLASSES,
    Conflict,
    InvalidParams,
    InvalidRequest,
    JobdError,
    MethodNotFound,
    NotFound,
    ParseError,
    UnknownType,
    error_from_code,
)
from jobd.jobspec import in_batch
from jobd.protocol import (
    MAX_LIST_LIMIT,
    MAX_WAIT,
    METHODS,
    Call,
    LineFramer,
    ListParams,
    RequestError,
    decode,
    encode,
    encode_pieces,
    error_response,
    job_from_dict,
    parse_call,
    parse_job_spec,
    parse_list,
    parse_params,
    parse_reply,
    request,
    result_response,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def call(method: str, **params: object) -> Call:
    return Call(method, dict(params), 1)


# --- framing ------------------------------------------------------------------------------------


def test_lines_are_split_wherever_the_chunks_end() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a"') == []
    assert framer.feed(b": 1}\n{") == [b'{"a": 1}']
    assert framer.feed(b"}\n\n[1]\n") == [b"{}", b"", b"[1]"]
    assert framer.rest() == b""


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_any_chunking_gives_the_same_lines(lines: list[bytes]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    for size in (1, 2, 7, len(stream) or 1):
        framer = LineFramer(64)
        got = []
        for i in range(0, len(stream), size):
            got += framer.feed(stream[i : i + size])
        assert got == lines
        assert not framer.too_large


def test_a_line_of_exactly_the_limit_passes_and_one_byte_more_does_not() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"0123456789\n") == [b"0123456789"]
    assert framer.feed(b"0123456789A\n") == []
    assert framer.too_large


def test_an_endless_line_is_refused_before_its_end_arrives() -> None:
    framer = LineFramer(1024)
    assert framer.feed(b"ok\n" + b"x" * 1000) == [b"ok"]
    assert not framer.too_large
    assert framer.feed(b"x" * 100) == []
    assert framer.too_large
    assert framer.feed(b"\n{}\n") == []  # nothing is read after an oversized line
    error = framer.oversize_error()
    assert error.code == "payload_too_large" and error.data["limit"] == 1024


def test_the_unfinished_last_line_is_kept_for_the_end_of_the_stream() -> None:
    framer = LineFramer(100)
    framer.feed(b'{"id": 1}\n{"id"')
    framer.feed(b": 2}")
    assert framer.rest() == b'{"id": 2}'
    assert framer.rest() == b""


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    # Integer keys too: JSON turns them into strings.
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.dictionaries(st.integers(), children, max_size=2)
    ),
    max_leaves=20,
)


@given(_json_values)
def test_encode_pieces_join_to_exactly_what_encode_gives(value: object) -> None:
    assert "".join(encode_pieces(value)).encode() + b"\n" == encode(value)


@given(_json_values, st.integers(min_value=1, max_value=3))
def test_pieces_of_a_few_elements_join_to_exactly_what_encode_gives(
    value: object, elements: int
) -> None:
    assert "".join(encode_pieces(value, elements)).encode() + b"\n" == encode(value)


def test_an_array_is_encoded_in_pieces_of_many_elements() -> None:
    def text(numbers: range) -> str:
        return ",".join(map(str, numbers))

    pieces = list(encode_pieces({"results": list(range(250))}, elements=100))
    assert pieces == [
        "{",
        '"results":',
        "[",
        text(range(100)),
        "," + text(range(100, 200)),
        "," + text(range(200, 250)),
        "]",
        "}",
    ]


@pytest.mark.parametrize("bad", [{"a": [float("nan")]}, {"a": {"b": object()}}, [{1, 2}]])
def test_encode_pieces_refuses_what_encode_refuses(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)) as by_encode:
        encode(bad)
    with pytest.raises(by_encode.type):
        "".join(encode_pieces(bad))


def test_encode_is_one_compact_utf8_line() -> None:
    line = encode({"text": "line one\nline two", "name": "Zoë"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert "Zoë".encode() in line
    assert json.loads(line) == {"text": "line one\nline two", "name": "Zoë"}
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"{not json", "not valid JSON"),
        (b'{"x": NaN}', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_decode_refuses_what_is_not_json(line: bytes, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        decode(line)


# --- requests -----------------------------------------------------------------------------------


def test_a_request_and_a_notification() -> None:
    parsed = parse_call({"jsonrpc": "2.0", "id": "x", "method": "get", "params": {"id": 3}})
    assert parsed == Call("get", {"id": 3}, "x", notification=False)
    note = parse_call({"jsonrpc": "2.0", "method": "hello"})
    assert note.notification and note.params == {}
    explicit_null = parse_call({"jsonrpc": "2.0", "method": "hello", "id": None})
    assert not explicit_null.notification  # id null is a (discouraged) request, not a notification


@pytest.mark.parametrize(
    ("message", "code", "answer_id"),
    [
        ([], "invalid_request", None),
        ("hello", "invalid_request", None),
        ({"jsonrpc": "1.0", "method": "hello", "id": 1}, "invalid_request", 1),
        ({"method": "hello", "id": 2}, "invalid_request", 2),
        ({"jsonrpc": "2.0", "method": 5, "id": 3}, "invalid_request", 3),
        ({"jsonrpc": "2.0", "method": "", "id": 4}, "invalid_request", 4),
        ({"jsonrpc": "2.0", "method": "get", "id": True}, "invalid_request", None),
        ({"jsonrpc": "2.0", "method": "get", "id": {"a": 1}}, "invalid_request", None),
        ({"jsonrpc": "2.0", "method": "get", "id": 5, "params": [1]}, "invalid_params", 5),
    ],
)
def test_malformed_requests(message: object, code: str, answer_id: object) -> None:
    with pytest.raises(RequestError) as caught:
        parse_call(message)
    assert caught.value.error.code == code
    assert caught.value.id == answer_id


def test_an_unknown_method_is_named_with_the_known_ones() -> None:
    with pytest.raises(MethodNotFound) as caught:
        parse_params(call("frobnicate"))
    assert "'frobnicate'" in caught.value.message and "submit_many" in caught.value.message


def test_every_method_reads_its_params() -> None:
    samples = {
        "hello": {},
        "submit": {"type": "echo"},
        "submit_many": {"jobs": [{"type": "echo"}]},
        "get": {"id": 1},
        "list": {},
        "cancel": {"id": 1},
        "retry": {"id": 1},
        "wait": {"id": 1},
        "stats": {},
        "workers": {},
        "health": {},
        "metrics": {},
        "nodes": {},
        "attempts": {"id": 1},
        "activity": {},
        "queues": {},
        "queue_pause": {"name": "mail", "reason": "SMTP down"},
        "queue_limit": {"name": "api", "global_concurrency": 3, "rate": "10/s"},
        "queue_resume": {"name": "mail"},
        "cancel_many": {"queue": "mail"},
        "retry_many": {"state": "failed", "batch": 100},
        "purge": {"state": ["completed"], "dry_run": True},
        "run_now": {"id": 1},
        "set_priority": {"id": 1, "priority": 5},
        "audit": {"limit": 10},
        "schedules": {},
        "schedule_pause": {"name": "nightly"},
        "schedule_resume": {"name": "nightly"},
        "schedule_trigger": {"name": "nightly"},
        "subscribe": {},
    }
    assert set(samples) == set(METHODS)
    for name, params in samples.items():
        parse_params(Call(name, params | {"added_in_a_later_version": [1, 2]}))


def test_subscribe_takes_known_topics_only() -> None:
    assert parse_params(Call("subscribe", {"topics": ["jobs", "jobs"]})).topics == ("jobs",)
    for bad in ([], ["nodes"], "jobs"):
        with pytest.raises(InvalidParams) as caught:
            parse_params(Call("subscribe", {"topics": bad}))
        assert caught.value.data["field"] == "topics"


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "type"),
        ({"type": 5}, "type"),
        ({"type": "echo", "payload": [1]}, "payload"),
        ({"type": "echo", "payload": "{}"}, "payload"),
        ({"type": "echo", "queue": 1}, "queue"),
        ({"type": "echo", "priority": "high"}, "priority"),
        ({"type": "echo", "priority": 1.5}, "priority"),
        ({"type": "echo", "priority": True}, "priority"),
        ({"type": "echo", "max_attempts": "3"}, "max_attempts"),
        ({"type": "echo", "timeout": "10s"}, "timeout"),
        ({"type": "echo", "delay": -1}, "delay"),
        ({"type": "echo", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
        ({"type": "echo", "run_at": "tomorrow"}, "run_at"),
        ({"type": "echo", "run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"type": "echo", "idempotency_key": 7}, "idempotency_key"),
        ({"type": "echo", "correlation_id": ["x"]}, "correlation_id"),
    ],
)
def test_submit_params_name_the_bad_field(params: dict, field: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params(Call("submit", params))
    assert caught.value.data["field"] == field
    assert caught.value.message.startswith(f"{field}: ")


def test_null_means_not_given() -> None:
    spec = parse_params(Call("submit", {"type": "echo", "payload": None, "queue": None}))
    assert spec.payload == {} and spec.queue == "default"


def test_a_spec_of_type_and_payload_alone_is_read_as_one_with_every_member_given() -> None:
    """Such a spec takes a shorter way (the usual job of a big submit_many); it must lead to
    the same JobSpec as the full reading, which a member sent as null forces."""
    for payload in ({"a": 1}, None):
        alone = parse_job_spec({"type": "echo", "payload": payload})
        full = parse_job_spec({"type": "echo", "payload": payload, "queue": None})
        assert alone == full
    assert parse_job_spec({"type": "echo"}) == parse_job_spec({"type": "echo", "delay": None})


def test_a_job_spec_becomes_a_new_job_with_the_defaults_it_lacks() -> None:
    spec = parse_params(call("submit", type="echo", delay=90, payload={"a": 1}))
    job = spec.to_new_job(max_attempts=7, correlation_id="generated", now=NOW)
    run_at = NOW + timedelta(seconds=90)
    assert job == NewJob(
        "echo", {"a": 1}, max_attempts=7, run_at=run_at, correlation_id="generated"
    )
    given = parse_params(call("submit", type="echo", max_attempts=2, correlation_id="mine"))
    job = given.to_new_job(max_attempts=7, correlation_id="generated", now=NOW)
    assert job.max_attempts == 2 and job.correlation_id == "mine" and job.run_at is None
    at = parse_params(call("submit", type="echo", run_at="2030-01-01T08:00:00+02:00"))
    assert at.to_new_job(3, "c", NOW).run_at == datetime(2030, 1, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "x" * 201}, "type"),
        ({"type": "echo", "queue": " padded "}, "queue"),
        ({"type": "echo", "priority": 2**40}, "priority"),
        ({"type": "echo", "max_attempts": 0}, "max_attempts"),
        ({"type": "echo", "timeout": 0}, "timeout"),
        ({"type": "echo", "idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_the_domain_rules_are_reported_by_field(params: dict, field: str) -> None:
    spec = parse_params(Call("submit", params))
    with pytest.raises(InvalidParams) as caught:
        spec.to_new_job(3, "c", NOW)
    assert caught.value.data["field"] == field


def test_submit_many_names_the_job_at_fault() -> None:
    with pytest.raises(InvalidParams, match=r"^jobs\[1\]\.priority: must be an integer"):
        parse_params(call("submit_many", jobs=[{"type": "a"}, {"type": "b", "priority": "x"}]))
    many = parse_params(call("submit_many", jobs=[{"type": "a"}, {"type": "b", "priority": 2**40}]))
    with pytest.raises(InvalidParams, match=r"^jobs\[1\]\.priority: must fit in 32 bits"):
        for index, spec in enumerate(many.jobs):  # as the server names a job's domain refusal
            try:
                spec.to_new_job(3, "c", NOW)
            except InvalidParams as exc:
                raise in_batch(exc, index) from None
    with pytest.raises(InvalidParams, match="at most 1000 jobs"):
        parse_params(call("submit_many", jobs=[{"type": "a"}] * 1001))
    with pytest.raises(InvalidParams, match=r"^jobs\[0\]: must be an object"):
        parse_params(call("submit_many", jobs=["echo"]))
    with pytest.raises(InvalidParams, match=r"^jobs: required"):
        parse_params(call("submit_many"))


def test_submit_many_answers_with_the_jobs_unless_asked_for_ids() -> None:
    assert parse_params(call("submit_many", jobs=[{"type": "a"}])).reply == "jobs"
    assert parse_params(call("submit_many", jobs=[], reply="ids")).reply == "ids"
    with pytest.raises(InvalidParams, match=r'^reply: must be "jobs" or "ids", got \'id\''):
        parse_params(call("submit_many", jobs=[], reply="id"))
    with pytest.raises(InvalidParams, match=r"^reply: must be a string"):
        parse_params(call("submit_many", jobs=[], reply=True))


def test_list_params() -> None:
    one = parse_params(call("list", state="failed", limit=5000))
    assert one.states == (State.FAILED,) and one.limit == MAX_LIST_LIMIT
    after = "2024-01-01T00:00:00Z"
    many = parse_params(call("list", state=["pending", "running"], created_after=after))
    assert many.states == (State.PENDING, State.RUNNING)
    assert many.created_after == datetime(2024, 1, 1, tzinfo=UTC)
    for bad, field in (
        ({"state": "lost"}, "state"),
        ({"state": [1]}, "state"),
        ({"limit": 0}, "limit"),
        ({"created_before": "2024-01-01"}, "created_before"),
        ({"cursor": 5}, "cursor"),
    ):
        with pytest.raises(InvalidParams) as caught:
            parse_params(Call("list", bad))
        assert caught.value.data["field"] == field


def _next_page(**filters: object) -> str:
    """The next_cursor a reply to `list` with these filters gives."""
    cursor = parse_params(call("list", **filters)).next_cursor("store-cursor-1")
    assert cursor is not None
    return cursor


def test_a_list_cursor_carries_the_stores_cursor_under_its_filters() -> None:
    filters = {
        "state": ["failed", "canceled"],
        "type": "flaky",
        "created_after": "2024-01-01T00:00:00Z",
    }
    cursor = _next_page(**filters)
    again = parse_params(call("list", cursor=cursor, limit=7, **filters))
    assert again.store_cursor == "store-cursor-1" and again.limit == 7  # the page size may change
    assert parse_params(call("list")).store_cursor is None
    assert parse_params(call("list", type="flaky")).next_cursor(None) is None  # the last page


def test_a_list_cursor_does_not_care_how_the_same_filters_are_spelled() -> None:
    cursor = _next_page(state=["failed", "canceled"], created_before="2024-01-01T02:00:00+02:00")
    same = {"state": ["canceled", "failed", "failed"], "created_before": "2024-01-01T00:00:00Z"}
    assert parse_params(call("list", cursor=cursor, **same)).store_cursor == "store-cursor-1"


@pytest.mark.parametrize(
    "other",
    [
        {},
        {"type": "other"},
        {"type": "flaky", "queue": "q"},
        {"type": "flaky", "state": "failed"},
        {"type": "flaky", "created_after": "2024-01-01T00:00:00Z"},
        {"type": "flaky", "created_before": "2024-01-01T00:00:00Z"},
    ],
)
def test_a_list_cursor_given_with_other_filters_is_refused(other: dict[str, object]) -> None:
    cursor = _next_page(type="flaky")
    with pytest.raises(InvalidParams, match=r"^cursor: was issued for other filters") as caught:
        parse_params(call("list", cursor=cursor, **other))
    assert caught.value.field == "cursor"


@pytest.mark.parametrize(
    "cursor",
    ["", "ajIwMTQ", "not base64!", "W10", "eyJjIjogMX0", "W" * 5000],
    ids=["empty", "the store's own", "not base64", "not an object", "no filters", "long"],
)
def test_a_list_cursor_this_server_did_not_issue_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidParams, match=r"^cursor: not a cursor this server issued") as caught:
        parse_params(call("list", cursor=cursor))
    assert caught.value.field == "cursor"


def test_wait_params() -> None:
    assert parse_params(call("wait", id=3)).timeout == 30.0
    assert parse_params(call("wait", id=3, timeout=10**9)).timeout == MAX_WAIT
    with pytest.raises(InvalidParams, match=r"^timeout: must be >= 0"):
        parse_params(call("wait", id=3, timeout=-1))
    with pytest.raises(InvalidParams, match=r"^id: required"):
        parse_params(call("wait"))
    with pytest.raises(InvalidParams, match=r"^id: must be an integer"):
        parse_params(call("get", id="3"))


# --- responses and errors -----------------------------------------------------------------------


def test_an_error_response_carries_both_codes_and_the_errors_data() -> None:
    error = UnknownType("unknown job type 'x'", type="x", known=["echo"])
    response = error_response(7, error)
    assert response == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": CODES["unknown_type"].rpc_code,
            "message": "unknown job type 'x'",
            "data": {"type": "x", "known": ["echo"], "code": "unknown_type"},
        },
    }
    reply = parse_reply(json.loads(encode(response)))
    rebuilt = error_from_code(reply.error_code, reply.error_message, reply.error_data)
    assert type(rebuilt) is UnknownType and rebuilt.data == {"type": "x", "known": ["echo"]}


def test_every_code_has_a_class_a_distinct_rpc_code_and_statuses() -> None:
    assert set(ERROR_CLASSES) == set(CODES)
    assert len({c.rpc_code for c in CODES.values()}) == len(CODES)
    for code, cls in ERROR_CLASSES.items():
        assert cls.code == code
        assert CODES[code].exit_status in (1, 2, 3, 4)
    assert CODES["not_found"].exit_status == 4 and CODES["unavailable"].exit_status == 3
    assert CODES["conflict"].exit_status == 1 and CODES["invalid_params"].exit_status == 2


def test_a_reply_without_data_code_falls_back_on_the_numeric_code() -> None:
    reply = parse_reply({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}})
    assert reply.error_code == "method_not_found"
    strange = parse_reply({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "?"}})
    assert strange.error_code == "internal_error"
    unknown = error_from_code("brand_new_code", "from a newer server")
    assert type(unknown) is JobdError and unknown.code == "brand_new_code"


@pytest.mark.parametrize(
    "message",
    [[], {"jsonrpc": "2.0", "id": 1}, {"id": 1, "result": 1}, {"jsonrpc": "2.0", "error": 5}],
)
def test_malformed_replies(message: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_reply(message)


def test_requests_and_results_round_trip() -> None:
    line = encode(request("get", {"id": 4}, 12))
    assert parse_call(decode(line)) == Call("get", {"id": 4}, 12)
    assert request("hello", None, 1) == {"jsonrpc": "2.0", "id": 1, "method": "hello"}
    assert parse_reply(decode(encode(result_response(12, {"a": 1})))).result == {"a": 1}


def test_error_data_that_is_not_json_is_sent_as_text() -> None:
    response = error_response(1, Conflict("no", state=State.RUNNING, when=NOW))
    data = json.loads(encode(response))["error"]["data"]
    assert data["state"] == "running" and data["when"] == str(NOW)


def test_the_not_found_message_is_the_errors() -> None:
    assert error_response(None, NotFound("job 5 not found"))["error"]["message"] == (
        "job 5 not found"
    )


# --- jobs on the wire ---------------------------------------------------------------------------


def _jobs() -> list[Job]:
    new = Job.new(41, NewJob("echo", {"a": [1, 2]}, correlation_id="c1"), NOW)
    running = new.claim("node-1", NOW + timedelta(seconds=30), NOW + timedelta(microseconds=7))
    failed = running.fail_attempt(
        ErrorInfo("ValueError", "bad", "Traceback…"), None, NOW + timedelta(seconds=1)
    )
    done = running.complete({"ok": True}, NOW + timedelta(seconds=2))
    return [new, running, failed, done]


def _members(job: object) -> dict[str, object]:
    """The members of a domain Job that travel on the wire, read from `job`."""
    return {name: getattr(job, name) for name in WIRE_FIELDS}


@pytest.mark.parametrize("job", _jobs(), ids=lambda j: j.state.value)
def test_job_from_dict_is_the_inverse_of_to_dict(job: Job) -> None:
    wire = json.loads(encode(job.to_dict()))
    decoded = job_from_dict(wire)
    assert _members(decoded) == _members(job)
    assert decoded.to_dict() == wire
    assert decoded.extra == {} and decoded.state_name == job.state.value


def test_a_newer_daemons_job_is_carried_through_as_it_is() -> None:
    """Replies only gain members: a state and a member this version does not know are kept,
    not refused."""
    wire = json.loads(encode(_jobs()[0].to_dict())) | {"state": "paused", "waits_for": [7, 8]}
    job = job_from_dict(wire)
    assert job.state == "paused" and job.state_name == "paused"
    assert not isinstance(job.state, State)
    assert job.extra == {"waits_for": [7, 8]}
    assert job.to_dict() == wire


@pytest.mark.parametrize("state", [None, 3, "", ["pending"]])
def test_a_job_without_a_state_name_is_malformed(state: object) -> None:
    wire = json.loads(encode(_jobs()[0].to_dict())) | {"state": state}
    with pytest.raises(InvalidRequest, match="malformed job"):
        job_from_dict(wire)


INSIDE = ("lease_token", "pending_parents", "history")  # history: the `attempts` method


def test_shared_times_print_exactly_what_each_job_prints_alone() -> None:
    """A reply's jobs share one cache of printed times; a job's wire form must not differ
    from it in any member, value or order, also when some jobs hold the same instants in
    another zone (those print differently)."""
    plus_two = timezone(timedelta(hours=2))
    elsewhere = [
        dataclasses.replace(
            job,
            **{
                name: getattr(job, name).astimezone(plus_two)
                for name in ("run_at", "created_at", "updated_at", "started_at", "finished_at")
                if getattr(job, name) is not None
            },
        )
        for job in _jobs()
    ]
    times: dict = {}
    for job in _jobs() + elsewhere + _jobs():
        expected = job.to_dict()
        wire = job.to_dict(times)
        assert wire == expected and list(wire) == list(expected)
        shown = [f.name for f in dataclasses.fields(Job) if f.name not in INSIDE]
        assert list(wire) == shown  # the lease token, parent count and history stay inside
    assert elsewhere[0].to_dict(times)["created_at"] == "2024-06-01T14:00:00+02:00"


def test_a_newer_servers_job_fields_do_not_change_the_known_ones() -> None:
    wire = _jobs()[0].to_dict() | {"tags": ["new"]}
    assert _members(job_from_dict(wire)) == _members(_jobs()[0])


@pytest.mark.parametrize(
    "member", [{"state": 5}, {"created_at": "yesterday"}, {"last_error": "boom"}], ids=str
)
def test_a_malformed_job_is_reported(member: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest, match="malformed job"):
        job_from_dict(_jobs()[0].to_dict() | member)


def test_the_error_table_in_the_docs_is_the_code_table() -> None:
    """docs/protocol.md's error table, row by row, against jobd.errors.CODES."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (-?\d+) \| (\d) \| (\d{3}) \|", docs, re.MULTILINE)
    documented = {code: (int(rpc), int(exit_), int(http)) for code, rpc, exit_, http in rows}
    actual = {c.code: (c.rpc_code, c.exit_status, c.http_status) for c in CODES.values()}
    assert documented == actual


def test_every_method_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    assert set(re.findall(r"^### `(\w+)`$", docs, re.MULTILINE)) == set(METHODS)


@pytest.mark.parametrize("params", [{}, {"name": ""}, {"name": 5}])
def test_a_schedule_method_needs_a_name(params: dict[str, object]) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params(Call("schedule_pause", params))
    assert caught.value.field == "name"


def test_a_list_cursor_is_bound_to_the_schedule_filter() -> None:
    page = parse_list({"schedule": "nightly"})
    assert page.filters()["schedule"] == "nightly"
    cursor = page.next_cursor("c1")
    assert cursor is not None
    assert parse_list({"schedule": "nightly", "cursor": cursor}).store_cursor == "c1"
    with pytest.raises(InvalidParams, match="schedule"):
        parse_list({"schedule": "other", "cursor": cursor})
    with pytest.raises(InvalidParams):
        parse_list({"cursor": cursor})
    # A page without the filter keeps the fingerprint it had before the filter existed.
    assert parse_list({}).filters_fingerprint() == ListParams().filters_fingerprint()
