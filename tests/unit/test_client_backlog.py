"""A client reaching a daemon whose listen backlog is full (busy accepting a flood of
clients) waits for room up to its timeout, instead of failing at once: real Unix sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.client import Client
from jobd.errors import DaemonUnreachable


@pytest.fixture
def full_backlog(tmp_path: Path) -> Iterator[tuple[Path, socket.socket, list[socket.socket]]]:
    """A listening socket that accepts nothing, its backlog filled by other clients."""
    path = tmp_path / "jobd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    waiting: list[socket.socket] = []
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except BlockingIOError:
            sock.close()
            break
        waiting.append(sock)
    yield path, listener, waiting
    for sock in waiting:
        sock.close()
    listener.close()


def test_a_full_backlog_is_waited_out_once_the_daemon_accepts(full_backlog) -> None:
    path, listener, _ = full_backlog
    accepted: list[socket.socket] = []

    def accept_soon() -> None:
        time.sleep(0.2)  # the daemon, busy for a moment, then accepting again
        accepted.append(listener.accept()[0])

    threading.Thread(target=accept_soon, daemon=True).start()
    client = Client(path, timeout=10)
    try:
        client._connect()
    finally:
        client.close()
        for sock in accepted:
            sock.close()


def test_a_backlog_that_stays_full_ends_in_a_clear_error_at_the_timeout(full_backlog) -> None:
    path, _, _ = full_backlog
    began = time.monotonic()
    with pytest.raises(DaemonUnreachable, match="did not accept the connection in time"):
        Client(path, timeout=0.3)._connect()
    assert 0.2 <= time.monotonic() - began < 10
