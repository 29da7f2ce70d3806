"""Subscriptions: the daemon pushes every change of a job's state to the control connections that
asked for them with `subscribe` (the HTTP shim's dashboard, `jobctl status --follow`).

    supervisor (main thread)             I/O thread: control server
    JobEvents ── publish([changes]) ──►  JobFeed ──► Subscriber buffer ──► stream() ──► connection
                 one wake-up per batch               (one per connection,    writes lines,
                 (call_soon_threadsafe)               SUBSCRIPTION_BUFFER)   heartbeats

The changes come from the one place that already counts and logs every transition of this
node's jobs (jobd.supervisor.job_events), so a subscriber sees what the metrics count.  With no
subscriber nothing is built or sent: `publish` is not even called (`JobFeed.wanted`).

What a subscriber can cost the daemon is bounded, and never by waiting for it:

- at most MAX_SUBSCRIPTIONS at once; past that, `subscribe` is answered `unavailable`;
- each holds at most SUBSCRIPTION_BUFFER changes not yet written; one that falls further
  behind is dropped: it is sent a `dropped` notification naming why, and its connection is
  closed.  The supervisor never waits: publishing is appending to a list;
- a write that the peer does not take within SUBSCRIPTION_WRITE_TIMEOUT drops it too;
- a quiet subscription gets a `heartbeat` every SUBSCRIPTION_HEARTBEAT seconds, so both ends
  learn of a dead peer.

On the wire (docs/protocol.md): the `subscribe` request is answered like any other; then the
connection carries only JSON-RPC notifications, one a line: `job` (id, state, type, queue,
event, at, and queue_wait for a start), `heartbeat`, and at the end, perhaps, `dropped`.  With
`ids`, a subscriber is offered only those jobs' changes: the others neither wake it nor fill
its buffer.  Lines the client sends afterwards are read and ignored; closing the connection
ends the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from jobd.domain import JobFacts
from jobd.errors import DaemonUnreachable, InvalidRequest, Unavailable
from jobd.limits import (
    MAX_SUBSCRIPTIONS,
    SUBSCRIPTION_BUFFER,
    SUBSCRIPTION_HEARTBEAT,
    SUBSCRIPTION_WRITE_TIMEOUT,
)
from jobd.protocol import (
    JSONRPC,
    SubscribeParams,
    decode,
    encode,
    parse_reply,
    parse_subscribe,
    request,
    result_response,
)

__all__ = [
    "JobChange",
    "JobFeed",
    "Subscriber",
    "SubscriptionLost",
    "change_of",
    "follow",
    "subscribe_call",
]

log = logging.getLogger("jobd.control")

READ_CHUNK = 64 * 1024


class JobChange(NamedTuple):
    """One job's change of state, as a subscriber receives it."""

    id: int
    state: str
    type: str | None  # None: not known where the change was seen (rare: see job_events)
    queue: str | None
    event: str  # what happened: submitted, started, completed, retried, canceled, …
    at: float  # Unix time, seconds
    queue_wait: float | None = None  # for `started`: seconds from due to start
    progress: Any = None  # for `progress`: what the handler reported (ctx.progress)

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "type": self.type,
            "queue": self.queue,
            "event": self.event,
            "at": round(self.at, 3),
        }
        if self.queue_wait is not None:
            params["queue_wait"] = round(self.queue_wait, 6)
        if self.progress is not None:
            params["progress"] = self.progress
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> JobChange:
        return cls(
            id=int(params["id"]),
            state=str(params["state"]),
            type=params.get("type"),
            queue=params.get("queue"),
            event=str(params.get("event", params["state"])),
            at=float(params.get("at", time.time())),
            queue_wait=params.get("queue_wait"),
            progress=params.get("progress"),
        )


def change_of(job: JobFacts, event: str, queue_wait: float | None = None) -> JobChange:
    return JobChange(job.id, job.state.value, job.type, job.queue, event, time.time(), queue_wait)


