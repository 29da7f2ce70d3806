"""The HTTP shim's server in-process, on a real loopback socket, with a stand-in for the daemon:
keep-alive, tokens, the body limit, deadlines against slow clients, the connection cap,
problem+json for the standard library's own errors, request ids, and what is (never) logged.

tests/integration/test_http.py does the same to `jobd http` in front of a real daemon.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_http_api import JOB, FakeClient

from jobd.errors import DaemonUnreachable
from jobd.http import server as server_module
from jobd.http.server import HttpSettings, ShimServer

TOKEN = "t0ken-s3cret-value"
HEALTH = {"status": "ok", "store": "ok", "workers": {"ready": 1, "expected": 1}, "draining": False}


class Pool:
    """The client pool's interface, answering from a table (thread-safe enough: one dict)."""

    def __init__(self, **answers: Any):
        self.client = FakeClient({"health": HEALTH, "get": {"job": JOB}, **answers})
        self.closed = False

    @contextmanager
    def reader(self) -> Iterator[FakeClient]:
        yield self.client

    writer = reader

    def close(self) -> None:
        self.closed = True


@dataclass
class Shim:
    server: ShimServer
    pool: Pool

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture
def make_shim() -> Iterator[Callable[..., Shim]]:
    started: list[ShimServer] = []

    def make(pool: Pool | None = None, **settings: Any) -> Shim:
        pool = pool or Pool()
        values = {"listen": "127.0.0.1:0", "socket": Path("/nonexistent.sock"), **settings}
        server = ShimServer(HttpSettings(**values), clients=pool)  # type: ignore[arg-type]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        started.append(server)
        return Shim(server, pool)

    yield make
    for server in started:
        server.shutdown()
        server.server_close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response from a raw socket: status, headers (lower-cased names), body."""
    reader = sock.makefile("rb")
    status_line = reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return status, headers, body


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closes the connection (reads drained) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (TimeoutError, ConnectionResetError):
        return False


# --- the basics ---------------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(make_shim: Any) -> None:
    shim = make_shim()
    conn = shim.connection()
    for _ in range(3):
        conn.request("GET", "/jobs/7")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == JOB
        assert response.getheader("Connection") is None
    first_socket = conn.sock
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    assert conn.sock is first_socket
    conn.close()


def test_request_id_echoed_generated_or_refused(make_shim: Any) -> None:
    shim = make_shim()
    response, _ = shim.request("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.getheader("X-Request-ID") == "abc-123"
    response, _ = shim.request("GET", "/healthz")
    assert len(response.getheader("X-Request-ID")) == 32
    response, body = shim.request("GET", "/healthz", headers={"X-Request-ID": "x" * 201})
    assert response.status == 400
    problem = json.loads(body)
    assert problem["field"] == "X-Request-ID"
    assert problem["request_id"] == response.getheader("X-Request-ID") != "x" * 201


def test_server_header_names_jobd_not_python(make_shim: Any) -> None:
    response, _ = make_shim().request("GET", "/healthz")
    assert response.getheader("Server").startswith("jobd/")
    assert "Python" not in response.getheader("Server")


def test_unknown_path_is_404_problem(make_shim: Any) -> None:
    response, body = make_shim().request("GET", "/nope")
    assert response.status == 404
    assert response.getheader("Content-Type") == "application/problem+json"
    assert json.loads(body)["code"] == "not_found"


def test_unknown_method_is_405_not_501(make_shim: Any) -> None:
    response, body = make_shim().request("BREW", "/jobs")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, POST, HEAD"
    assert json.loads(body)["code"] == "method_not_allowed"


def test_head_has_the_length_but_no_body(make_shim: Any) -> None:
    shim = make_shim()
    conn = shim.connection()
    conn.request("HEAD", "/healthz")
    response = conn.getresponse()
    assert response.status == 200
    assert int(response.getheader("Content-Length")) > 0
    assert response.read() == b""
    conn.request("GET", "/healthz")  # the connection is still in step
    assert conn.getresponse().status == 200
    conn.close()


def test_daemon_unreachable_is_503_with_retry_after(make_shim: Any) -> None:
    pool = Pool(get=DaemonUnreachable("no socket at /secret/path.sock"))
    response, body = make_shim(pool).request("GET", "/jobs/1")
    assert response.status == 503
    assert response.getheader("Retry-After") == "1"
    assert "/secret/path.sock" not in body.decode()


def test_a_bug_in_an_endpoint_is_500_problem(make_shim: Any, caplog: Any) -> None:
    pool = Pool(get=RuntimeError("boom"))
    response, body = make_shim(pool).request("GET", "/jobs/1")
    assert response.status == 500
    assert json.loads(body)["code"] == "internal_error"
    assert any(r.message == "error in the HTTP shim" and r.exc_info for r in caplog.records)


# --- tokens -------------------------------------------------------------------------------------


def test_tokens_missing_wrong_right(make_shim: Any) -> None:
    shim = make_shim(tokens=("other", TOKEN))
    response, body = shim.request("GET", "/jobs/7")
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Bearer realm="jobd"'
    assert json.loads(body)["code"] == "unauthorized"
    response, _ = shim.request("GET", "/jobs/7", headers={"Authorization": "Bearer nope"})
    assert response.status == 401
    assert 'error="invalid_token"' in response.getheader("WWW-Authenticate")
    response, _ = shim.request("GET", "/jobs/7", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status == 401
    response, body = shim.request("GET", "/jobs/7", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200
    assert json.loads(body) == JOB


def test_a_non_ascii_token_matches_its_utf8_bytes(make_shim: Any) -> None:
    shim = make_shim(tokens=("clé-secrète",))
    for token, status in (("clé-secrète".encode(), 200), (b"cle-secrete", 401)):
        with shim.raw() as sock:
            sock.sendall(b"GET /jobs/7 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token)
            sock.sendall(b"\r\n\r\n")
            assert read_response(sock)[0] == status


def test_open_endpoints_need_no_token_but_metrics_does(make_shim: Any) -> None:
    shim = make_shim(Pool(metrics="x 1\n"), tokens=(TOKEN,))
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert shim.request("GET", path)[0].status == 200, path
    assert shim.request("GET", "/metrics")[0].status == 401
    assert shim.request("GET", "/nope")[0].status == 401  # no probing for routes without one
    ok, _ = shim.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200


def test_an_unauthorized_request_with_a_body_closes_the_connection(make_shim: Any) -> None:
    shim = make_shim(tokens=(TOKEN,))
    body = b'{"type": "echo"}'
    response, _ = shim.request("POST", "/jobs", body, {"Content-Type": "application/json"})
    assert response.status == 401
    assert response.getheader("Connection") == "close"


def test_no_token_and_no_payload_is_logged(make_shim: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="jobd")
    secret_payload = "payload-marker-8731"
    pool = Pool(submit={"job": JOB, "created": True})
    shim = make_shim(pool, tokens=(TOKEN,))
    body = json.dumps({"type": "echo", "payload": {"p": secret_payload}}).encode()
    for token in (TOKEN, "wrong-" + TOKEN):
        shim.request(
            "POST",
            "/jobs?q=1",
            body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
    assert any(r.message == "http request" for r in caplog.records)
    for record in caplog.records:
        text = json.dumps(vars(record), default=str)
        assert TOKEN not in text
        assert secret_payload not in text


def test_non_loopback_without_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        ShimServer(HttpSettings(listen="0.0.0.0:0", socket=Path("/x.sock")), clients=Pool())  # type: ignore[arg-type]


def test_settings_repr_hides_tokens() -> None:
    settings = HttpSettings(listen="127.0.0.1:0", socket=Path("/x"), tokens=(TOKEN,))
    assert TOKEN not in repr(settings)


# --- bodies -------------------------------------------------------------------------------------


def test_body_too_large_is_413_before_the_body_is_read(make_shim: Any) -> None:
    shim = make_shim(max_body_bytes=2048)
    with shim.raw() as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n" + b"{" * 1000
        )
        status, headers, body = read_response(sock)
        assert status == 413
        assert headers["connection"] == "close"
        assert json.loads(body)["code"] == "payload_too_large"
        assert closed_by_peer(sock)


def test_expect_100_continue_gets_413_instead_of_continue(make_shim: Any) -> None:
    shim = make_shim(max_body_bytes=2048)
    with shim.raw() as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        status, _, body = read_response(sock)
        assert status == 413
        assert json.loads(body)["field"] == "body"


def test_expect_100_continue_within_the_limit_continues(make_shim: Any) -> None:
    shim = make_shim(Pool(submit={"job": JOB, "created": True}))
    payload = b'{"type": "echo"}'
    with shim.raw() as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(payload)
        )
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100")
        assert reader.readline() == b"\r\n"
        sock.sendall(payload)
        assert reader.readline().startswith(b"HTTP/1.1 201")


def test_chunked_bodies_are_411(make_shim: Any) -> None:
    with make_shim().raw() as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        )
        status, headers, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (411, "length_required")
        assert headers["connection"] == "close"


def test_a_bad_content_length_is_400(make_shim: Any) -> None:
    with make_shim().raw() as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        status, _, body = read_response(sock)
        assert (status, json.loads(body)["field"]) == (400, "Content-Length")


def test_wrong_content_type_keeps_the_connection(make_shim: Any) -> None:
    shim = make_shim(Pool(submit={"job": JOB, "created": True}))
    conn = shim.connection()
    conn.request("POST", "/jobs", body=b"type=echo", headers={"Content-Type": "text/plain"})
    response = conn.getresponse()
    assert response.status == 415
    assert json.loads(response.read())["field"] == "Content-Type"
    conn.request(
        "POST", "/jobs", body=b'{"type":"e"}', headers={"Content-Type": "application/json"}
    )
    assert conn.getresponse().status == 201  # the body was read: the connection is in step
    conn.close()


# --- the standard library's own errors ----------------------------------------------------------


def test_too_many_headers_is_431_problem(make_shim: Any) -> None:
    with make_shim().raw() as sock:
        headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, response_headers, body = read_response(sock)
        assert status == 431
        assert response_headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "headers_too_large"


def test_a_garbage_request_line_is_a_400_problem(make_shim: Any) -> None:
    with make_shim().raw() as sock:
        sock.sendall(b"GET / HTTP/1.1 and more\r\n\r\n")
        status, headers, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (400, "invalid_request")
        assert headers["connection"] == "close"


def test_bad_http_version_is_a_problem(make_shim: Any) -> None:
    with make_shim().raw() as sock:
        sock.sendall(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 505
        assert json.loads(body)["code"] == "http_version_not_supported"


# --- slow and many clients ----------------------------------------------------------------------


def test_a_slow_client_is_cut_off_at_the_deadline_while_others_are_served(make_shim: Any) -> None:
    shim = make_shim(request_timeout=0.6)
    slow = shim.raw()
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    cut = False
    # A header line every 0.1 s: each recv gets data long before a per-recv timeout, so only a
    # deadline on the whole request stops this.  The loop ends when the server hangs up.
    while time.monotonic() - started < 10:
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        slow.settimeout(0.1)
        try:
            if slow.recv(1) == b"":
                cut = True
                break
        except TimeoutError:
            pass
        except ConnectionResetError:
            cut = True
            break
        # Meanwhile another client is served promptly.
        response, _ = shim.request("GET", "/healthz")
        assert response.status == 200
    slow.close()
    assert cut, "the slow client was never cut off"
    assert time.monotonic() - started < 5


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(make_shim: Any) -> None:
    shim = make_shim(request_timeout=0.3)
    with shim.raw() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == 200
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=5)
        assert time.monotonic() - started < 4


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_connections_past_the_cap_get_503(make_shim: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    shim = make_shim()
    held = [shim.raw(), shim.raw()]
    wait_for(lambda: shim.server._connections == 2)
    with shim.raw() as third:
        status, headers, body = read_response(third)
        assert status == 503
        assert json.loads(body)["code"] == "unavailable"
        assert headers["connection"] == "close"
    for sock in held:
        sock.close()
    wait_for(lambda: shim.server._connections == 0)
    assert shim.request("GET", "/healthz")[0].status == 200


def test_while_stopping_answers_close_their_connection(make_shim: Any) -> None:
    shim = make_shim()
    shim.server.stopping = True
    response, _ = shim.request("GET", "/healthz")
    assert response.getheader("Connection") == "close"


def test_wait_idle_waits_for_requests_in_flight(make_shim: Any) -> None:
    release = threading.Event()

    class SlowClient(FakeClient):
        def call(self, method: str, params: Any = None, *, timeout: Any = -1) -> Any:
            release.wait(10)
            return super().call(method, params, timeout=timeout)

    pool = Pool()
    pool.client = SlowClient(pool.client.answers)
    shim = make_shim(pool)
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(shim.request("GET", "/jobs/7")[0].status)
    )
    thread.start()
    wait_for(lambda: shim.server._in_flight == 1)
    assert not shim.server.wait_idle(0.05)
    release.set()
    assert shim.server.wait_idle(5)
    thread.join(5)
    assert result == [200]
