"""Accepting connections on the control socket without letting descriptor exhaustion take the
daemon down with it.

asyncio's own server (`start_unix_server`) reports every failed accept() to the loop's
exception handler and tries again at the next turn of the loop: out of descriptors (EMFILE,
ENFILE), that is one "socket.accept() out of system resource" log line per turn, tens of
thousands a second, while the loop spins.  `Acceptor` accepts itself instead:

- a failure for lack of resources pauses accepting (ACCEPT_PAUSE_MIN, doubling up to
  ACCEPT_PAUSE_MAX); the connections wait in the listen backlog meanwhile, and the descriptors
  freed by connections that close are there for the daemon's own needs (a new worker's pipes);
- the failures are logged at most once per ACCEPT_LOG_INTERVAL, each line with how many there
  were since the previous one (the count carries over a recovery, so no failure goes uncounted).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("jobd.control")

ACCEPT_PAUSE_MIN = 0.1
ACCEPT_PAUSE_MAX = 1.0
ACCEPT_LOG_INTERVAL = 10.0  # at most one "cannot accept" line this often
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The client gave up between connect and accept: nothing to do, nothing to log.
ABANDONED = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})

Accept = Callable[[socket.socket], Awaitable[tuple[socket.socket, object]]]


class _FailureLog:
    """One warning per interval, carrying the count of failures since the previous one."""

    def __init__(self, interval: float):
        self.interval = interval
        self.unlogged = 0
        self.logged_at = -interval

    def failed(self, exc: OSError) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at < self.interval:
            return
        log.warning(
            "cannot accept control connections; pausing",
            extra={"error": exc.strerror, "failures": self.unlogged},
        )
        self.unlogged = 0
        self.logged_at = now


class Acceptor:
    """Accepts on `sock` for ever, handing each connection to `admit`; see the module
    docstring.  `accept` is the loop's sock_accept unless a test gives another."""

    def __init__(
        self,
        sock: socket.socket,
        admit: Callable[[socket.socket], None],
        accept: Accept | None = None,
        log_interval: float = ACCEPT_LOG_INTERVAL,
    ):
        self.sock = sock
        self.admit = admit
        self.accept = accept
        self.failures = _FailureLog(log_interval)

    async def run(self) -> None:
        accept = self.accept or asyncio.get_running_loop().sock_accept
        pause = ACCEPT_PAUSE_MIN
        while True:
            try:
                conn, _ = await accept(self.sock)
            except OSError as exc:
                if exc.errno in ABANDONED:
                    continue
                if exc.errno not in RESOURCE_ERRORS:
                    raise
                self.failures.failed(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, ACCEPT_PAUSE_MAX)
                continue
            pause = ACCEPT_PAUSE_MIN
            self.admit(conn)
