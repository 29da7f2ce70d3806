"""The shim's pool of control-protocol clients, against a minimal NDJSON server on a Unix
socket that can drop every connection (as a restarting daemon does); and the settings line
`jobd run` hands its HTTP child."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.errors import Unavailable
from jobd.http.child import describe_exit, settings_from_line, settings_line
from jobd.http.clients import ClientPool
from jobd.http.server import HttpSettings


class LineServer:
    """Answers every JSON-RPC request with {"method": …}; counts the connections it accepted."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                message = json.loads(line)
                self.requests.append(message["method"])
                reply = {
                    "jsonrpc": "2.0",
                    "id": message["id"],
                    "result": {"method": message["method"]},
                }
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    return

    def drop_connections(self) -> None:
        for conn in self.conns:
            conn.shutdown(socket.SHUT_RDWR)
        self.conns.clear()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def line_server() -> Iterator[LineServer]:
    folder = Path(tempfile.mkdtemp(prefix="jobd-pool", dir="/tmp"))
    server = LineServer(folder / "s.sock")
    yield server
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_connections_are_reused(line_server: LineServer) -> None:
    pool = ClientPool(line_server.path, timeout=5)
    for _ in range(5):
        with pool.reader() as client:
            assert client.call("get", {"id": 1}) == {"method": "get"}
    assert line_server.accepted == 1
    pool.close()


def test_concurrent_requests_get_clients_of_their_own(line_server: LineServer) -> None:
    pool = ClientPool(line_server.path, timeout=5)
    with pool.reader() as first, pool.reader() as second:
        assert first is not second
    # `second` went back first (the inner block ends first), then `first`.
    with pool.reader() as third:
        assert third is first  # the most recently given back
    pool.close()


def test_idle_clients_are_bounded(line_server: LineServer) -> None:
    pool = ClientPool(line_server.path, timeout=5, max_idle=1)
    with pool.reader() as first, pool.reader() as second:
        first.call("get")
        second.call("get")
    assert len(pool._idle) == 1
    pool.close()
    assert pool._idle == []


def test_a_write_after_a_restart_goes_out_on_a_live_connection(line_server: LineServer) -> None:
    pool = ClientPool(line_server.path, timeout=5, probe_after=0.0)
    with pool.writer() as client:
        client.call("submit", {"type": "a"})
    line_server.drop_connections()  # the daemon restarted while the client sat idle
    with pool.writer() as client:
        assert client.call("submit", {"type": "a"}) == {"method": "submit"}
    assert line_server.requests == ["submit", "hello", "submit"]
    assert line_server.accepted == 2
    pool.close()


def test_without_the_probe_that_write_would_fail(line_server: LineServer) -> None:
    pool = ClientPool(line_server.path, timeout=5, probe_after=3600)
    with pool.writer() as client:
        client.call("submit", {"type": "a"})
    line_server.drop_connections()
    with pytest.raises(Unavailable), pool.writer() as client:
        client.call("submit", {"type": "a"})
    pool.close()


def test_settings_line_round_trips() -> None:
    settings = HttpSettings(
        listen="[::1]:8080",
        socket=Path("/run/jobd/jobd.sock"),
        tokens=("a", "b,c"),
        max_body_bytes=4096,
        request_timeout=2.5,
        log_level="DEBUG",
        log_format="text",
        node="n-1",
    )
    line = settings_line(settings)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert settings_from_line(line) == settings


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(2) == "exit status 2"
    assert describe_exit(-9) == "killed by SIGKILL"
