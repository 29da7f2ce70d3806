"""The control server: the control protocol (jobd.protocol) served on a Unix socket.  Under
`jobd run` it runs on the I/O thread's event loop, next to the store, and reaches the
supervisor's state on the supervisor's loop (`SupervisorLoop`, docs/adr/0022).

Two parts:
- `Operations`: the one implementation of every control method (submit, list, cancel, wait, …)
  over the supervisor and its store.  jobctl and the HTTP shim reach these, and only these,
  through jobd.client.
- `ControlServer`: the connections.  One task per connection reads lines (LineFramer bounds each
  to control.max_request_bytes), answers requests one after another in order, and never lets
  one connection's garbage, size or slowness reach another.

The socket itself is created by jobd.control_socket (safely: locked, probed, bound under a
temporary name and renamed into place).  `jobd run` binds it before the workers start (a second
daemon fails fast) and starts accepting once the supervisor has started; connections made in
between wait in the listen backlog.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from jobd import __version__
from jobd.config import Config
from jobd.control_socket import (
    BACKLOG,
    BoundSocket,
    ControlSocketError,
    Peer,
    bind_control_socket,
    peer_credentials,
)
from jobd.domain import Job, NewJob, State, TimeTexts
from jobd.errors import InvalidParams, InvalidRequest, JobdError, Unavailable, UnknownType
from jobd.handlers import Registry
from jobd.jobspec import JobSpec, check_payload, in_batch
from jobd.protocol import (
    METHODS,
    PROTOCOL_VERSION,
    Call,
    IdParams,
    LineFramer,
    ListParams,
    NoParams,
    RequestError,
    SubmitManyParams,
    WaitParams,
    decode,
    encode,
    encode_pieces,
    error_response,
    parse_call,
    parse_params,
    result_response,
)
from jobd.store import JobFilter, Notification, NotificationKind, Store, Submitted

__all__ = [
    "ControlServer",
    "ControlSocketError",
    "Operations",
    "OwnThread",
    "SupervisorLoop",
    "SupervisorView",
]

log = logging.getLogger("jobd.control")

READ_CHUNK = 64 * 1024
STORE_TIMEOUT = 10.0  # every store call the server makes is bounded by this
HEALTH_TIMEOUT = 2.0  # health answers quickly even when the store does not
WORKERS_GRACE = 10.0  # fewer workers than configured for longer than this: degraded
WAIT_POLL = 0.5  # `wait` re-reads the job this often (other nodes' jobs are not notified)
STOP_GRACE = 2.0  # requests in flight at shutdown get this long to finish
LINGER_SECONDS = 2.0  # after payload_too_large, the rest of the request is dropped this long
LINGER_BYTES = 64 * 1024 * 1024  # … or up to this much, whichever comes first
YIELD_EVERY = 100  # jobs (or pieces of a reply) handled between two turns of the event loop

T = TypeVar("T")


class JobMetrics(Protocol):
    def totals(self) -> dict[str, float]: ...


class JobRates(Protocol):
    def per_second(self, totals: dict[str, float]) -> dict[str, float]: ...


class SupervisorView(Protocol):
    """What the control server needs of the supervisor (jobd.supervisor.Supervisor)."""

    store: Store
    registry: Registry
    node: str
    draining: bool
    started_at: float
    on_started: list[Callable[[], Awaitable[None]]]
    on_stopping: list[Callable[[], Awaitable[None]]]

    @property
    def settings(self) -> Any: ...  # `.workers`: how many workers it keeps

    @property
    def store_ok(self) -> bool: ...

    @property
    def counters(self) -> dict[str, int]: ...

    @property
    def metrics(self) -> JobMetrics: ...  # jobd.metrics.Metrics

    @property
    def rates(self) -> JobRates: ...  # jobd.metrics.Rates

    def worker_views(self) -> list[dict[str, Any]]: ...

    def cancel_running(self, job_id: int) -> bool: ...

    def job_event(self, event: str, job: Job, source: str | None) -> None: ...  # count, log

    def job_events(self, event: str, jobs: list[Job], source: str | None) -> None: ...

    def workers_short_for(self) -> float: ...

    async def metrics_text(self) -> str: ...


class SupervisorLoop(Protocol):
    """How the server runs the supervisor's methods: on the supervisor's event loop, another
    thread's when the server runs on the I/O thread (jobd.supervisor.crossing.Crossing).  Its
    plain fields (node, draining, store_ok, started_at) are read directly: single reads."""

    async def call(self, fn: Callable[[], T], timeout: float | None = None) -> T: ...

    async def await_(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T: ...


class SameLoop:
    """The server on the supervisor's own loop: a call is a call."""

    async def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        return fn()

    async def await_(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        return await fn()


@dataclass(frozen=True)
class OwnThread:
    """The server on a thread of its own (`jobd run`: the I/O thread): the store as it is used
    there, how the supervisor is reached, and `hook`, which makes the server's start and stop
    run on that thread when the supervisor calls them."""

    store: Store
    supervisor: SupervisorLoop
    hook: Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]


