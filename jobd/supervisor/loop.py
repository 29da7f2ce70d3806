"""The supervisor: one process, its main thread's asyncio loop, no handler code.

It claims jobs when workers are free, hands each to a worker over that worker's own pipe,
collects the results and writes them back in batches, heartbeats its leases, recovers the
expired leases of any node, keeps the worker count, enforces timeouts and cancellations, and
drains on SIGTERM/SIGINT without losing a job.

The main loop (`run`) reads like gunicorn's arbiter: wait for something to happen or a tick,
then handle signals, enforce deadlines, keep the workers, hand out work.  Worker messages and
worker deaths arrive through callbacks on the loop (the pipe and the process sentinel are file
descriptors the loop watches); side tasks do the periodic store work.  Signal handlers only
record the signal and wake the loop.  The loop never waits for the store: the store lives on
the I/O thread and is reached through jobd.supervisor.store_proxy under deadlines, and even the
claim runs as a task of its own (docs/adr/0022).  What happens to a job is decided in
`outcomes`, how much to claim in `pacing`, when a claim goes and who gets the jobs in `dispatch`;
the package docstring lists the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from jobd.domain import Job, JobFacts
from jobd.handlers import Registry
from jobd.metrics import CountsCache, Metrics, Rates
from jobd.pipe import (
    Cancel,
    Many,
    Stop,
)
from jobd.store import Notification, NotificationKind, Store
from jobd.supervisor import event_loop
from jobd.supervisor.asks import Asks
from jobd.supervisor.claims import Claims
from jobd.supervisor.deadlines import Deadlines
from jobd.supervisor.dispatch import Dispatch
from jobd.supervisor.fleet import FleetMember, node_report
from jobd.supervisor.handout import HandOut
from jobd.supervisor.housekeeping import Housekeeping
from jobd.supervisor.job_events import JobEvents
from jobd.supervisor.outcomes import JobPolicy, timeout_of
from jobd.supervisor.pacing import Pacing
from jobd.supervisor.reports import WorkerReports
from jobd.supervisor.settings import BOOT_TIMEOUT, SIDE_TASK_STOP_TIMEOUT, SupervisorSettings
from jobd.supervisor.status import Status
from jobd.supervisor.store_health import StoreHealth, settled
from jobd.supervisor.worker_pool import WorkerPool
from jobd.supervisor.writeback import WriteBack
from jobd.systemd import Notifier
from jobd.workers import WorkerFactory, WorkerProcess

log = logging.getLogger("jobd.supervisor")


class BootError(RuntimeError):
    """The workers could not start; the daemon stops instead of respawning in a loop."""


def new_node_id() -> str:
    """One id per boot of a node: leases taken by an earlier boot are never mistaken for ours."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Supervisor:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: SupervisorSettings,
        *,
        node: str | None = None,
        setup_worker_logging: Callable[[], None] | None = None,
    ):
        self.store = store
        self.registry = registry
        self.settings = settings
        self.node = node or new_node_id()
        self.started_at = time.time()
        self.draining = False
        self.drain_deadline = 0.0
        self.boot_error: str | None = None
        self.counts_cache = CountsCache()
        self.metrics = Metrics(counts=self.counts_cache.get)
        factory = WorkerFactory(
            list(settings.handler_modules),
            max_jobs=settings.max_jobs_per_worker,
            max_memory=settings.max_worker_memory,
            max_result_bytes=settings.max_result_bytes,
            setup_logging=setup_worker_logging,
        )
        self.pool = WorkerPool(factory, self.metrics, self._on_worker_readable, self._on_exit)
        self.workers = self.pool.workers  # every worker by its index
        self.rates = Rates()
        self.notifier = Notifier()
        self.health = StoreHealth(settings.heartbeat_seconds)
        self.events = JobEvents(self.metrics, settings.job_events)
        self.pacing = Pacing(prefetch=settings.prefetch)
        self.claims = Claims(store, self.node, settings, registry, self.health, self.pacing)
        self.claims.paused.export(self.metrics.registry)
        self.claims.limits.export(self.metrics.registry)
        self.claims.wake = self.wake
        self.dispatch = Dispatch(self)
        self.writeback = WriteBack(
            self.dispatch.write,
            self.events,
            self.health,
            record_progress=lambda reports: store.record_progress(self.node, reports),
            accounted=self.claims.written,
        )
        self.fleet = FleetMember(
            store,
            settings.lease_seconds,
            self.metrics,
            describe=lambda: node_report(
                self.node, self.started_at, registry.types(), self.workers.values()
            ),
            drain=self.request_drain,
        )
        self.housekeeping = Housekeeping(
            store,
            self.node,
            settings,
            self.health,
            self.events,
            self.fleet,
            held=self._held_ids,
            cancel=self.cancel_running,
            work_found=self._work_found,
        )
        self.reports = WorkerReports(
            record=self.writeback.record,
            started=self.writeback.started,
            progress=self.writeback.progress,
            policy=self._policy,
            events=self.events,
            metrics=self.metrics,
            pacing=self.pacing,
            asks=Asks(store),
        )
        self.deadlines = Deadlines(settings.kill_grace, self._timeout_of)
        self.handout = HandOut(registry, self.writeback.record, self._timeout_of)
        self.claimed = self.handout.claimed  # claimed, not yet handed to a worker
        self.status = Status(self)
        self._signals: deque[int] = deque()
        self._wakeup = asyncio.Event()
        self._side_tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        #: When the loop last finished a turn (monotonic): the watchdog pings only while it turns.
        self.last_turn = time.monotonic()
        #: Hooks run when the supervisor has started (control server, HTTP shim, sd_notify).
        self.on_started: list[Callable[[], Awaitable[None]]] = []
        self.on_stopping: list[Callable[[], Awaitable[None]]] = []

    @property
    def store_ok(self) -> bool:
        """The store answered recently (read from the control server's thread too)."""
        return self.health.answering()

    @property
    def store_write_errors(self) -> list[str]:
        """The writes failing now, each with its last error (read from the control server's
        thread too)."""
        return self.health.failing_writes()

    # --- the life of the process -------------------------------------------------------

    async def run(self) -> int:
        """Run until drained after a signal; return the process exit status."""
        await self._start()
        try:
            while not self._finished():
                await self._wait(self._next_tick())
                self._handle_signals()
                drain_over = self.draining and time.monotonic() >= self.drain_deadline
                self.deadlines.enforce(self.workers.values(), drain_over)
                self._manage_workers()
                self.dispatch.turn()
                self.status.update()
                self.last_turn = time.monotonic()
        finally:
            await self._shutdown()
        return 1 if self.boot_error else 0

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        self.store.add_listener(self._on_notification)
        self._writer = asyncio.create_task(self.guard("flusher", self.writeback.run))
        for index in range(1, self.settings.workers + 1):
            self.pool.spawn(index)
        await self._wait_for_workers()
        h = self.housekeeping
        for loop_fn in (h.heartbeat_loop, h.recovery_loop, h.prune_loop, h.probe_loop):
            self._side_task(loop_fn.__name__.removesuffix("_loop"), loop_fn)
        for hook in self.on_started:
            await hook()
        self.notifier.ready(self.status.line())
        if self.notifier.enabled:
            self._side_task("systemd", self.status.systemd_loop)
        log.info(
            "jobd started",
            extra={
                "node": self.node,
                "workers": self.settings.workers,
                "types": self.registry.types(),
                "store": self.store.kind,
                "event_loop": event_loop.KIND,
            },
        )
        # Jobs submitted before this node started send no notification, and waiting for the
        # workers swallowed any wake-up (theirs and a submit's): without this the first turn
        # slept a whole poll interval before its first claim, idling a backlog on restart.
        self._work_found()

    def _side_task(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        self._side_tasks.append(asyncio.create_task(self.guard(name, fn), name=f"jobd-{name}"))

    async def guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a side task; if it dies of a bug, the supervisor drains instead of limping on."""
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("side task died; draining", extra={"task": name})
            if not self.draining:
                self.begin_drain(f"{name} task failed")
                self.wake()

    def _finished(self) -> bool:
        if self.boot_error:
            return True
        if self.dispatch.claim_in_flight() and self.health.heard():
            return False  # its jobs are ours: they are given back before we go
        return self.draining and not self.workers and not self.claimed

    def _next_tick(self) -> float:
        """Sleep until the poll interval, or the next timeout or kill step, whichever is first."""
        now = time.monotonic()
        wake_at = now + self.settings.poll_interval
        if self.draining:
            wake_at = min(wake_at, self.drain_deadline, now + 0.1)
        wake_at = self.deadlines.next(self.workers.values(), wake_at)
        return max(wake_at - now, 0.001)

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        self._wakeup.clear()

    def wake(self) -> None:
        self._wakeup.set()

    def _work_found(self) -> None:
        """New pending work may exist: claim on the next turn, and take that turn now."""
        self.claims.work_hint.set()
        self.wake()

    # --- signals ---------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        """Only record the signal and wake the loop: no logging, no I/O in here."""
        self._signals.append(signum)
        self._wakeup.set()

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if not self.draining:
                self.begin_drain(signal.Signals(signum).name)
            else:
                log.warning("second signal: stopping running jobs now")
                self.deadlines.immediate = True
                self.drain_deadline = time.monotonic()

    def request_drain(self, why: str) -> None:
        """Drain, asked from a side task: begin unless draining already, and take a turn now."""
        if not self.draining:
            self.begin_drain(why)
        self.wake()

    def begin_drain(self, why: str) -> None:
        """Stop claiming; let running jobs finish for drain_timeout; give back the rest."""
        log.info("draining", extra={"reason": why, "drain_timeout": self.settings.drain_timeout})
        self.draining = True
        self.drain_deadline = time.monotonic() + self.settings.drain_timeout
        self.notifier.stopping(f"draining ({why})")
        self.handout.release_all()
        for w in self.workers.values():
            w.retiring = True
            w.send(Stop())

    # --- workers -------------------------------------------------------------------------

    async def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.pool.all_ready():
            if self.boot_error:
                raise BootError(self.boot_error)
            if time.monotonic() > deadline:
                raise BootError(f"workers did not start within {BOOT_TIMEOUT}s")
            await self._wait(0.05)

    def _manage_workers(self) -> None:
        """Keep the number of workers; replace the ones that died or retired."""
        if not (self.draining or self.boot_error):
            self.pool.keep(self.settings.workers)

    def _on_worker_readable(self, w: WorkerProcess) -> None:
        """Every message the worker has sent, then one hand-out and one wake-up for all."""
        try:
            messages, closed = w.receive_all()
        except OSError:
            messages, closed = [], True
        for message in messages:
            for report in message.messages if isinstance(message, Many) else (message,):
                self.reports.handle(w, report)
        if closed:  # its sentinel tells the rest
            asyncio.get_running_loop().remove_reader(w.conn.fileno())
        if self.claimed:
            self.dispatch.hand_out()  # a slot may be free: refilled now, not next turn
        self.wake()

    def _on_exit(self, w: WorkerProcess) -> None:
        how, boot_error = self.pool.ended(w, self.draining)
        self.boot_error = boot_error or self.boot_error
        self.reports.died(w, how)
        self.pool.close(w)
        self.wake()

    # --- messages from workers -------------------------------------------------------------

    def _policy(self, job: Job) -> JobPolicy:
        return JobPolicy.of(job, self.registry.get(job.type), self.settings)

    def _timeout_of(self, job: Job) -> float:
        return timeout_of(job, self.registry.get(job.type), self.settings)

    # --- changes the control server made -----------------------------------------------------

    def job_event(self, event: str, job: Job, source: str | None) -> None:
        """A change the control server made (a job `submitted`, a pending one `canceled`, an
        operator's `requeued`): counted where a counter exists, and logged like the others."""
        self.events.changed(event, [job], source)

    def job_events(self, event: str, jobs: Sequence[JobFacts], source: str | None) -> None:
        """job_event for many jobs at once (a submit_many's), on the loop that runs the
        workers."""
        self.events.changed(event, jobs, source)

    # --- deadlines: timeouts, cancellations, drain -------------------------------------------

    def cancel_running(self, job_id: int) -> bool:
        """Stop job `job_id` if one of our workers holds it; True if it did."""
        for w in self.workers.values():
            if job_id not in w.assigned:
                continue
            if w.running == job_id:
                if w.stop is None:
                    self.deadlines.stop(w, "cancel")
            else:  # handed over but not started: the worker skips it and reports it cancelled
                w.cancelled.add(job_id)
                w.send(Cancel(job_id))
            return True
        return self.handout.cancel(job_id)

    def _held_ids(self) -> set[int]:
        """The jobs whose leases are this node's to renew: held, or with an outcome unwritten."""
        return {job.id for job in self.dispatch.held_jobs()} | set(self.writeback.held())

    def _on_notification(self, n: Notification) -> None:
        if n.kind is NotificationKind.SUBMITTED:
            self._work_found()
            # The claim starts now, not after the loop's turn: an idle node's submit → start
            # latency is mostly its hops (docs/adr/0041).
            self.dispatch.turn()
        elif n.kind is NotificationKind.CANCEL and n.job_id is not None:
            self.cancel_running(n.job_id)
            self.wake()

    # --- the end ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for hook in self.on_stopping:
            with contextlib.suppress(Exception):
                await hook()
        if self.workers:  # boot error or an exception: do not leave workers behind
            await self._kill_all_workers()
        # A claim in flight comes back while the store answers (its jobs are then given back);
        # a store that hangs is not waited for: what it claimed is recovered with its leases.
        await settled(self.dispatch.claiming, self.health)
        self.handout.release_all()
        self.writeback.close()
        # Every outcome written: for up to a lease while the store answers, not at all once it
        # has gone silent (a hang: those are left to lease recovery, as after a crash, so that
        # the process exits in bounded time).
        give_up_at = time.monotonic() + max(self.settings.lease_seconds, 5.0)
        if not await settled(self._writer, self.health, give_up_at):
            log.error(
                "could not write every result back before exit; those jobs run again"
                " when their leases expire",
                extra={"unwritten": len(self.writeback.pending)},
            )
        await self._stop_side_tasks()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        self.store.remove_listener(self._on_notification)
        self.notifier.close()
        log.info("jobd stopped", extra={"node": self.node})

    async def _stop_side_tasks(self) -> None:
        """Cancel the side tasks and wait SIDE_TASK_STOP_TIMEOUT at most for them: one that
        does not end (a cancel lost in a library's wait, a call that ignores it) is named in
        the log and left behind, so the node still exits."""
        if not self._side_tasks:
            return
        for task in self._side_tasks:
            task.cancel()
        _, pending = await asyncio.wait(self._side_tasks, timeout=SIDE_TASK_STOP_TIMEOUT)
        if pending:
            log.error(
                "side tasks did not stop when cancelled; leaving them behind",
                extra={"tasks": sorted(task.get_name() for task in pending)},
            )
        for task in self._side_tasks:
            if task.done() and not task.cancelled():
                task.exception()  # read, so that asyncio does not log it again at exit

    async def _kill_all_workers(self) -> None:
        self.draining = True
        deadline = self.pool.kill_all()
        while self.workers and time.monotonic() < deadline:
            await self._wait(0.05)

    # --- what the control server reads ------------------------------------------------------

    async def metrics_text(self) -> str:
        return await self.status.metrics_text()

    @property
    def counters(self) -> dict[str, int]:
        """Jobs this node has seen, by event, and its workers' crashes and restarts."""
        return {k: int(v) for k, v in self.metrics.totals().items()}

    def worker_views(self) -> list[dict[str, Any]]:
        return self.status.worker_views()

    def workers_short_for(self) -> float:
        """Seconds this node has had fewer ready workers than configured (0: it has them all)."""
        return self.status.workers_short_for()
