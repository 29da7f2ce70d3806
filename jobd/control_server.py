"""The control server's connections: jobd.control's `Operations` served on the control socket,
inside the supervisor's event loop.

One task per connection reads lines (LineFramer bounds each to control.max_request_bytes),
answers requests one after another in order, and never lets one connection's garbage, size or
slowness reach another.  What any number of clients may cost the daemon is bounded:

- **connections**: at most `max_connections` (MAX_CONNECTIONS, and never more than the
  descriptor limit leaves room for after DESCRIPTOR_RESERVE).  A new connection past the cap
  takes the place of the connection idle the longest; when none is idle it is answered with
  one `unavailable` error line and closed.
- **idleness**: a connection with nothing in flight for `idle_timeout` (IDLE_TIMEOUT) is closed
  without a word.  Idle means no request being answered and no subscription: a `wait` of an
  hour is not idle.  `_Connection.active` counts both.
- **memory**: a connection holds at most one request line (max_request_bytes) plus the
  StreamReader's READ_CHUNK limit; an oversized line's buffer is dropped at once.  Freed is not
  yet given back: glibc keeps freed megabytes in its heap, where a thousand clients' buffers
  stay as resident memory long after they closed.  So once connections that carried a lot have
  closed, the server asks malloc to return free memory to the system (MemoryReturn).
- **accept errors**: see jobd.control_accept (pause, and one log line per interval).

The socket itself is created by jobd.control_socket (safely: locked, probed, bound under a
temporary name and renamed into place).  `jobd run` binds it before the workers start (a second
daemon fails fast) and starts accepting once the supervisor has started; connections made in
between wait in the listen backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobd.config import Config
from jobd.control import Operations, OwnThread, SupervisorView
from jobd.control_accept import Acceptor
from jobd.control_socket import BoundSocket, Peer, bind_control_socket, peer_credentials
from jobd.errors import InvalidRequest, JobdError, Unavailable
from jobd.limits import CONTROL_IDLE_TIMEOUT, CONTROL_MAX_CONNECTIONS
from jobd.protocol import (
    JsonId,
    LineFramer,
    RequestError,
    decode,
    encode,
    encode_pieces,
    error_response,
    parse_call,
    result_response,
)
from jobd.subscriptions import JobFeed, stream, subscribe_call
from jobd.write_priority import PRIORITY

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "ControlServer"]

log = logging.getLogger("jobd.control")

MAX_CONNECTIONS = CONTROL_MAX_CONNECTIONS
IDLE_TIMEOUT = CONTROL_IDLE_TIMEOUT
DESCRIPTOR_RESERVE = 256  # descriptors kept for the daemon itself: workers, store, logs
READ_CHUNK = 64 * 1024  # also the StreamReader's limit: what it buffers ahead of us
STOP_GRACE = 2.0  # requests in flight at shutdown get this long to finish
LINGER_SECONDS = 2.0  # after payload_too_large, the rest of the request is dropped this long
LINGER_BYTES = 64 * 1024 * 1024  # … or up to this much, whichever comes first
RETURN_MEMORY_AFTER = 256 * 1024  # a connection that received this much: memory to return
RETURN_MEMORY_DELAY = 1.0  # … at most this often, once the closes of a burst are done
#: Characters of a reply encoded between two turns of the loop: about one piece of 100 jobs.
YIELD_CHARACTERS = 48 * 1024


def connection_cap(max_connections: int) -> int:
    """`max_connections`, lowered if the descriptor limit could not hold that many besides
    what the daemon needs for itself: a client must never take the descriptor a new worker
    needs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, max(soft - DESCRIPTOR_RESERVE, soft // 2)))


class MemoryReturn:
    """malloc_trim(0), at most once per RETURN_MEMORY_DELAY when asked (glibc only: elsewhere
    nothing).  It hands the free pages of malloc's heap, wherever they are, back to the
    system; it costs milliseconds, hence the delay, which also lets a burst of closes finish."""

    def __init__(self, delay: float = RETURN_MEMORY_DELAY):
        self.delay = delay
        self._trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._trim is not None and self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._pending = None
        assert self._trim is not None
        self._trim(0)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


@dataclass(eq=False)
class _Connection:
    peer: Peer
    idle_since: float
    active: int = 0  # requests being answered plus subscriptions: not idle while above 0
    received: int = 0  # bytes
    task: asyncio.Task[None] = field(init=False)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self.idle_since = time.monotonic()

    def idle_for(self, now: float) -> float:
        return now - self.idle_since if self.active == 0 else 0.0


class ControlServer:
    """Serves `operations` on a bound socket; see the module docstring."""

    def __init__(
        self,
        operations: Operations,
        bound: BoundSocket,
        max_request_bytes: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ):
        self.operations = operations
        self.bound = bound
        self.max_request_bytes = max_request_bytes
        self.max_connections = connection_cap(max_connections)
        self.idle_timeout = idle_timeout
        self._tasks: list[asyncio.Task[None]] = []  # the acceptor and the idle reaper
        self._connections: dict[_Connection, None] = {}  # in order of arrival
        self._stopping = False
        self._memory = MemoryReturn()
        #: Job changes for the connections that `subscribe` (jobd.subscriptions); the
        #: supervisor publishes into it (jobd.daemon wires it to its job events).
        self.feed = JobFeed()
        if self.max_connections < max_connections:
            log.warning(
                "control connections capped by the descriptor limit (RLIMIT_NOFILE)",
                extra={"max_connections": self.max_connections},
            )

    @classmethod
    def install(
        cls, supervisor: SupervisorView, config: Config, thread: OwnThread | None = None
    ) -> ControlServer:
        """Bind the configured socket now, and start and stop serving with the supervisor (on
        `thread` when given, else on the supervisor's loop)."""
        control = config.control
        bound = bind_control_socket(control.socket, control.socket_mode, control.socket_group)
        operations = Operations(
            supervisor,
            default_max_attempts=config.jobs.default_max_attempts,
            max_payload_bytes=config.jobs.max_payload_bytes,
            lease_seconds=config.jobs.lease_seconds,
            store=thread.store if thread else None,
            supervisor_loop=thread.supervisor if thread else None,
            schedules=tuple(config.schedules.values()),
        )
        server = cls(
            operations,
            bound,
            control.max_request_bytes,
            max_connections=control.max_connections,
            idle_timeout=control.idle_timeout,
        )
        supervisor.on_started.append(thread.hook(server.start) if thread else server.start)
        supervisor.on_stopping.append(thread.hook(server.stop) if thread else server.stop)
        return server

    @property
    def path(self) -> Path:
        return self.bound.path

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self.operations.open()
        self.feed.attach(asyncio.get_running_loop())
        acceptor = Acceptor(self.bound.sock, self._admit)
        self._tasks = [
            asyncio.create_task(acceptor.run(), name="jobd-control-accept"),
            asyncio.create_task(self._reap_idle(), name="jobd-control-idle"),
        ]
        log.info("control socket ready", extra={"socket": str(self.path)})

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (waits answer at once), then close
        every connection and remove the socket file."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        self.operations.close()
        self.feed.close()
        for conn in list(self._connections):
            if not conn.active:
                conn.task.cancel()
        tasks = [c.task for c in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._memory.cancel()
        self.close()

    def close(self) -> None:
        """Release the socket and its lock (also when the supervisor never started)."""
        self.bound.close()

    # --- the caps -----------------------------------------------------------------------------

    def _admit(self, sock: socket.socket) -> None:
        """Serve a new connection, making room for it if the cap is reached (see the module
        docstring)."""
        if self._stopping or (self.connections >= self.max_connections and not self._evict()):
            self._refuse(sock)
            return
        conn = _Connection(peer_credentials(sock), time.monotonic())
        conn.task = asyncio.create_task(self._serve(conn, sock))
        # Closing twice is harmless, and a task cancelled before its first step (evicted at
        # once) never runs the code that would close the socket.
        conn.task.add_done_callback(lambda _: sock.close())
        self._connections[conn] = None

    def _evict(self) -> bool:
        """Close the connection idle the longest, if any is idle: a flood of idle connections
        then evicts its own members, never a client waiting for an answer."""
        now = time.monotonic()
        idle = [c for c in self._connections if c.active == 0]
        if not idle:
            return False
        victim = max(idle, key=lambda c: c.idle_for(now))
        self._drop(victim)
        log.debug("connection limit: closed the longest idle connection", extra=_extra(victim))
        return True

    def _refuse(self, sock: socket.socket) -> None:
        error = Unavailable(
            f"the control server is at its connection limit ({self.max_connections},"
            " control.max_connections) and every connection is busy; try again later"
        )
        # A fresh socket's send buffer takes one short line without blocking; if it does not,
        # closing is the answer.
        with contextlib.suppress(OSError):
            sock.send(encode(error_response(None, error)))
        sock.close()
        log.debug("connection limit: refused a connection", extra={"limit": self.max_connections})

    def _drop(self, conn: _Connection) -> None:
        self._connections.pop(conn, None)  # counted out now: its task ends at the next turn
        conn.task.cancel()

    async def _reap_idle(self) -> None:
        period = min(max(self.idle_timeout / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in [c for c in self._connections if c.idle_for(now) > self.idle_timeout]:
                log.debug("closing an idle control connection", extra=_extra(conn))
                self._drop(conn)

    # --- one connection -----------------------------------------------------------------------

    async def _serve(self, conn: _Connection, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=READ_CHUNK)
        except BaseException:
            self._connections.pop(conn, None)
            raise
        try:
            await self._converse(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("control connection failed", extra=_extra(conn))
        finally:
            self._connections.pop(conn, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            _forget_failure(reader)
            if conn.received >= RETURN_MEMORY_AFTER:
                self._memory.soon()

    async def _converse(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        framer = LineFramer(self.max_request_bytes)
        while not self._stopping:
            data = await reader.read(READ_CHUNK)
            conn.received += len(data)
            lines = framer.feed(data) if data else [framer.rest()]
            for line in lines:
                subscription = subscribe_call(line)
                if subscription is not None:  # the connection is the subscription's now
                    with conn.busy():
                        await self._subscribe(*subscription, reader, writer)
                    return
                with conn.busy():
                    answer = await self._answer_line(line, conn.peer)
                    if answer is not None:
                        writer.write(answer)
                        await writer.drain()
            if framer.too_large:
                log.warning("request too large", extra=_extra(conn))
                await self._refuse_oversized(framer, reader, writer)
                return
            if not data:
                return

    async def _subscribe(
        self,
        call_id: JsonId,
        params: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            await stream(self.feed, call_id, params, reader, writer)
        except Unavailable as exc:
            writer.write(encode(error_response(call_id, exc)))
            await writer.drain()

    async def _refuse_oversized(
        self, framer: LineFramer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer payload_too_large, then linger: read and drop what the client is still
        sending, for a bounded time and amount, before closing.  Closing a Unix socket with
        unread data resets the peer, and a client still writing its oversized request would
        get that reset instead of our answer."""
        writer.write(encode(error_response(None, framer.oversize_error())))
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        dropped = 0
        while dropped < LINGER_BYTES and (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    chunk = await reader.read(READ_CHUNK)
            except TimeoutError:
                return
            if not chunk:
                return
            dropped += len(chunk)

    # --- one request line ---------------------------------------------------------------------

    async def _answer_line(self, line: bytes, peer: Peer) -> bytes | None:
        """The bytes to send back for one request line (None: nothing, e.g. notifications)."""
        if not line.strip():
            return None  # blank lines between requests are harmless
        try:
            message = decode(line)
        except JobdError as exc:
            _log_request(peer, None, None, exc.code, 0.0)
            return encode(error_response(None, exc))
        if isinstance(message, list):
            return await self._answer_batch(message, peer)
        reply = await self._answer(message, peer)
        return await _encode(reply) if reply is not None else None

    async def _answer_batch(self, messages: list[Any], peer: Peer) -> bytes | None:
        """A JSON-RPC batch: each request answered in turn; no answers at all, no line."""
        if not messages:
            return encode(error_response(None, InvalidRequest("empty batch")))
        replies = [reply for m in messages if (reply := await self._answer(m, peer)) is not None]
        return await _encode(replies) if replies else None

    async def _answer(self, message: Any, peer: Peer) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            call = parse_call(message)
        except RequestError as exc:
            _log_request(peer, None, exc.id, exc.error.code, 0.0)
            return None if exc.notification else error_response(exc.id, exc.error)
        try:
            reply = result_response(call.id, await self.operations.call(call, peer))
        except JobdError as exc:
            reply = error_response(call.id, exc)
        except Exception as exc:  # a bug: the client gets an internal_error, the log the trace
            log.exception("control method failed", extra={"method": call.method})
            reply = error_response(call.id, JobdError(f"internal error: {type(exc).__name__}"))
        code = reply["error"]["data"]["code"] if "error" in reply else "ok"
        _log_request(peer, call.method, call.id, code, time.perf_counter() - started)
        return None if call.notification else reply


async def _encode(reply: Any) -> bytes:
    """encode(reply), a few pieces at a time: a reply of 1,000 jobs (half a megabyte) must not
    hold up the supervisor's loop while it is written out."""
    try:
        pieces: list[str] = []
        unyielded = 0
        for piece in encode_pieces(reply):
            pieces.append(piece)
            unyielded += len(piece)
            if unyielded >= YIELD_CHARACTERS:
                unyielded = 0
                await PRIORITY.give_way()
        return "".join(pieces).encode() + b"\n"
    except (TypeError, ValueError) as exc:  # a result that is not JSON: our bug
        log.exception("control reply is not JSON")
        call_id = reply.get("id") if isinstance(reply, dict) else None
        return encode(error_response(call_id, JobdError(f"internal error: {exc}")))


def _log_request(peer: Peer, method: str | None, call_id: Any, code: str, seconds: float) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "control request",
            extra={
                "method": method,
                "request_id": call_id,
                "outcome": code,
                "ms": round(seconds * 1000, 3),
                **_peer_extra(peer),
            },
        )


def _forget_failure(reader: asyncio.StreamReader) -> None:
    """Drop the traceback of the error the connection died of (a broken pipe, say).  The
    reader keeps that error, and its traceback the frames that were running, with their
    locals -- the request line, this connection's reader: a cycle that only a full garbage
    collection frees, which an idle daemon may not run for hours.  A flood of clients that
    each sent a megabyte then kept a gigabyte after they had all gone."""
    failure = reader.exception()
    if failure is not None:
        failure.__traceback__ = None


def _extra(conn: _Connection) -> dict[str, Any]:
    return _peer_extra(conn.peer)


def _peer_extra(peer: Peer) -> dict[str, Any]:
    return {"peer_pid": peer.pid, "peer_uid": peer.uid}
