"""The control protocol against a real `jobd run` on PostgreSQL, spoken in raw bytes where it
matters: garbage, oversized lines, half lines, hundreds of clients at once -- and after each,
the daemon still answers everyone else and has lost no job.

One daemon serves the module (starting one takes a second); the tests that are about starting
(a stale socket, a second daemon) start their own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from control_harness import Daemon, running_daemon, short_dir, start_daemon

from jobd.client import Client
from jobd.errors import Conflict, InvalidParams, NotFound, PayloadTooLarge, UnknownType
from tests.eventually import wait_for

pytestmark = pytest.mark.postgres

MAX_REQUEST = 64 * 1024  # the module daemon's control.max_request_bytes: small, to test it


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    schema = f"jobd_ctl_{uuid.uuid4().hex[:8]}"
    env = {
        "JOBD_CONTROL_MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "JOBD_JOBS_DEFAULT_MAX_ATTEMPTS": "4",
    }
    with running_daemon(pg_url, schema, workers=2, env=env) as d:
        yield d


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


def connect(daemon: Daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(daemon.socket))
    return sock


def request(method: str, params: dict | None = None, call_id: object = 1) -> bytes:
    message = {"jsonrpc": "2.0", "id": call_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode() + b"\n"


def read_line(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return json.loads(data)


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def assert_serving(daemon: Daemon) -> None:
    with daemon.client(timeout=10) as c:
        assert c.hello().protocol == 1


def new_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


# --- the socket --------------------------------------------------------------------------------


def test_the_socket_is_0660(daemon: Daemon) -> None:
    info = os.stat(daemon.socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660


def test_hello_in_raw_bytes(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(request("hello", call_id="a"))
        reply = read_line(sock)
    assert reply["jsonrpc"] == "2.0" and reply["id"] == "a"
    assert reply["result"]["protocol"] == 1
    assert set(reply["result"]["methods"]) >= {"submit", "submit_many", "wait", "health"}


def test_garbage_gets_parse_error_and_the_connection_stays_usable(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(b"\x00\xff\xfe garbage \x80\n")
        bad_utf8 = read_line(sock)
        sock.sendall(b"{not json at all\n")
        bad_json = read_line(sock)
        sock.sendall(b'{"jsonrpc": "2.0", "method": 17, "id": 3}\n')
        bad_request = read_line(sock)
        sock.sendall(request("hello", call_id=4))
        hello = read_line(sock)
    assert bad_utf8["error"]["data"]["code"] == "parse_error" and bad_utf8["id"] is None
    assert bad_utf8["error"]["code"] == -32700
    assert bad_json["error"]["data"]["code"] == "parse_error"
    assert bad_request["error"]["data"]["code"] == "invalid_request" and bad_request["id"] == 3
    assert hello["id"] == 4 and "result" in hello


def test_a_5_mib_line_is_refused_and_only_its_connection_closed(daemon: Daemon) -> None:
    bystander = connect(daemon)
    big = connect(daemon)
    line = request("submit", {"type": "echo", "payload": {"x": "a" * (5 * 1024 * 1024)}})
    big.sendall(line)  # the daemon drops the rest of it (for a while), so this goes through
    reply = read_to_eof(big)  # the error, then a clean end of stream (no reset)
    big.close()
    assert len(reply.splitlines()) == 1, reply[:500]  # the error, then the end
    error = json.loads(reply)["error"]
    assert error["data"]["code"] == "payload_too_large"
    assert error["data"]["limit"] == MAX_REQUEST
    assert str(MAX_REQUEST) in error["message"]
    # The other connection, open all along, is unaffected; so are new ones.
    bystander.sendall(request("hello", call_id="still"))
    assert read_line(bystander)["id"] == "still"
    bystander.close()
    assert_serving(daemon)


def test_a_line_just_under_the_limit_is_served(daemon: Daemon, client: Client) -> None:
    queue = new_queue()
    skeleton = request("submit", {"type": "echo", "queue": queue, "payload": {"x": ""}})
    filler = "a" * (MAX_REQUEST - len(skeleton) + 1)  # the line without its \n: exactly max
    with connect(daemon) as sock:
        sock.sendall(request("submit", {"type": "echo", "queue": queue, "payload": {"x": filler}}))
        reply = read_line(sock)
    assert reply["result"]["created"] is True
    assert len(client.list(queue=queue).jobs) == 1


def test_half_a_line_then_a_disconnect(daemon: Daemon, client: Client) -> None:
    queue = new_queue()
    for cut in (1, 20, 60):
        with connect(daemon) as sock:
            sock.sendall(request("submit", {"type": "echo", "queue": queue})[:cut])
    assert_serving(daemon)
    assert client.list(queue=queue).jobs == []  # no half request was acted on


def test_a_last_request_without_its_newline_is_answered(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(request("hello", call_id=9).rstrip(b"\n"))
        sock.shutdown(socket.SHUT_WR)  # end of requests; the reply can still come back
        reply = json.loads(read_to_eof(sock))
    assert reply["id"] == 9 and reply["result"]["protocol"] == 1


def test_a_batch_and_a_notification(daemon: Daemon, client: Client) -> None:
    queue = new_queue()
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "hello"},
        {"jsonrpc": "2.0", "method": "submit", "params": {"type": "echo", "queue": queue}},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
    ]
    with connect(daemon) as sock:
        sock.sendall(json.dumps(batch).encode() + b"\n")
        replies = read_line(sock)
        # A notification alone gets no reply at all: the next line is the hello's.
        sock.sendall(json.dumps(batch[1]).encode() + b"\n" + request("hello", call_id=3))
        after = read_line(sock)
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[1]["error"]["data"]["code"] == "method_not_found"
    assert after["id"] == 3
    assert len(client.list(queue=queue).jobs) == 2  # both notifications were acted on


def test_200_concurrent_clients_lose_nothing(daemon: Daemon, client: Client) -> None:
    """200 connections open at once, each submitting and reading its jobs back, some sending
    garbage in between: every job is stored exactly once and runs."""
    clients, per_client = 200, 5
    queue = new_queue()
    all_connected = threading.Barrier(clients, timeout=60)

    def one_client(n: int) -> list[int]:
        with connect(daemon) as sock:
            all_connected.wait()  # every connection is open before anyone sends
            ids = []
            for i in range(per_client):
                if n % 10 == 0:
                    sock.sendall(b"garbage\n")
                    assert read_line(sock)["error"]["data"]["code"] == "parse_error"
                key = f"{queue}-{n}-{i}"
                params = {"type": "echo", "queue": queue, "payload": {"n": n, "i": i}}
                sock.sendall(request("submit", params | {"idempotency_key": key}, call_id=i))
                reply = read_line(sock)
                assert reply["id"] == i, reply
                ids.append(reply["result"]["job"]["id"])
            return ids

    with ThreadPoolExecutor(clients) as pool:
        ids = [job_id for result in pool.map(one_client, range(clients)) for job_id in result]

    assert len(ids) == len(set(ids)) == clients * per_client
    stored = list(client.iter_jobs(queue=queue))
    assert sorted(j.id for j in stored) == sorted(ids)
    payloads = {(j.payload["n"], j.payload["i"]) for j in stored}
    assert payloads == {(n, i) for n in range(clients) for i in range(per_client)}
    deadline = time.monotonic() + 60
    for job_id in ids:
        result = client.wait(job_id, timeout=max(deadline - time.monotonic(), 0))
        assert result.job.state.value == "completed", result.job
    assert_serving(daemon)


def test_requests_are_logged_with_the_peers_uid_and_pid(daemon: Daemon) -> None:
    marker = f"log-{uuid.uuid4().hex}"
    with connect(daemon) as sock:
        sock.sendall(request("hello", call_id=marker))
        read_line(sock)
    line = wait_for(
        lambda: next((line for line in daemon.log().splitlines() if marker in line), None),
        timeout=10,
        what=f"a log line for request {marker}",
    )
    record = json.loads(line)
    assert record["message"] == "control request"
    assert record["method"] == "hello" and record["outcome"] == "ok"
    assert record["peer_pid"] == os.getpid()
    assert record["peer_uid"] == os.getuid()


# --- the methods --------------------------------------------------------------------------------


def test_submit_fills_in_defaults(client: Client) -> None:
    echo = client.submit("echo", {"a": 1}).job
    assert echo.max_attempts == 4  # jobs.default_max_attempts of this daemon
    assert len(echo.correlation_id) == 32 and int(echo.correlation_id, 16) >= 0
    greet = client.submit("ctl_greet", {"name": "x"}, correlation_id="corr-1").job
    assert greet.max_attempts == 5  # the handler's own default
    assert greet.correlation_id == "corr-1"
    later = client.submit("echo", delay=3600).job
    assert 3500 < (later.run_at - later.created_at).total_seconds() < 3700
    assert client.cancel(later.id).state.value == "canceled"


def test_submit_refuses_what_no_handler_would_run(client: Client) -> None:
    with pytest.raises(UnknownType) as unknown:
        client.submit("no_such_type")
    assert "no_such_type" in unknown.value.message
    assert {"echo", "sleep", "ctl_fail"} <= set(unknown.value.data["known"])
    with pytest.raises(InvalidParams) as invalid:
        client.submit("ctl_greet", {"name": 5})
    assert "name: required, a string" in invalid.value.message
    assert invalid.value.data["field"] == "payload"
    with pytest.raises(InvalidParams) as wrong_type:
        client.call("submit", {"type": "echo", "priority": "high"})
    assert wrong_type.value.data["field"] == "priority"


def test_unknown_params_are_ignored(client: Client) -> None:
    raw = client.call("submit", {"type": "echo", "from_the_future": {"x": 1}})
    assert raw["created"] is True
    assert set(raw["job"]) == {
        "id", "type", "queue", "priority", "payload", "state", "attempts", "max_attempts",
        "crashes", "run_at", "timeout", "last_error", "result", "idempotency_key",
        "correlation_id", "cancel_requested", "lease_owner", "lease_expires_at", "created_at",
        "updated_at", "started_at", "finished_at", "schedule", "on_parent_failure", "parents",
        "progress", "progress_at", "result_ttl",
    }  # fmt: skip


def test_submit_many_is_one_call_for_a_thousand(client: Client) -> None:
    queue = new_queue()
    results = client.submit_many({"type": "echo", "queue": queue} for _ in range(1000))
    assert len(results) == 1000 and all(r.created for r in results)
    assert len(list(client.iter_jobs(queue=queue))) == 1000
    with pytest.raises(InvalidParams, match="at most 1000"):
        client.submit_many({"type": "echo", "queue": queue} for _ in range(1001))
    with pytest.raises(UnknownType, match=r"jobs\[1\]\.type"):
        client.submit_many([{"type": "echo", "queue": queue}, {"type": "nope", "queue": queue}])
    assert len(list(client.iter_jobs(queue=queue))) == 1000  # all or nothing


def test_submit_ids_answers_the_ids_of_what_it_stored(client: Client) -> None:
    queue = new_queue()
    batch = client.submit_ids({"type": "echo", "queue": queue} for _ in range(1000))
    assert len(batch.ids) == 1000 and all(batch.created) and batch.names == {}
    assert sorted(job.id for job in client.iter_jobs(queue=queue)) == sorted(batch.ids)
    with pytest.raises(UnknownType, match=r"jobs\[1\]\.type"):
        client.submit_ids([{"type": "echo", "queue": queue}, {"type": "nope", "queue": queue}])
    raw = client.call("submit_many", {"jobs": [{"type": "echo", "queue": queue}], "reply": "ids"})
    assert set(raw) == {"ids", "created", "names"}  # no job objects to build, encode or read


def test_wait_is_answered_when_the_job_finishes(client: Client) -> None:
    job = client.submit("sleep", {"seconds": 0.3}).job
    started = time.monotonic()
    result = client.wait(job.id, timeout=20)
    assert not result.timed_out and result.job.state.value == "completed"
    assert time.monotonic() - started < 5
    slow = client.submit("sleep", {"seconds": 30}).job
    started = time.monotonic()
    timed_out = client.wait(slow.id, timeout=0.5)
    assert timed_out.timed_out and not timed_out.job.state.terminal
    assert 0.4 < time.monotonic() - started < 5
    client.cancel(slow.id)


def test_the_control_server_has_sessions_of_its_own(client: Client, pg_url: str) -> None:
    """On PostgreSQL the control server's requests use a pool of their own (named
    jobd-control), apart from the supervisor's writes (docs/adr/0036); a `wait` still hears
    of the finish the supervisor wrote through its own store."""
    job = client.submit("echo", {"n": 1}).job
    assert client.wait(job.id, timeout=20).job.state.value == "completed"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            )
        }
    assert {"jobd", "jobd-control"} <= names


def test_cancel_stops_a_running_job_at_once(client: Client) -> None:
    job = client.submit("sleep", {"seconds": 60}).job
    wait_for(lambda: client.get(job.id).state.value == "running", what="the job to start")
    started = time.monotonic()
    requested = client.cancel(job.id)
    assert requested.state.value in ("running", "canceled")
    result = client.wait(job.id, timeout=20)
    assert result.job.state.value == "canceled"
    assert time.monotonic() - started < 5


def test_list_filters_and_pages(client: Client) -> None:
    queue = new_queue()
    ids = [client.submit("echo", queue=queue, delay=3600).job.id for _ in range(5)]
    page = client.list(queue=queue, limit=2)
    assert [j.id for j in page.jobs] == ids[::-1][:2] and page.next_cursor
    rest = client.list(queue=queue, limit=10, cursor=page.next_cursor)
    assert [j.id for j in rest.jobs] == ids[::-1][2:] and rest.next_cursor is None
    assert client.list(queue=queue, state="completed").jobs == []
    assert len(client.list(queue=queue, state=["pending", "failed"]).jobs) == 5
    for job_id in ids:
        client.cancel(job_id)


def test_not_found_and_conflict(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get(10**12)
    job = client.submit("echo").job
    assert client.wait(job.id, timeout=20).job.state.value == "completed"
    with pytest.raises(Conflict, match="it is completed"):
        client.cancel(job.id)


def test_stats_workers_and_health(client: Client) -> None:
    stats = client.stats()
    assert stats.workers["expected"] == 2 and stats.workers["total"] == 2
    assert set(stats.by_state) == {
        "waiting",
        "pending",
        "running",
        "completed",
        "failed",
        "canceled",
    }
    assert stats.uptime > 0 and stats.node
    views = client.workers()
    assert [w.index for w in views] == [1, 2] and all(w.pid for w in views)
    health = client.health()
    assert health.ok and health.store == "ok" and health.workers_ready == 2


# --- starting and stopping ---------------------------------------------------------------------


def test_a_stale_socket_is_replaced(pg_url: str, pg_schema: str) -> None:
    directory = short_dir()
    stale = directory / "jobd.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # the file stays, nobody listens: what a crashed daemon leaves
    daemon = start_daemon(pg_url, pg_schema, workers=1, directory=directory)
    try:
        daemon.wait_ready()
        assert_serving(daemon)
        assert "replacing a stale control socket" in daemon.log()
    finally:
        daemon.stop(expect=0)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_second_daemon_on_the_same_socket_is_refused(daemon: Daemon, pg_url: str) -> None:
    second = start_daemon(
        pg_url,
        f"jobd_ctl2_{uuid.uuid4().hex[:8]}",
        workers=1,
        env={"JOBD_SOCKET": str(daemon.socket), "JOBD_LOGGING_FORMAT": "text"},
    )
    assert second.process.wait(60) == 1, second.log()
    assert f"another jobd is already listening on {daemon.socket}" in second.log()
    assert_serving(daemon)  # the first one is untouched
    assert daemon.socket.exists()


def test_something_else_listening_is_not_replaced(pg_url: str, pg_schema: str) -> None:
    directory = short_dir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(directory / "jobd.sock"))
    listener.listen(1)
    try:
        daemon = start_daemon(pg_url, pg_schema, workers=1, directory=directory)
        assert daemon.process.wait(60) == 1, daemon.log()
        assert "another jobd is already listening on" in daemon.log()
        assert (directory / "jobd.sock").exists()  # left to its owner
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_stopping_answers_a_wait_in_progress(pg_url: str, pg_schema: str) -> None:
    with running_daemon(pg_url, pg_schema, workers=1) as daemon, daemon.client() as c:
        job = c.submit("echo", delay=3600).job
        with connect(daemon) as sock:
            # One write, two requests: the daemon answers them in turn on this connection, so
            # once the hello's answer is here the wait is in progress.
            wait = request("wait", {"id": job.id, "timeout": 600}, call_id=2)
            sock.sendall(request("hello", call_id=1) + wait)
            assert read_line(sock)["id"] == 1
            started = time.monotonic()
            daemon.stop(expect=0)
            answer = read_line(sock)
        assert time.monotonic() - started < 15
        assert answer["id"] == 2 and answer["result"]["timed_out"] is True


def test_the_client_reports_an_oversized_request(client: Client) -> None:
    with pytest.raises(PayloadTooLarge, match=r"control\.max_request_bytes"):
        client.submit("echo", {"x": "a" * (2 * MAX_REQUEST)})
    assert client.hello().protocol == 1  # on a new connection


def test_metrics_are_prometheus_text(client: Client) -> None:
    queue = new_queue()
    client.submit("echo", queue=queue, delay=3600)
    text = client.metrics()
    assert f'jobd_jobs_submitted_total{{queue="{queue}",type="echo"}} 1.0' in text
    # The counts by queue and state are read from the store at most every few seconds: this
    # job's row appears once a scrape finds them stale (the module's other tests, which may
    # run before this one or not, scrape too).
    own = f'jobd_jobs{{queue="{queue}",state="pending"}} 1.0'
    wait_for(lambda: own in client.metrics(), what=own, poll=0.2)
