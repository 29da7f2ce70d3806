"""A flood of clients on the control socket of a real `jobd run` (PostgreSQL): more idle
connections than the daemon has descriptors, and a thousand clients each sending a megabyte
without a newline.  Afterwards the daemon answers new clients, runs jobs, has not filled its log
and has given its memory back."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack

import pytest
from control_harness import Daemon, running_daemon

pytestmark = pytest.mark.postgres

DESCRIPTORS = 1024  # systemd's default soft limit (LimitNOFILE)
IDLE_FLOOD = 1100
LINE_FLOOD = 1000
LINE = 1_000_000  # just under control.max_request_bytes (1 MiB): buffered, not refused
ANSWER_WITHIN = 5.0


def daemon_with_descriptors(pg_url: str, limit: int) -> AbstractContextManager[Daemon]:
    """`jobd run` under `ulimit -n limit`."""
    return running_daemon(pg_url, f"jobd_flood_{uuid.uuid4().hex[:8]}", max_descriptors=limit)


def open_connections(daemon: Daemon, n: int, stack: ExitStack) -> list[socket.socket]:
    sockets = []
    for _ in range(n):
        sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        # A blocking connect waits while the listen backlog is full, until the daemon has
        # accepted more; with a timeout set first, the socket is non-blocking and a full
        # backlog fails the connect at once (EAGAIN), a race against the daemon's accepts.
        sock.connect(str(daemon.socket))
        sock.settimeout(30)
        sockets.append(sock)
    return sockets


def answers_quickly(daemon: Daemon) -> None:
    started = time.monotonic()
    with daemon.client(timeout=ANSWER_WITHIN) as client:
        assert client.hello().node
        job = client.submit("echo", {"n": 1}).job
        assert client.wait(job.id, timeout=30).job.result == {"n": 1}
    assert time.monotonic() - started < ANSWER_WITHIN + 30


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_more_idle_connections_than_descriptors(pg_url: str) -> None:
    with daemon_with_descriptors(pg_url, DESCRIPTORS) as daemon, ExitStack() as flood:
        open_connections(daemon, IDLE_FLOOD, flood)
        for _ in range(5):
            answers_quickly(daemon)
        assert daemon.process.poll() is None
        log = daemon.log()
        assert log.count("out of system resource") == 0
        assert log.count("cannot accept control connections") <= 5
        assert "capped by the descriptor limit" in log


def test_memory_comes_back_after_a_flood_of_unfinished_lines(pg_url: str) -> None:
    with daemon_with_descriptors(pg_url, 4096) as daemon:
        pid = daemon.process.pid
        answers_quickly(daemon)
        baseline = rss(pid)
        chunk = b"x" * LINE
        with ExitStack() as flood:
            for sock in open_connections(daemon, LINE_FLOOD, flood):
                sock.sendall(chunk)
            answers_quickly(daemon)
            peak = rss(pid)
        assert peak > baseline + 500 * 2**20, "the flood did not reach the daemon"
        eventually(lambda: rss(pid) < baseline + 64 * 2**20, 30, "the memory to come back")
        answers_quickly(daemon)
