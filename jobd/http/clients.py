"""Control-protocol connections for the shim's request threads.

A `jobd.client.Client` is one connection, and calls from several threads take turns on it; a
long-poll wait would hold every other request behind it.  So each request borrows a Client of
its own from this pool and gives it back afterwards; the pool keeps a bounded number of idle
ones, so a busy shim reuses its connections and a quiet one does not hoard them.

After the daemon restarts, an idle Client's kept connection is dead.  A read-only call notices
and is sent again on a new connection (the Client's own rule), but a submit, cancel or retry is
never resent, since the daemon may have acted on it.  So before such a call on a Client that has
sat idle for a while, `writer()` sends a `hello` first: read-only, it finds the dead connection
and replaces it, and the write goes out on a live one.  A Client in steady use skips the probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobd.client import DEFAULT_TIMEOUT, Client

MAX_IDLE = 32  # idle connections kept for reuse; more concurrent requests open more
PROBE_AFTER = 1.0  # seconds idle after which a write is preceded by a hello


class ClientPool:
    def __init__(
        self,
        socket_path: Path,
        timeout: float = DEFAULT_TIMEOUT,
        max_idle: int = MAX_IDLE,
        probe_after: float = PROBE_AFTER,
    ):
        self.socket_path = socket_path
        self.timeout = timeout
        self.max_idle = max_idle
        self.probe_after = probe_after
        self._idle: list[tuple[Client, float]] = []  # (client, when it was given back)
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def reader(self) -> Iterator[Client]:
        """A Client for read-only calls (get, list, wait, health, metrics, …)."""
        client, _ = self._take()
        try:
            yield client
        finally:
            self._give_back(client)

    @contextmanager
    def writer(self) -> Iterator[Client]:
        """A Client for a call that must not be sent twice (submit, cancel, retry), on a
        connection known to be alive."""
        client, idle_since = self._take()
        try:
            if idle_since is not None and time.monotonic() - idle_since > self.probe_after:
                client.call("hello")
            yield client
        finally:
            self._give_back(client)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client, _ in idle:
            client.close()

    def _take(self) -> tuple[Client, float | None]:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recently used: likeliest to be alive
        return Client(self.socket_path, timeout=self.timeout), None

    def _give_back(self, client: Client) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append((client, time.monotonic()))
                return
        client.close()