# --- the operations -------------------------------------------------------------------------


class Operations:
    """Every control method, once.  Each takes the typed params jobd.protocol parsed and returns
    the JSON-able result; errors are jobd.errors exceptions."""

    def __init__(
        self,
        supervisor: SupervisorView,
        *,
        default_max_attempts: int = 3,
        store_timeout: float = STORE_TIMEOUT,
        wait_poll: float = WAIT_POLL,
        store: Store | None = None,
        supervisor_loop: SupervisorLoop | None = None,
    ):
        self.supervisor = supervisor
        self.store = store or supervisor.store
        self.on_supervisor = supervisor_loop or SameLoop()
        self.default_max_attempts = default_max_attempts
        self.store_timeout = store_timeout
        self.wait_poll = wait_poll
        self.closing = asyncio.Event()
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._abandoned: set[asyncio.Future[Any]] = set()  # store calls past their deadline
        self._store_failed = False  # the last store call got no answer
        self._handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "hello": self.hello,
            "submit": self.submit,
            "submit_many": self.submit_many,
            "get": self.get,
            "list": self.list,
            "cancel": self.cancel,
            "retry": self.retry,
            "wait": self.wait,
            "stats": self.stats,
            "workers": self.workers,
            "health": self.health,
            "metrics": self.metrics,
        }
        assert set(self._handlers) == set(METHODS), "the method table and the handlers differ"

    def open(self) -> None:
        self.store.add_listener(self._on_notification)

    def close(self) -> None:
        """Answer every wait in progress now (timed_out) and stop listening to the store."""
        self.closing.set()
        for events in self._waiters.values():
            for event in events:
                event.set()
        self.store.remove_listener(self._on_notification)

    async def call(self, call: Call) -> Any:
        params = parse_params(call)
        return await self._handlers[call.method](params)

    async def _store(self, operation: Awaitable[Any], timeout: float | None = None) -> Any:
        """A store call that cannot hang a client: Unavailable once `timeout` has passed.  The
        call is then abandoned, not waited for: cancelling a statement on a connection that
        hangs takes psycopg seconds more, and the client has waited long enough."""
        timeout = timeout or self.store_timeout
        call = asyncio.ensure_future(operation)
        try:
            done, _ = await asyncio.wait({call}, timeout=timeout)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if not done:
            self._abandon(call)
            self._store_failed = True
            raise Unavailable(f"store unavailable: no answer within {timeout:g}s")
        self._store_failed = isinstance(call.exception(), Unavailable)
        return call.result()

    def _abandon(self, call: asyncio.Future[Any]) -> None:
        call.cancel()
        self._abandoned.add(call)  # kept until it has ended, its outcome read and dropped
        call.add_done_callback(self._forget)

    def _forget(self, call: asyncio.Future[Any]) -> None:
        self._abandoned.discard(call)
        if not call.cancelled():
            call.exception()

    # --- methods ------------------------------------------------------------------------------

    async def hello(self, _: NoParams) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "server": __version__,
            "methods": list(METHODS),
            "node": self.supervisor.node,
        }

    async def submit(self, spec: JobSpec) -> dict[str, Any]:
        new_job = self._new_job(spec, datetime.now(UTC), correlation_ids(1)[0])
        submitted = await self._store(self.store.submit(new_job))
        await self._count_submitted([submitted])
        return {"job": submitted.job.to_dict(), "created": submitted.created}

    async def submit_many(self, params: SubmitManyParams) -> dict[str, Any]:
        """Up to 1,000 jobs, on the supervisor's loop: each one's share is kept small (one
        clock read and one read of random bytes for the batch, the metrics counted per type,
        the reply's times printed once), and the loop gets a turn every YIELD_EVERY jobs, so
        a producer flooding the socket does not hold up the workers' messages and writes."""
        new_jobs = await self._new_jobs(params.jobs)
        submitted = await self._store(self.store.submit_many(new_jobs)) if new_jobs else []
        await self._count_submitted(submitted)
        results: list[dict[str, Any]] = []
        times: TimeTexts = {}
        for start in range(0, len(submitted), YIELD_EVERY):
            if start:
                await asyncio.sleep(0)
            chunk = submitted[start : start + YIELD_EVERY]
            results += [{"job": s.job.to_dict(times), "created": s.created} for s in chunk]
        return {"results": results}

    async def _new_jobs(self, specs: list[JobSpec]) -> list[NewJob]:
        now = datetime.now(UTC)
        ids = correlation_ids(len(specs))
        new_jobs: list[NewJob] = []
        for start in range(0, len(specs), YIELD_EVERY):
            if start:
                await asyncio.sleep(0)
            for index in range(start, min(start + YIELD_EVERY, len(specs))):
                try:
                    new_jobs.append(self._new_job(specs[index], now, ids[index]))
                except InvalidParams as exc:
                    raise in_batch(exc, index) from None
        return new_jobs

    async def _count_submitted(self, submitted: list[Submitted]) -> None:
        """jobd_jobs_submitted: every submit of this node comes through here (a job that
        matched an existing idempotency key is not a new one)."""
        created = [s.job for s in submitted if s.created]
        if created:
            await self._tell("submitted", created, None)

    async def _tell(self, event: str, jobs: list[Job], source: str | None) -> None:
        """A change made here, counted and logged by the supervisor (on its loop)."""
        sup = self.supervisor
        await self.on_supervisor.call(lambda: sup.job_events(event, jobs, source))

    def _new_job(self, spec: JobSpec, now: datetime, correlation_id: str) -> NewJob:
        """Check the type is one this daemon runs, fill in the handler's defaults, and run the
        handler's own payload validator, so a bad job is refused here rather than failing
        later in a worker.  `correlation_id` is the job's unless the client gave one."""
        handler = self.supervisor.registry.get(spec.type)
        if handler is None:
            known = self.supervisor.registry.types()
            runs = ", ".join(known) or "no types"
            raise UnknownType.of_field(
                "type",
                f"unknown job type {spec.type!r} (this daemon runs: {runs})",
                type=spec.type,
                known=known,
            )
        max_attempts = handler.max_attempts or self.default_max_attempts
        new_job = spec.to_new_job(max_attempts, correlation_id, now)
        if handler.validator is not None:
            check_payload(handler.validator, spec.type, new_job.payload)
        return new_job

    async def get(self, params: IdParams) -> dict[str, Any]:
        return {"job": (await self._store(self.store.get(params.id))).to_dict()}

    async def list(self, params: ListParams) -> dict[str, Any]:
        filters = JobFilter(
            states=params.states,
            type=params.type,
            queue=params.queue,
            created_after=params.created_after,
            created_before=params.created_before,
        )
        page = await self._store(self.store.list(filters, params.limit, params.cursor))
        times: TimeTexts = {}
        jobs = [job.to_dict(times) for job in page.jobs]
        return {"jobs": jobs, "next_cursor": page.next_cursor}

    async def cancel(self, params: IdParams) -> dict[str, Any]:
        job: Job = await self._store(self.store.request_cancel(params.id))
        if job.state is State.CANCELED:  # it was pending: canceled here and now
            await self._tell("canceled", [job], "pending")
        if job.state is State.RUNNING and job.lease_owner == self.supervisor.node:
            # Ours: stop it now.  (Another node's job is stopped by that node when the
            # store's cancel notification, or failing that its next heartbeat, reaches it.)
            sup = self.supervisor
            await self.on_supervisor.call(lambda: sup.cancel_running(job.id))
        return {"job": job.to_dict()}

    async def retry(self, params: IdParams) -> dict[str, Any]:
        job: Job = await self._store(self.store.retry(params.id))
        await self._tell("requeued", [job], None)
        return {"job": job.to_dict()}

    async def wait(self, params: WaitParams) -> dict[str, Any]:
        """Answer when the job is finished or the timeout has passed.  Woken by the store's
        FINISHED notification for jobs this node finishes; the store is re-read every
        `wait_poll` seconds as well, for jobs other nodes finish.  Never a busy loop: each turn
        waits for the notification or the poll interval."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout
        finished = asyncio.Event()
        self._waiters.setdefault(params.id, set()).add(finished)
        try:
            while True:
                finished.clear()  # before reading, so a notification after it is not lost
                job: Job = await self._store(self.store.get(params.id))
                remaining = deadline - loop.time()
                if job.state.terminal or remaining <= 0 or self.closing.is_set():
                    return {"job": job.to_dict(), "timed_out": not job.state.terminal}
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), min(remaining, self.wait_poll))
        finally:
            waiters = self._waiters.get(params.id, set())
            waiters.discard(finished)
            if not waiters:
                self._waiters.pop(params.id, None)

    def _on_notification(self, notification: Notification) -> None:
        if notification.kind is NotificationKind.FINISHED and notification.job_id is not None:
            for event in self._waiters.get(notification.job_id, ()):
                event.set()

    async def stats(self, _: NoParams) -> dict[str, Any]:
        counts = await self._store(self.store.counts())
        sup = self.supervisor
        views = await self.on_supervisor.call(sup.worker_views)
        counters = await self.on_supervisor.call(lambda: dict(sup.counters))
        rates = await self.on_supervisor.call(lambda: sup.rates.per_second(sup.metrics.totals()))
        return {
            "node": sup.node,
            "server": __version__,
            "uptime": round(time.time() - sup.started_at, 3),
            "draining": sup.draining,
            "jobs": {
                "by_state": counts.by_state(),
                "by_queue": counts.by("queue"),
                "by_type": counts.by("type"),
            },
            "workers": self._worker_counts(views),
            "counters": counters,
            "rates": {k: round(v, 3) for k, v in rates.items()},
        }

    def _worker_counts(self, views: builtins.list[dict[str, Any]]) -> dict[str, int]:
        states = [view["state"] for view in views]
        return {
            "busy": sum(state in ("busy", "stopping") for state in states),
            "idle": states.count("idle"),
            "total": len(states),
            "expected": self.supervisor.settings.workers,
        }

    async def workers(self, _: NoParams) -> dict[str, Any]:
        return {"workers": await self.on_supervisor.call(self.supervisor.worker_views)}

    async def health(self, _: NoParams) -> dict[str, Any]:
        """ok when the store answers, every worker is up and the node is not draining.  Known
        without waiting for the store: from the supervisor's last round trip to it (it pings
        the store when nothing else came back for a second) and this server's last call."""
        problems: list[str] = []
        store = "ok"
        if self._store_failed or not self.supervisor.store_ok:
            store = "unavailable"
            problems.append("store unavailable: it has not answered lately")
        sup, expected = self.supervisor, self.supervisor.settings.workers
        views = await self.on_supervisor.call(sup.worker_views, HEALTH_TIMEOUT)
        ready = sum(v["state"] != "starting" for v in views)
        short_for = await self.on_supervisor.call(sup.workers_short_for, HEALTH_TIMEOUT)
        if short_for > WORKERS_GRACE:
            problems.append(f"{ready} of {expected} workers ready for {short_for:.0f}s")
        if self.supervisor.draining:
            problems.append("draining: this node is shutting down")
        return {
            "status": "degraded" if problems else "ok",
            "store": store,
            "workers": {"ready": ready, "expected": expected},
            "draining": self.supervisor.draining,
            "node": self.supervisor.node,
            "problems": problems,
        }

    async def metrics(self, _: NoParams) -> dict[str, Any]:
        """The Prometheus text exposition of this node's metrics (the HTTP shim serves it at
        /metrics); the job counts in it may come from the store, hence the bound."""
        text = self.on_supervisor.await_(self.supervisor.metrics_text, self.store_timeout)
        return {"text": await self._store(text)}


