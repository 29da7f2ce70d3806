"""Slow-loris against the HTTP shim (docs/guarantees.md, "Bad input"): hundreds of connections
that trickle their request in a byte at a time, for longer than http.request_timeout.  The shim
must keep answering everyone else, cut each slow connection at its deadline however steadily it
trickles (the deadline is per request, not per read), turn away connections past its cap with a
503 instead of a thread each, and give its threads back afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from control_harness import Daemon, running_daemon

from jobd.http.server import MAX_CONNECTIONS

from .conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REQUEST_TIMEOUT = 3.0  # long enough for all the slow connections to be open at once
SLOW = MAX_CONNECTIONS + 44  # past the cap: the last ones must be turned away


@pytest.fixture
def shim(pg_url: str) -> Iterator[tuple[Daemon, str, int]]:
    env = {
        "JOBD_HTTP_LISTEN": "127.0.0.1:0",
        "JOBD_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "JOBD_LOGGING_FORMAT": "json",
    }
    with running_daemon(pg_url, f"jobd_loris_{uuid.uuid4().hex[:8]}", workers=1, env=env) as d:
        listening = wait_for(lambda: _listening(d), what="the shim to listen")
        yield d, f"http://{listening['listen']}", listening["pid"]


def _events(daemon: Daemon) -> list[dict]:
    events = []
    for line in daemon.log().splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return [e for e in events if isinstance(e, dict)]


def _listening(daemon: Daemon) -> dict | None:
    return next((e for e in _events(daemon) if e.get("message") == "http shim listening"), None)


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_slow_loris_is_cut_at_the_deadline_and_others_are_served(
    shim: tuple[Daemon, str, int],
) -> None:
    daemon, base, pid = shim
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    idle_threads = threads_of(pid)
    host, port = base.removeprefix("http://").rsplit(":", 1)

    slow: list[socket.socket] = []
    for _ in range(SLOW):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    stop = threading.Event()

    def trickle() -> None:  # one header byte per connection every 50 ms, never a blank line
        while not stop.is_set():
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"X")
            stop.wait(0.05)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.5 * REQUEST_TIMEOUT:  # while they trickle...
            t = time.monotonic()
            response = requests.get(f"{base}/readyz", timeout=10)  # ...others are answered
            assert response.status_code in (200, 503), response.text
            assert response.status_code == 200 or "too many connections" in response.text
            assert time.monotonic() - t < 2.0
        # Each slow connection was cut: closed without an answer, or turned away with 503.
        answers = [_read_to_close(sock) for sock in slow]
    finally:
        stop.set()
        trickler.join()
        for sock in slow:
            sock.close()
    # None got an answer but a 503 (which a trickle into the closed socket may reset away).
    assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers), answers[:3]
    refused = [e for e in _events(daemon) if e["message"] == "too many connections; refusing one"]
    # The cap held: the connections past it (slow ones, and readyz calls made while the slow
    # ones filled it) were turned away at once rather than given a thread each.
    assert len(refused) >= SLOW - MAX_CONNECTIONS
    # The threads they held are given back.
    wait_for(lambda: threads_of(pid) <= idle_threads + 2, what="the shim's threads to go")
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200


def _read_to_close(sock: socket.socket) -> bytes:
    """Everything until the server closes (it must have, by now, within a few seconds)."""
    sock.settimeout(5)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"a slow connection is still open: {data!r}") from None
    return data
