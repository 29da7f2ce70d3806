"""What the nodes say while their database hangs (the db_blackhole fault): is each node's
control socket still answered, and does the node notice that its store is gone?

A node whose database is black-holed sees no error: its connections stay open and its
statements never come back.  It should keep answering its control socket (`hello` needs no
store), and its `health` should turn `store: unavailable` within its health timeout.  The probe
asks both every second and keeps, per node, the longest time without an answer to `hello` and
how long after the start `health` first said the store was unavailable (None: never).  These
are reported as they are; they are not invariants of their own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from jobd.client import Client
from jobd.errors import JobdError

PROBE_SECONDS = 1.0  # between two rounds of questions
HEALTH_ANSWER_SECONDS = 5.0  # a health call's deadline (the daemon bounds its ping at 2 s)


@dataclass(frozen=True)
class Hearing:
    """What one node said during a probe."""

    longest_silence: float  # the longest time `hello` went unanswered
    unready_after: float | None  # seconds until `health` said the store was unavailable
    health_unanswered: int  # `health` calls not answered within HEALTH_ANSWER_SECONDS

    def describe(self) -> str:
        unready = (
            "never said its store was unavailable"
            if self.unready_after is None
            else f"store unavailable after {self.unready_after:.1f} s"
        )
        return (
            f"hello unanswered for at most {self.longest_silence:.1f} s, {unready},"
            f" {self.health_unanswered} health calls unanswered in {HEALTH_ANSWER_SECONDS:g} s"
        )


def probe(sockets: dict[str, Path], seconds: float, stop: threading.Event) -> dict[str, Hearing]:
    """Ask each node (name -> control socket) `hello` and `health` until `seconds` have
    passed or `stop` is set."""
    start = time.monotonic()
    end = start + seconds
    last_heard = dict.fromkeys(sockets, start)
    silence = dict.fromkeys(sockets, 0.0)
    unready: dict[str, float | None] = dict.fromkeys(sockets)
    health_unanswered = dict.fromkeys(sockets, 0)
    while time.monotonic() < end and not stop.is_set():
        for name, socket in sockets.items():
            if _hello(socket):
                last_heard[name] = time.monotonic()
            silence[name] = max(silence[name], time.monotonic() - last_heard[name])
            if unready[name] is not None:
                continue
            store = _store_state(socket)
            if store is None:
                health_unanswered[name] += 1
            elif store == "unavailable":
                unready[name] = time.monotonic() - start
        stop.wait(min(PROBE_SECONDS, max(0.0, end - time.monotonic())))
    return {
        name: Hearing(silence[name], unready[name], health_unanswered[name]) for name in sockets
    }


def _hello(socket: Path) -> bool:
    try:
        with Client(socket, timeout=PROBE_SECONDS) as client:
            return bool(client.hello().node)
    except JobdError:
        return False


def _store_state(socket: Path) -> str | None:
    """What `health` says of the store (None: no answer)."""
    try:
        with Client(socket, timeout=HEALTH_ANSWER_SECONDS) as client:
            return client.health().store
    except JobdError:
        return None