def correlation_ids(n: int) -> list[str]:
    """`n` random ids of 32 hex digits (what the protocol promises), from one read of the
    system's random source for the whole batch instead of one uuid4() per job."""
    text = os.urandom(16 * n).hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


# --- serving -----------------------------------------------------------------------------------


class _Connection:
    def __init__(self, task: asyncio.Task[None], peer: Peer):
        self.task = task
        self.peer = peer
        self.busy = False


class ControlServer:
    """Serves `operations` on a bound socket; see the module docstring."""

    def __init__(self, operations: Operations, bound: BoundSocket, max_request_bytes: int):
        self.operations = operations
        self.bound = bound
        self.max_request_bytes = max_request_bytes
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False

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
            store=thread.store if thread else None,
            supervisor_loop=thread.supervisor if thread else None,
        )
        server = cls(operations, bound, control.max_request_bytes)
        supervisor.on_started.append(thread.hook(server.start) if thread else server.start)
        supervisor.on_stopping.append(thread.hook(server.stop) if thread else server.stop)
        return server

    @property
    def path(self) -> Path:
        return self.bound.path

    async def start(self) -> None:
        self.operations.open()
        self._server = await asyncio.start_unix_server(
            self._serve, sock=self.bound.sock, backlog=BACKLOG
        )
        log.info("control socket ready", extra={"socket": str(self.path)})

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (waits answer at once), then close
        every connection and remove the socket file."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        self.operations.close()
        for conn in list(self._connections):
            if not conn.busy:
                conn.task.cancel()
        tasks = [c.task for c in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self.close()

    def close(self) -> None:
        """Release the socket and its lock (also when the supervisor never started)."""
        self.bound.close()

    # --- one connection -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(
            asyncio.current_task(), peer_credentials(writer.get_extra_info("socket"))
        )
        self._connections.add(conn)
        try:
            await self._converse(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("control connection failed", extra=self._peer_extra(conn.peer))
        finally:
            self._connections.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        framer = LineFramer(self.max_request_bytes)
        while not self._stopping:
            data = await reader.read(READ_CHUNK)
            lines = framer.feed(data) if data else [framer.rest()]
            for line in lines:
                conn.busy = True
                try:
                    answer = await self._answer_line(line, conn.peer)
                finally:
                    conn.busy = False
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
            if framer.too_large:
                log.warning("request too large", extra=self._peer_extra(conn.peer))
                await self._refuse_oversized(framer, reader, writer)
                return
            if not data:
                return

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
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK), remaining)
            except TimeoutError:
                return
            if not chunk:
                return
            dropped += len(chunk)

    async def _answer_line(self, line: bytes, peer: Peer) -> bytes | None:
        """The bytes to send back for one request line (None: nothing, e.g. notifications)."""
        if not line.strip():
            return None  # blank lines between requests are harmless
        try:
            message = decode(line)
        except JobdError as exc:
            self._log_request(peer, None, None, exc.code, 0.0)
            return encode(error_response(None, exc))
        if isinstance(message, list):
            return await self._answer_batch(message, peer)
        reply = await self._answer(message, peer)
        return await self._encode(reply) if reply is not None else None

    async def _answer_batch(self, messages: list[Any], peer: Peer) -> bytes | None:
        """A JSON-RPC batch: each request answered in turn; no answers at all, no line."""
        if not messages:
            return encode(error_response(None, InvalidRequest("empty batch")))
        replies = [reply for m in messages if (reply := await self._answer(m, peer)) is not None]
        return await self._encode(replies) if replies else None

    async def _answer(self, message: Any, peer: Peer) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            call = parse_call(message)
        except RequestError as exc:
            self._log_request(peer, None, exc.id, exc.error.code, 0.0)
            return None if exc.notification else error_response(exc.id, exc.error)
        try:
            reply = result_response(call.id, await self.operations.call(call))
        except JobdError as exc:
            reply = error_response(call.id, exc)
        except Exception as exc:  # a bug: the client gets an internal_error, the log the trace
            log.exception("control method failed", extra={"method": call.method})
            reply = error_response(call.id, JobdError(f"internal error: {type(exc).__name__}"))
        code = reply["error"]["data"]["code"] if "error" in reply else "ok"
        self._log_request(peer, call.method, call.id, code, time.perf_counter() - started)
        return None if call.notification else reply

    async def _encode(self, reply: Any) -> bytes:
        """encode(reply), a few pieces at a time: a reply of 1,000 jobs (half a megabyte)
        must not hold up the supervisor's loop while it is written out."""
        try:
            pieces: list[str] = []
            for i, piece in enumerate(encode_pieces(reply), 1):
                pieces.append(piece)
                if i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            return "".join(pieces).encode() + b"\n"
        except (TypeError, ValueError) as exc:  # a result that is not JSON: our bug
            log.exception("control reply is not JSON")
            call_id = reply.get("id") if isinstance(reply, dict) else None
            return encode(error_response(call_id, JobdError(f"internal error: {exc}")))

    def _log_request(
        self, peer: Peer, method: str | None, call_id: Any, code: str, seconds: float
    ) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "control request",
                extra={
                    "method": method,
                    "request_id": call_id,
                    "outcome": code,
                    "ms": round(seconds * 1000, 3),
                    **self._peer_extra(peer),
                },
            )

    @staticmethod
    def _peer_extra(peer: Peer) -> dict[str, Any]:
        return {"peer_pid": peer.pid, "peer_uid": peer.uid}