def notification(method: str, params: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": JSONRPC, "method": method, "params": params})


class Subscriber:
    """One connection's changes not yet written.  Lives on the feed's loop."""

    def __init__(self, limit: int, ids: frozenset[int] | None = None):
        self.limit = limit
        self.ids = ids  # only these jobs' changes (`subscribe`'s `ids`); None: every job's
        self.buffer: deque[JobChange] = deque()
        self.lost: str | None = None  # why it was dropped; None while it keeps up
        self.ready = asyncio.Event()

    def offer(self, changes: Sequence[JobChange]) -> None:
        if self.lost is not None:
            return
        if self.ids is not None:
            changes = [c for c in changes if c.id in self.ids]
            if not changes:
                return
        if len(self.buffer) + len(changes) > self.limit:
            self.lost = f"too slow: more than {self.limit} changes were waiting for it"
            self.buffer.clear()
        else:
            self.buffer.extend(changes)
        self.ready.set()

    def end(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        self.ready.set()

    def take(self) -> list[JobChange]:
        changes = list(self.buffer)
        self.buffer.clear()
        self.ready.clear()
        return changes


class JobFeed:
    """The fan-out: changes published on any thread, handed to every subscriber on the loop
    that serves them (`attach`), one wake-up of that loop per batch of publishes."""

    def __init__(self, buffer: int = SUBSCRIPTION_BUFFER, max_subscribers: int = MAX_SUBSCRIPTIONS):
        self.buffer = buffer
        self.max_subscribers = max_subscribers
        self._subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: list[JobChange] = []
        self._scheduled = False

    @property
    def wanted(self) -> bool:
        """Whether anyone listens (read on the publisher's thread: one read, no lock)."""
        return bool(self._subscribers)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, changes: Sequence[JobChange]) -> None:
        """From any thread; never blocks on a subscriber."""
        loop = self._loop
        if loop is None or not self._subscribers:
            return
        with self._lock:
            self._pending.extend(changes)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is stopping
            loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            changes, self._pending = self._pending, []
            self._scheduled = False
        for subscriber in self._subscribers:
            subscriber.offer(changes)

    def add(self, ids: frozenset[int] | None = None) -> Subscriber:
        """A new subscriber (on the feed's loop); Unavailable past max_subscribers."""
        if len(self._subscribers) >= self.max_subscribers:
            raise Unavailable(
                f"subscribe: {self.max_subscribers} subscriptions already; try again later"
            )
        subscriber = Subscriber(self.buffer, ids)
        self._subscribers.add(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every subscription: the daemon is stopping."""
        for subscriber in list(self._subscribers):
            subscriber.end("the daemon is stopping")

    def __len__(self) -> int:
        return len(self._subscribers)


# --- one subscribed connection ------------------------------------------------------------------


def subscribe_call(line: bytes) -> tuple[Any, SubscribeParams] | None:
    """(id, params) if `line` is a well-formed `subscribe` request with an id; None for
    anything else, which the control server answers as usual (a malformed subscribe then gets
    its error from the method table)."""
    if b"subscribe" not in line:
        return None
    try:
        message = decode(line)
    except Exception:
        return None
    if not isinstance(message, dict) or message.get("method") != "subscribe":
        return None
    if "id" not in message or message.get("jsonrpc") != JSONRPC:
        return None
    params = message.get("params") or {}
    if not isinstance(params, dict):
        return None
    try:
        return message["id"], parse_subscribe(params)
    except Exception:
        return None


async def subscribe_elsewhere(_: Any) -> dict[str, Any]:
    """The method table's `subscribe`: the control server serves a subscribe itself, on its
    connection; only one it could not take over comes here, in a batch or as a notification."""
    raise InvalidRequest("subscribe: send it alone, with an id, on a connection of its own")


async def stream(
    feed: JobFeed,
    call_id: Any,
    params: SubscribeParams,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    heartbeat: float = SUBSCRIPTION_HEARTBEAT,
    write_timeout: float = SUBSCRIPTION_WRITE_TIMEOUT,
) -> None:
    """Serve one subscription until the peer closes, falls behind, or the daemon stops.  The
    caller closes the connection afterwards."""
    subscriber = feed.add(params.ids)  # Unavailable goes back to the caller as the answer
    try:
        answer: dict[str, Any] = {
            "topics": list(params.topics),
            "buffer": feed.buffer,
            "heartbeat": heartbeat,
        }
        if params.ids is not None:
            answer["ids"] = sorted(params.ids)
        await _write(writer, encode(result_response(call_id, answer)), write_timeout)
        closed = asyncio.ensure_future(_until_closed(reader))
        try:
            await _pump(subscriber, closed, writer, heartbeat, write_timeout)
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await closed
    except TimeoutError:
        reason = f"too slow: a write was not taken within {write_timeout:g}s"
        log.info("subscription ended", extra={"reason": reason})
    finally:
        feed.remove(subscriber)


async def _pump(
    subscriber: Subscriber,
    closed: asyncio.Future[None],
    writer: asyncio.StreamWriter,
    heartbeat: float,
    write_timeout: float,
) -> None:
    while True:
        ready: asyncio.Future[Any] = asyncio.ensure_future(subscriber.ready.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {ready, closed}
            await asyncio.wait(waiting, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if closed.done():
            return
        if subscriber.lost is not None:
            log.info("subscription ended", extra={"reason": subscriber.lost})
            with contextlib.suppress(TimeoutError, ConnectionError):
                data = notification("dropped", {"reason": subscriber.lost})
                await _write(writer, data, min(write_timeout, 1.0))
            return
        changes = subscriber.take()
        if changes:
            data = b"".join(notification("job", c.to_params()) for c in changes)
        else:
            data = notification("heartbeat", {"at": round(time.time(), 3)})
        await _write(writer, data, write_timeout)


async def _write(writer: asyncio.StreamWriter, data: bytes, timeout: float) -> None:
    writer.write(data)
    async with asyncio.timeout(timeout):
        await writer.drain()


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Read and ignore what the peer sends, until it closes."""
    while await reader.read(READ_CHUNK):
        pass


# --- the subscriber's side ------------------------------------------------------------------------


class SubscriptionLost(Exception):
    """The subscription ended: the daemon dropped it (the reason is the message), closed the
    connection, or went quiet for longer than two heartbeats."""


def follow(
    socket_path: str | os.PathLike[str],
    connect_timeout: float = 5.0,
    on_ready: Callable[[], None] | None = None,
    ids: Iterable[int] | None = None,
    on_heartbeat: Callable[[], None] | None = None,
) -> Iterator[JobChange]:
    """Subscribe on a connection of its own (`on_ready` is called once the daemon has said
    yes) and yield each job change as it comes; raises SubscriptionLost when it ends (a
    caller that wants more subscribes again, and reads again what it shows: changes in
    between are not replayed), DaemonUnreachable if it cannot connect, the daemon's error if
    it refuses.  `ids`: only these jobs' changes.  `on_heartbeat` is called at each heartbeat
    (a quiet subscription's chance to look elsewhere: another node's changes are not sent)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(os.fsencode(socket_path))
        except OSError as exc:
            raise DaemonUnreachable(f"cannot reach jobd at {socket_path}: {exc}") from None
        params: dict[str, Any] = {"topics": ["jobs"]}
        if ids is not None:
            params["ids"] = sorted(set(ids))
        sock.sendall(encode(request("subscribe", params, 1)))
        lines = sock.makefile("rb")
        first = _line(lines)
        reply = parse_reply(json.loads(first))
        if not reply.ok:
            raise reply.exception()
        heartbeat = float(reply.result.get("heartbeat", SUBSCRIPTION_HEARTBEAT))
        sock.settimeout(2 * heartbeat + connect_timeout)
        if on_ready is not None:
            on_ready()
        while True:
            message = json.loads(_line(lines))
            method, params = message.get("method"), message.get("params") or {}
            if method == "job":
                yield JobChange.from_params(params)
            elif method == "heartbeat" and on_heartbeat is not None:
                on_heartbeat()
            elif method == "dropped":
                raise SubscriptionLost(str(params.get("reason", "dropped")))
    finally:
        sock.close()


def _line(lines: Any) -> bytes:
    try:
        line: bytes = lines.readline()
    except TimeoutError:
        raise SubscriptionLost("the daemon went quiet (no heartbeat)") from None
    except OSError as exc:
        raise SubscriptionLost(f"the connection failed: {exc}") from None
    if not line.endswith(b"\n"):
        raise SubscriptionLost("the daemon closed the connection")
    return line
