"""The control protocol fuzzed against a live `jobd run` on PostgreSQL (docs/guarantees.md, "Bad
input"): random JSON, requests with every method and wrong types, huge numbers, deep nesting,
invalid UTF-8, lines over the size limit, a last line without its newline, and writers that
send a byte at a time.

The property: whatever arrives, the daemon stays up, and every line that asks for an answer
gets exactly one well-formed JSON-RPC 2.0 response, in order, with the request's id (null when
the id could not be read) -- or, after a line over the limit, a payload_too_large and the end
of the connection.  Notifications (no `id`) get nothing.  Examples are derandomized, so a run
is repeatable; JOBD_FUZZ_RANDOM=1 explores new ones, JOBD_FUZZ_EXAMPLES sets how many.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from control_harness import Daemon, running_daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobd.protocol import METHODS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MAX_REQUEST = 16 * 1024  # the daemon's control.max_request_bytes: small, so it is reached
EXAMPLES = int(os.environ.get("JOBD_FUZZ_EXAMPLES", "300"))
FIELDS = (
    "type", "payload", "queue", "priority", "max_attempts", "run_at", "delay", "timeout",
    "idempotency_key", "correlation_id", "id", "state", "limit", "cursor", "jobs",
    "created_after", "created_before",
)  # fmt: skip


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    schema = f"jobd_fuzz_{uuid.uuid4().hex[:8]}"
    env = {
        "JOBD_CONTROL_MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "JOBD_SHUTDOWN_DRAIN_TIMEOUT": "1",  # a fuzzed `sleep` job must not hold the exit
        "JOBD_SHUTDOWN_KILL_GRACE": "0.2",
        "JOBD_LOGGING_LEVEL": "INFO",
    }
    with running_daemon(pg_url, schema, workers=1, env=env) as d:
        yield d


# --- what is sent -----------------------------------------------------------------------------

huge_ints = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**400)])
numbers = st.one_of(st.integers(), huge_ints, st.floats(allow_nan=False), st.just(1e308))
texts = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.sampled_from(["", "\x00", "echo", "sleep", "default", "\n", "\u2028", "2030-01-01T00:00Z"]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(texts, st.sampled_from(FIELDS)), inner, max_size=4),
    ),
    max_leaves=12,
)
params = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5) | json_values
ids = st.one_of(st.integers(-5, 10**6), st.text(max_size=8), st.none(), numbers, json_values)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    message: dict[str, Any] = {}
    if draw(st.booleans()):
        message["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "1.0", 2]))
    message["method"] = draw(st.one_of(st.sampled_from(list(METHODS)), texts, json_values))
    if draw(st.integers(0, 9)):  # a few notifications
        message["id"] = draw(ids)
    if draw(st.booleans()):
        message["params"] = draw(params)
    if message.get("method") == "wait" and isinstance(message.get("params"), dict):
        timeout = message["params"].get("timeout")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout > 0.3:
            message["params"]["timeout"] = 0.2  # a fuzzed wait must not hold the test
    return message


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


lines = st.one_of(
    requests().map(lambda m: json.dumps(m).encode()),
    st.lists(requests(), max_size=3).map(lambda m: json.dumps(m).encode()),  # batches
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),  # invalid UTF-8 and worse
    # nesting: shallow, or far past the interpreter's recursion limit (not near it: where
    # exactly parsing gives up is the interpreter's business)
    st.one_of(st.integers(1, 50), st.integers(5_000, 100_000)).map(deep),
    st.sampled_from([b"", b"   ", b"NaN", b'{"id": 1, "id": 2}', b'"\xed\xa0\x80"']),
    st.integers(MAX_REQUEST - 64, MAX_REQUEST + 64).map(  # around the limit
        lambda n: json.dumps({"jsonrpc": "2.0", "id": 7, "method": "hello", "x": "a" * n}).encode()
    ),
)


# --- what must come back ----------------------------------------------------------------------


def valid_id(value: Any) -> bool:
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def expected(line: bytes) -> list[Any] | str:
    """The ids of the answers one line must get, in order; "batch" for a batch (an array or
    nothing); "close" for a line over the limit (payload_too_large, then the end)."""
    if len(line) > MAX_REQUEST:
        return "close"
    if not line.strip():
        return []
    if line.startswith(b"[" * 5_000):
        return [None]  # too deep to parse: parse_error (hypothesis raises our own limit)
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return [None]  # parse_error
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return [None]  # an unpaired surrogate ("\ud800"): parse_error
    if isinstance(value, list):
        return "batch" if value else [None]  # an empty batch: one invalid_request
    if not isinstance(value, dict):
        return [None]  # invalid_request
    if "id" not in value:
        return []  # a notification, even a bad one, is not answered
    return [value["id"] if valid_id(value["id"]) else None]


def _refuse(name: str) -> Any:
    raise ValueError(name)


def check_response(reply: Any) -> None:
    assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0", reply
    assert "id" in reply and valid_id(reply["id"]), reply
    assert ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error["code"], int) and isinstance(error["message"], str), reply
        assert isinstance(error["data"]["code"], str), reply
        assert error["data"]["code"] != "internal_error", reply  # a bug, not bad input


def converse(daemon: Daemon, payload: bytes, slow: bool) -> bytes:
    """Send `payload`, close our half, read everything the daemon says until it closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(daemon.socket))
    try:
        try:
            if slow:  # a writer that sends a little at a time
                for i in range(0, len(payload), 7):
                    sock.sendall(payload[i : i + 7])
                    time.sleep(0.0005)
            else:
                sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it closed on us (a line over the limit): its answer is still there to read
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("JOBD_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    sent=st.lists(lines, min_size=1, max_size=4),
    last_newline=st.booleans(),
    slow=st.integers(0, 9).map(lambda n: n == 0),
)
def test_every_request_gets_one_well_formed_answer(
    daemon: Daemon, sent: list[bytes], last_newline: bool, slow: bool
) -> None:
    payload = b"\n".join(sent) + (b"\n" if last_newline else b"")
    if slow and len(payload) > 4096:
        slow = False
    data = converse(daemon, payload, slow)

    assert data == b"" or data.endswith(b"\n"), data[-200:]
    replies = [json.loads(line) for line in data.splitlines()]
    want: list[Any] = []
    closed = False
    for line in sent:
        what = expected(line)
        if what == "close":
            closed = True
            break
        want.append(what)
    got = iter(replies)
    for what in want:
        if what == "batch":
            continue  # checked below: any array is a batch's answer
        for call_id in what:
            reply = next(got, None)
            while isinstance(reply, list):  # a batch's answers, in its place
                for item in reply:
                    check_response(item)
                reply = next(got, None)
            assert reply is not None, (sent, replies)
            check_response(reply)
            assert reply["id"] == call_id or (
                isinstance(call_id, float) and reply["id"] == call_id
            ), (call_id, reply, sent)
    rest = list(got)
    for reply in rest:
        if isinstance(reply, list):
            for item in reply:
                check_response(item)
            continue
        check_response(reply)
        assert closed and reply["error"]["data"]["code"] == "payload_too_large", (rest, sent)
    assert daemon.process.poll() is None, daemon.log()[-5000:]


def test_the_daemon_still_serves_after_the_fuzzing(daemon: Daemon) -> None:
    """Run after the property (same module daemon): alive, answering, no bug logged."""
    with daemon.client(timeout=10) as client:
        assert client.hello().protocol == 1
        assert client.health().store == "ok"
    log = daemon.log()
    assert "control method failed" not in log and "control connection failed" not in log
    assert "Traceback" not in log, log[-5000:]


def test_many_slow_writers_at_once_do_not_block_others(daemon: Daemon) -> None:
    """Connections that trickle a request in (or never finish it) hold no one else up."""
    rng = random.Random(7)
    slow = []
    for _ in range(50):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))
        sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth'[: rng.randint(1, 30)])
        slow.append(sock)
    try:
        started = time.monotonic()
        with daemon.client(timeout=10) as client:
            for _ in range(20):
                client.hello()
        assert time.monotonic() - started < 5
    finally:
        for sock in slow:
            sock.close()
