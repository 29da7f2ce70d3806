"""The HTTP shim under a flood of connections (jobd.http.server): idle strangers from one peer
do not lock out an authenticated client, a connection that has not authenticated gets only a
few seconds for its headers, and a client that sends a too-large body before reading hears the
413 rather than a reset."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from typing import Any

from test_http_server import TOKEN, closed_by_peer, make_shim, read_response

__all__ = ["make_shim"]  # the fixture, used here by name

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def connect_from(address: str, port: int) -> socket.socket:
    """A connection from another loopback address: another peer, as the shim sees it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_idle_strangers_from_one_peer_do_not_lock_others_out(make_shim: Any) -> None:
    shim = make_shim(tokens=(TOKEN,), max_connections_per_peer=16)
    with ExitStack() as stack:
        idle = [stack.enter_context(connect_from("127.0.0.2", shim.port)) for _ in range(300)]
        started = time.monotonic()
        response, body = shim.request("GET", "/jobs/1", headers=AUTH)
        assert response.status == 200 and json.loads(body)["id"]
        assert time.monotonic() - started < 2.0
        status, _, body = read_response(idle[-1])  # past the peer's share: turned away
        assert status == 503 and b"16 per peer address" not in body  # no internals to strangers
        assert b"too many connections" in body


def test_an_unauthenticated_connection_gets_only_the_header_deadline(make_shim: Any) -> None:
    shim = make_shim(tokens=(TOKEN,), request_timeout=30.0, header_timeout=0.5)
    with shim.raw() as stranger, shim.raw() as known:
        known.sendall(b"GET /jobs/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode())
        known.sendall(b"\r\n\r\n")
        assert read_response(known)[0] == 200
        started = time.monotonic()
        assert closed_by_peer(stranger, timeout=5.0)
        assert time.monotonic() - started < 2.0
        # The authenticated connection keeps the whole request timeout between its requests.
        assert not closed_by_peer(known, timeout=1.0)
        known.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(known)[0] == 200


def test_urllib_sending_a_too_large_body_reads_the_413(make_shim: Any) -> None:
    shim = make_shim(max_body_bytes=1024)
    request = urllib.request.Request(
        f"http://127.0.0.1:{shim.port}/jobs",
        data=b"x" * (20 * 2**20),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 413
        assert error.headers["Content-Type"] == "application/problem+json"
        assert json.loads(error.read())["code"] == "payload_too_large"
    else:
        raise AssertionError("a 20 MiB body was accepted")
