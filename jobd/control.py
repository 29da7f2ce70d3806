"""The control operations: the one implementation of every control method (submit, list,
cancel, wait, …) of the control protocol (jobd.protocol), over the supervisor and its store.
jobctl and the HTTP shim reach these, and only these, through jobd.client; jobd.control_server
serves them on the control socket.  Under `jobd run` they run on the I/O thread's event loop,
next to the store, and reach the supervisor's state on the supervisor's loop (`SupervisorLoop`,
docs/adr/0022).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from jobd import __version__
from jobd.control_history import HistoryOperations
from jobd.control_queues import QueueOperations
from jobd.control_schedules import ScheduleOperations
from jobd.control_socket import Peer
from jobd.domain import Job, JobFacts, NewJob, State, TimeTexts, timeout_in_force
from jobd.errors import InvalidParams, JobdError, Unavailable, UnknownType
from jobd.handlers import HandlerSpec, Registry
from jobd.jobspec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    JobSpec,
    check_payload,
    check_payload_size,
    in_batch,
)
from jobd.limits import LIST_CHUNK, MAX_LIST_BYTES
from jobd.protocol import (
    METHODS,
    PROTOCOL_VERSION,
    Call,
    Effective,
    IdParams,
    InForce,
    ListParams,
    NoParams,
    SubmitManyParams,
    WaitParams,
    parse_params,
)
from jobd.schedules import Schedule
from jobd.store import Changed, JobFilter, Links, Notification, NotificationKind, Store, Submitted
from jobd.store.base import encode_cursor
from jobd.store.nodes import version_refusal
from jobd.subscriptions import subscribe_elsewhere
from jobd.write_priority import PRIORITY

__all__ = ["Operations", "OwnThread", "SupervisorLoop", "SupervisorView"]

log = logging.getLogger("jobd.control")

STORE_TIMEOUT = 10.0  # every store call the server makes is bounded by this
HEALTH_TIMEOUT = 2.0  # health answers quickly even when the store does not
STORE_FAILURE_MEMORY = 3.0  # how long a store call that got no answer makes health degraded
SUBMIT_FAILURE_MEMORY = 60.0  # how long a failed submit makes health degraded (or until one works)
WORKERS_GRACE = 10.0  # fewer workers than configured for longer than this: degraded
WAIT_POLL = 0.5  # `wait` re-reads the job this often (other nodes' jobs are not notified)
YIELD_EVERY = 100  # jobs (or pieces of a reply) handled between two turns of the event loop

T = TypeVar("T")


class StatusView(Protocol):
    def schedule_warnings(self) -> list[str]: ...  # schedules another node defines differently


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

    # Read-only members: the supervisor's own attributes need only be readable, of any type
    # that offers what is used here.
    @property
    def counters(self) -> dict[str, int]: ...

    @property
    def metrics(self) -> JobMetrics: ...  # jobd.metrics.Metrics

    @property
    def rates(self) -> JobRates: ...  # jobd.metrics.Rates

    @property
    def settings(self) -> Any: ...  # `.workers` it keeps; `.default_timeout` of a job

    @property
    def store_ok(self) -> bool: ...

    @property
    def status(self) -> StatusView: ...  # jobd.supervisor.status.Status

    @property
    def store_write_errors(self) -> list[str]: ...  # the supervisor's writes failing now

    def worker_views(self) -> list[dict[str, Any]]: ...

    def cancel_running(self, job_id: int) -> bool: ...

    def job_event(self, event: str, job: Job, source: str | None) -> None: ...  # count, log

    def job_events(self, event: str, jobs: Sequence[JobFacts], source: str | None) -> None: ...

    def workers_short_for(self) -> float: ...

    async def metrics_text(self) -> str: ...


# --- the limits in force -------------------------------------------------------------------


def effective_limits(job: Job, handler: HandlerSpec | None, default_timeout: float) -> Effective:
    """The timeout and max_attempts in force for `job` on this node, each with its source.

    The timeout is chosen when an attempt starts, by the rule the supervisor applies
    (jobd.domain.timeout_in_force): the job's, else its handler's, else the node's
    `jobs.default_timeout`.  max_attempts was chosen at submit (the submitter's, else the
    handler's, else `jobs.default_max_attempts`) and stored on the job, which does not record
    which of them it was: its source is the job, and no later change of handler or
    configuration alters it."""
    timeout = InForce(
        *timeout_in_force(job, None if handler is None else handler.timeout, default_timeout)
    )
    return Effective(timeout=timeout, max_attempts=InForce(job.max_attempts, "job"))


class SupervisorLoop(Protocol):
    """How the server runs the supervisor's methods: on the supervisor's event loop, another
    thread's when the server runs on the I/O thread (jobd.supervisor.crossing.Crossing).  Its
    plain fields (node, draining, store_ok, started_at) are read directly: single reads."""

    async def call(self, fn: Callable[[], T], timeout: float | None = None) -> T: ...

    async def await_(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T: ...

    def post(self, fn: Callable[[], object]) -> None: ...


class SameLoop:
    """The server on the supervisor's own loop: a call is a call."""

    async def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        return fn()

    async def await_(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        return await fn()

    def post(self, fn: Callable[[], object]) -> None:
        fn()


async def plain_submit(
    store: Store, spec: NewJob, stored: Callable[[Submitted], None]
) -> Submitted:
    """How Operations submits a job unless told otherwise (jobd.supervisor.submit_claims):
    `stored` is told of the store's answer before anything else of the job happens here."""
    submitted = await store.submit(spec)
    stored(submitted)
    return submitted


@dataclass(frozen=True)
class OwnThread:
    """The server on a thread of its own (`jobd run`: the I/O thread): the store as it is used
    there, how the supervisor is reached, and `hook`, which makes the server's start and stop
    run on that thread when the supervisor calls them."""

    store: Store
    supervisor: SupervisorLoop
    hook: Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]


# --- the operations -------------------------------------------------------------------------


async def _detail(ops: Operations, job: Job) -> dict[str, Any]:
    """The job as `get` shows it: with the limits this node applies to it (`effective`), and
    for a job of a workflow, its children and the parents it still waits for."""
    handler = ops.supervisor.registry.get(job.type)
    effective = effective_limits(job, handler, ops.supervisor.settings.default_timeout)
    detail = {**job.to_dict(), "effective": effective.to_dict()}
    links: Links = await ops._store(ops.store.links(job.id))
    if job.parents or links.children:
        detail |= {"children": links.children, "waiting_for": links.unfinished_parents}
    return detail


class Operations:
    """Every control method, once.  Each takes the typed params jobd.protocol parsed and returns
    the JSON-able result; errors are jobd.errors exceptions."""

    def __init__(
        self,
        supervisor: SupervisorView,
        *,
        default_max_attempts: int = 3,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        store_timeout: float = STORE_TIMEOUT,
        wait_poll: float = WAIT_POLL,
        lease_seconds: float | None = None,
        store: Store | None = None,
        supervisor_loop: SupervisorLoop | None = None,
        schedules: Sequence[Schedule] = (),
    ):
        self.supervisor = supervisor
        #: A node is live while its heartbeat is newer than this (jobs.lease_seconds); None:
        #: the fleet is not consulted (health leaves it out, `nodes` is unavailable).
        self.lease_seconds = lease_seconds
        self.store = store or supervisor.store
        self.on_supervisor = supervisor_loop or SameLoop()
        self.submitting = plain_submit  # `jobd run`: with its claim when due (ADR 0042)
        self.default_max_attempts = default_max_attempts
        self.max_payload_bytes = max_payload_bytes
        self.store_timeout = store_timeout
        self.wait_poll = wait_poll
        self.closing = asyncio.Event()
        self.waiters: dict[int, set[asyncio.Event]] = {}  # by job id: FinishedRelay reads it
        self._abandoned: set[asyncio.Future[Any]] = set()  # store calls past their deadline
        #: When this server's last store call got no answer (None: it got one).  It counts
        #: against the store's health for STORE_FAILURE_MEMORY only: the supervisor's own round
        #: trips tell the rest, and a server that makes no further call must not stay degraded.
        self._store_failed_at: float | None = None
        #: The last submit's error and when (None: the last submit was stored).
        self._submit_failed: tuple[float, str] | None = None
        self.queues = QueueOperations(self)  # the methods of jobd.control_queues
        self.schedules = ScheduleOperations(
            schedules,
            self.store,
            self._store,
            lambda job: self._tell("submitted", [job], None),
            self.queues.record,
            default_max_attempts,
        )
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
            "nodes": self.nodes,
            **self.schedules.handlers(),
            **HistoryOperations(self).handlers(),  # attempts, activity (jobd.control_history)
            "subscribe": subscribe_elsewhere,  # served by the connection (jobd.subscriptions)
        }
        handled = set(self._handlers) | set(self.queues.methods)
        assert handled == set(METHODS), "the method table and the handlers differ"

    def open(self) -> None:
        self.store.add_listener(self._on_notification)

    def close(self) -> None:
        """Answer every wait in progress now (timed_out) and stop listening to the store."""
        self.closing.set()
        for events in self.waiters.values():
            for event in events:
                event.set()
        self.store.remove_listener(self._on_notification)

    async def call(self, call: Call, peer: Peer | None = None) -> Any:
        params = parse_params(call)
        self.queues.enter(call, peer)  # who calls, for the audit trail (QueueOperations.record)
        return await (self._handlers.get(call.method) or self.queues.methods[call.method])(params)

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
            self._store_failed_at = time.monotonic()
            raise Unavailable(f"store unavailable: no answer within {timeout:g}s")
        failed = isinstance(call.exception(), Unavailable)
        self._store_failed_at = time.monotonic() if failed else None
        return call.result()

    async def _insert(self, operation: Awaitable[T]) -> T:
        """A submit's store call, its failure remembered for health: a database that answers
        reads but refuses writes would otherwise look healthy."""
        try:
            result: T = await self._store(operation)
        except Unavailable as exc:
            self._submit_failed = (time.monotonic(), exc.message)
            raise
        except JobdError:  # the client's (a value the database cannot hold): not the store's
            raise
        except Exception as exc:  # the database refused the write, e.g. it is read-only
            self._submit_failed = (time.monotonic(), str(exc) or type(exc).__name__)
            raise
        self._submit_failed = None
        return result

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
        submitted = await self._insert(
            self.submitting(self.store, new_job, lambda s: self._count_submitted([s]))
        )
        return {"job": submitted.job.to_dict(), "created": submitted.created}

    async def submit_many(self, params: SubmitManyParams) -> dict[str, Any]:
        """Up to 1,000 jobs, on the control server's loop, in the supervisor's process: each
        one's share is kept small (one clock read and one read of random bytes for the batch,
        the metrics counted per type, the reply's times printed once, no reply built at all
        for `reply: "ids"`, ADR 0044), and the loop gets a turn every YIELD_EVERY jobs, so a
        producer flooding the socket does not hold up the workers' messages and writes."""
        new_jobs = await self._new_jobs(params.jobs)
        submitted = await self._insert(self.store.submit_many(new_jobs)) if new_jobs else []
        self._count_submitted(submitted)
        names = {name: submitted[i].job.id for name, i in params.names.items()}
        if params.reply == "ids":  # a producer's bulk submit: no job to build or encode
            ids = [s.job.id for s in submitted]
            return {"ids": ids, "created": [s.created for s in submitted], "names": names}
        results: list[dict[str, Any]] = []
        times: TimeTexts = {}
        for start in range(0, len(submitted), YIELD_EVERY):
            if start:
                await PRIORITY.give_way()
            chunk = submitted[start : start + YIELD_EVERY]
            results += [{"job": s.job.to_dict(times), "created": s.created} for s in chunk]
        return {"results": results, "names": names}

    async def _new_jobs(self, specs: list[JobSpec]) -> list[NewJob]:
        now = datetime.now(UTC)
        ids = correlation_ids(len(specs))
        new_jobs: list[NewJob] = []
        for start in range(0, len(specs), YIELD_EVERY):
            await PRIORITY.give_way()  # the first too: parsing the request took a while
            for index in range(start, min(start + YIELD_EVERY, len(specs))):
                try:
                    new_jobs.append(self._new_job(specs[index], now, ids[index]))
                except InvalidParams as exc:
                    raise in_batch(exc, index) from None
        return new_jobs

    def _count_submitted(self, submitted: list[Submitted]) -> None:
        """jobd_jobs_submitted: every submit of this node comes through here (a job that
        matched an existing idempotency key is not a new one)."""
        created = [s.job for s in submitted if s.created]
        if created:
            self._tell("submitted", created, None)

    def _tell(self, event: str, jobs: list[Job], source: str | None) -> None:
        """A change made here, counted and logged by the supervisor on its loop (ADR 0041)."""
        sup = self.supervisor
        self.on_supervisor.post(lambda: sup.job_events(event, jobs, source))

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
        new_job = spec.to_new_job(max_attempts, correlation_id, now, handler.result_ttl)
        check_payload_size(new_job.payload, self.max_payload_bytes, "jobs.max_payload_bytes")
        if handler.validator is not None:
            check_payload(handler.validator, spec.type, new_job.payload)
        return new_job

    async def get(self, params: IdParams) -> dict[str, Any]:
        """The job, with the limits this node applies to it (`effective`)."""
        return {"job": await _detail(self, await self._store(self.store.get(params.id)))}

    async def list(self, params: ListParams) -> dict[str, Any]:
        filters = JobFilter(**params.filters())
        jobs, store_cursor = await self._page(filters, params.limit, params.store_cursor)
        return {"jobs": jobs, "next_cursor": params.next_cursor(store_cursor)}

    async def _page(
        self, filters: JobFilter, limit: int, cursor: str | None
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """Up to `limit` jobs and at most about MAX_LIST_BYTES of them (never fewer than one),
        read LIST_CHUNK at a time; and the store's cursor after the last one given."""
        times: TimeTexts = {}
        jobs: list[dict[str, Any]] = []
        size = 0
        while True:
            chunk = min(limit - len(jobs), LIST_CHUNK)
            page = await self._store(self.store.list(filters, chunk, cursor))
            for n, job in enumerate(page.jobs, 1):
                wire = job.to_dict(times)
                size += len(json.dumps(wire, default=str))
                jobs.append(wire)
                if size >= MAX_LIST_BYTES and n < len(page.jobs):
                    return jobs, encode_cursor(job.id)
            cursor = page.next_cursor
            if cursor is None or len(jobs) >= limit or size >= MAX_LIST_BYTES:
                return jobs, cursor

    async def cancel(self, params: IdParams) -> dict[str, Any]:
        job: Job = await self._store(self.store.request_cancel(params.id))
        if job.state is State.CANCELED:  # it was pending: canceled here and now
            self._tell("canceled", [job], "pending")
        if job.state is State.RUNNING and job.lease_owner == self.supervisor.node:
            # Ours: stop it now.  (Another node's job is stopped by that node when the
            # store's cancel notification, or failing that its next heartbeat, reaches it.)
            sup = self.supervisor
            await self.on_supervisor.call(lambda: sup.cancel_running(job.id))
        return {"job": job.to_dict()}

    async def retry(self, params: IdParams) -> dict[str, Any]:
        changed: Changed = await self._store(self.store.operator_retry(params.id))
        self._tell("requeued", [changed.job], changed.previous.value)
        return {"job": changed.job.to_dict()}

    async def wait(self, params: WaitParams) -> dict[str, Any]:
        """Answer when the job is finished or the timeout has passed.  Woken by the store's
        FINISHED notification for jobs this node finishes; the store is re-read every
        `wait_poll` seconds as well, for jobs other nodes finish.  Never a busy loop: each turn
        waits for the notification or the poll interval."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout
        finished = asyncio.Event()
        self.waiters.setdefault(params.id, set()).add(finished)
        try:
            while True:
                finished.clear()  # before reading, so a notification after it is not lost
                job: Job = await self._store(self.store.get(params.id))
                remaining = deadline - loop.time()
                if job.state.terminal or remaining <= 0 or self.closing.is_set():
                    return {"job": job.to_dict(), "timed_out": not job.state.terminal}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, self.wait_poll)):
                        await finished.wait()
        finally:
            waiters = self.waiters.get(params.id, set())
            waiters.discard(finished)
            if not waiters:
                self.waiters.pop(params.id, None)

    def _on_notification(self, notification: Notification) -> None:
        if notification.kind is NotificationKind.FINISHED and notification.job_id is not None:
            for event in self.waiters.get(notification.job_id, ()):
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

    def _worker_counts(self, views: Sequence[dict[str, Any]]) -> dict[str, int]:
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
        failed_at = self._store_failed_at
        recent_failure = (
            failed_at is not None and time.monotonic() - failed_at < STORE_FAILURE_MEMORY
        )
        if recent_failure or not self.supervisor.store_ok:
            store = "unavailable"
            problems.append("store unavailable: it has not answered lately")
        problems += self._write_problems()
        sup, expected = self.supervisor, self.supervisor.settings.workers
        views = await self.on_supervisor.call(sup.worker_views, HEALTH_TIMEOUT)
        ready = sum(v["state"] != "starting" for v in views)
        short_for = await self.on_supervisor.call(sup.workers_short_for, HEALTH_TIMEOUT)
        if short_for > WORKERS_GRACE:
            problems.append(f"{ready} of {expected} workers ready for {short_for:.0f}s")
        if self.supervisor.draining:
            problems.append("draining: this node is shutting down")
        answer = {
            "status": "ok",
            "store": store,
            "workers": {"ready": ready, "expected": expected},
            "draining": self.supervisor.draining,
            "node": self.supervisor.node,
            "problems": problems,
        }
        warnings: builtins.list[str] = []
        if self.schedules.defined:  # warnings, not problems: each node still ticks once
            warnings += await self.on_supervisor.call(sup.status.schedule_warnings, HEALTH_TIMEOUT)
        if self.lease_seconds is not None and store == "ok":  # a server that knows the fleet
            await self._fleet_health(self.lease_seconds, problems, warnings)
        if self.lease_seconds is not None or warnings:
            answer["warnings"] = warnings
        answer["status"] = "degraded" if problems else "ok"
        return answer

    def _write_problems(self) -> builtins.list[str]:
        """The writes failing lately: the supervisor's (results, claims) and submits here."""
        problems = [f"store refuses writes: {e}" for e in self.supervisor.store_write_errors]
        submit = self._submit_failed
        if submit is not None and time.monotonic() - submit[0] < SUBMIT_FAILURE_MEMORY:
            problems.append(f"store refuses writes: submit: {submit[1]}")
        return problems

    async def _fleet_health(
        self, lease: float, problems: builtins.list[str], warnings: builtins.list[str]
    ) -> None:
        """The fleet's part of health: a node too old to claim is a problem; jobs of types no
        live node runs are a warning (they wait; the status stays ok, ADR 0023)."""
        try:
            # Half of health's own bound: the rest of its answer is already known.
            fleet = await self._store(
                self.store.fleet(lease), min(HEALTH_TIMEOUT / 2, self.store_timeout)
            )
        except Unavailable as exc:
            warnings.append(f"fleet unknown: {exc.message}")
            return
        refusal = version_refusal(__version__, fleet.min_node_version)
        if refusal is not None:
            problems.append(refusal)
        for job_type, n in fleet.unrunnable().items():
            warnings.append(f"{n} pending {job_type!r} jobs: no live node runs that type")
        warnings += await self.queues.paused_warnings()

    async def nodes(self, _: NoParams) -> dict[str, Any]:
        """The nodes table: every node whose row is not yet pruned, live or not."""
        if self.lease_seconds is None:
            raise Unavailable("nodes: this server does not know the fleet")
        fleet = await self._store(self.store.fleet(self.lease_seconds))
        return {
            "nodes": [node.to_dict() for node in fleet.nodes],
            "min_node_version": fleet.min_node_version,
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
