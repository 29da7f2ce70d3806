"""The supervisor: one process, one asyncio loop, no handler code.

It claims jobs when workers are free, hands each to a worker over that worker's own pipe,
collects the results and writes them back in batches, heartbeats its leases, recovers the
expired leases of any node, keeps the worker count, enforces timeouts and cancellations, and
drains on SIGTERM/SIGINT without losing a job.

The main loop (`run`) reads like gunicorn's arbiter: wait for something to happen or a tick,
then handle signals, enforce deadlines, keep the workers, hand out work.  Worker messages and
worker deaths arrive through callbacks on the loop (the pipe and the process sentinel are file
descriptors the loop watches); side tasks do the periodic store work.  Signal handlers only
record the signal and wake the loop.
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
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from setproctitle import setproctitle

from jobd.domain import (
    Backoff,
    ErrorInfo,
    Job,
    PermanentError,
    RetryLater,
    State,
    next_run_at,
)
from jobd.errors import JobdError, Unavailable
from jobd.handlers import Registry
from jobd.metrics import CountsCache, Metrics, Rates
from jobd.store import Notification, NotificationKind, Outcome, OutcomeKind, Store
from jobd.systemd import Notifier
from jobd.worker import BOOT_ERROR
from jobd.workers import (
    StopRequest,
    WorkerFactory,
    WorkerProcess,
    describe_exit,
    resident_memory_of,
)

log = logging.getLogger("jobd.supervisor")
#: One event per job transition (see logging.job_events): INFO when asked for, else DEBUG.
events = logging.getLogger("jobd.jobs")


@dataclass(frozen=True)
class SupervisorSettings:
    """The part of the configuration the supervisor reads (see jobd.config)."""

    workers: int = 2
    handler_modules: tuple[str, ...] = ()
    prefetch: int = 0
    max_jobs_per_worker: int = 0
    max_worker_memory: int = 0
    max_crashes: int = 3
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    poll_interval: float = 1.0
    default_timeout: float = 3600.0
    backoff: Backoff = field(default_factory=Backoff)
    queue_limits: dict[str, int] = field(default_factory=dict)
    retention: float = 7 * 86400.0
    drain_timeout: float = 30.0
    kill_grace: float = 5.0
    fail_unknown_types: bool = True
    boot_timeout: float = 30.0
    job_events: bool = False  # log each job transition at INFO (else DEBUG)


class BootError(RuntimeError):
    """The workers could not start; the daemon stops instead of respawning in a loop."""


def new_node_id() -> str:
    """One id per boot of a node: leases taken by an earlier boot are never mistaken for ours."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Bound on jobs claimed ahead of free worker slots, per worker (see Supervisor._claim_ahead).
CLAIM_AHEAD_PER_WORKER = 8
#: Bound on jobs queued in a worker beyond the one it runs, for short jobs (see _depth).
QUEUE_AHEAD_PER_WORKER = 8
MAINTENANCE_INTERVAL = 5.0  # seconds between the store's maintenance checks
PRUNE_INTERVAL = 60.0  # seconds between prunes of finished jobs past jobs.retention


def _ewma(average: float, sample: float, weight: float = 0.2) -> float:
    return sample if average == 0 else average + weight * (sample - average)


def job_fields(job: Job) -> dict[str, Any]:
    """The fields every log line about a job carries."""
    return {
        "job_id": job.id,
        "job_type": job.type,
        "attempt": job.attempts,
        "queue": job.queue,
        "correlation_id": job.correlation_id,
    }


#: The metric/event name of each written outcome, by (what the node reported, where it led).
_EVENTS: dict[tuple[OutcomeKind, State], str] = {
    (OutcomeKind.FAILED, State.PENDING): "retried",
    (OutcomeKind.RELEASED, State.PENDING): "released",
}


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
        self.factory = WorkerFactory(
            list(settings.handler_modules),
            max_jobs=settings.max_jobs_per_worker,
            max_memory=settings.max_worker_memory,
            setup_logging=setup_worker_logging,
        )
        self.workers: dict[int, WorkerProcess] = {}
        self.claimed: deque[Job] = deque()  # claimed, not yet handed to a worker
        self.outcomes: list[Outcome] = []  # waiting to be written back
        self.started_at = time.time()
        self.draining = False
        self.immediate = False
        self.drain_deadline = 0.0
        self.closing = False
        self.boot_error: str | None = None
        self.store_ok = True
        self.counts_cache = CountsCache()
        self.metrics = Metrics(counts=self.counts_cache.get)
        self.notifier = Notifier()
        self._event_level = logging.INFO if settings.job_events else logging.DEBUG
        # The job of each outcome not yet written, per job id in the order recorded: one job
        # can have two (a job released when its worker died, written, claimed again by this
        # node and finished while that write's answer was on its way).
        self._outcome_jobs: dict[int, deque[Job]] = {}
        self._workers_short_since: float | None = None
        self._backlog = False  # the last claim got all it asked for: more is waiting
        self._claim_time = 0.0  # claim round trip (moving average), seconds
        self._run_time = 0.0  # how long jobs run (moving average), seconds
        self.rates = Rates()
        self._signals: deque[int] = deque()
        self._wakeup = asyncio.Event()
        self._work_hint = asyncio.Event()  # new pending work may exist
        self._flush_needed = asyncio.Event()
        self._side_tasks: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_empty_claim = -float("inf")  # none yet (monotonic time may start near 0)
        self._claim_backoff_until = 0.0
        self._recover_after = 0.0  # no recovery of others' leases before (see _store_ok)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Hooks run when the supervisor has started (control server, HTTP shim, sd_notify).
        self.on_started: list[Callable[[], Awaitable[None]]] = []
        self.on_stopping: list[Callable[[], Awaitable[None]]] = []

    # --- the life of the process -------------------------------------------------------

    async def run(self) -> int:
        """Run until drained after a signal; return the process exit status."""
        self._loop = asyncio.get_running_loop()
        await self._start()
        try:
            while not self._finished():
                await self._wait(self._next_tick())
                self._handle_signals()
                self._enforce_deadlines()
                self._manage_workers()
                await self._dispatch()
                self._title()
        finally:
            await self._shutdown()
        return 1 if self.boot_error else 0

    async def _start(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._on_signal, signum)
        self.store.add_listener(self._on_notification)
        self._flusher = asyncio.create_task(self._guard("flusher", self._flush_loop))
        for index in range(1, self.settings.workers + 1):
            self._spawn(index)
        await self._wait_for_workers()
        self._side_tasks = [
            asyncio.create_task(self._guard(name, fn), name=f"jobd-{name}")
            for name, fn in (
                ("heartbeat", self._heartbeat_loop),
                ("recovery", self._recovery_loop),
                ("pruner", self._prune_loop),
            )
        ]
        for hook in self.on_started:
            await hook()
        self.notifier.ready(self._status())
        if self.notifier.enabled:
            self._side_tasks.append(asyncio.create_task(self._guard("systemd", self._systemd_loop)))
        log.info(
            "jobd started",
            extra={
                "node": self.node,
                "workers": self.settings.workers,
                "types": self.registry.types(),
                "store": self.store.kind,
            },
        )
        # Jobs submitted before this node started send no notification, and waiting for the
        # workers swallowed any wake-up (theirs and a submit's): without this the first turn
        # slept a whole poll interval before its first claim, idling a backlog on restart.
        self._work_hint.set()
        self.wake()

    def _finished(self) -> bool:
        if self.boot_error:
            return True
        return self.draining and not self.workers and not self.claimed

    def _next_tick(self) -> float:
        """Sleep until the poll interval, or the next timeout or kill step, whichever is first."""
        now = time.monotonic()
        wake_at = now + self.settings.poll_interval
        if self.draining:
            wake_at = min(wake_at, self.drain_deadline, now + 0.1)
        for w in self.workers.values():
            if w.stop is not None:
                steps = {"asked": 1, "sigterm": 2}.get(w.stop.stage)
                if steps:
                    wake_at = min(wake_at, w.stop.since + steps * self.settings.kill_grace)
            elif w.running is not None and w.running in w.assigned:
                wake_at = min(wake_at, w.started_at + self._timeout_of(w.assigned[w.running]))
        return max(wake_at - now, 0.001)

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    def wake(self) -> None:
        self._wakeup.set()

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
                self.immediate = True
                self.drain_deadline = time.monotonic()

    def begin_drain(self, why: str) -> None:
        """Stop claiming; let running jobs finish for drain_timeout; give back the rest."""
        log.info("draining", extra={"reason": why, "drain_timeout": self.settings.drain_timeout})
        self.draining = True
        self.drain_deadline = time.monotonic() + self.settings.drain_timeout
        self.notifier.stopping(f"draining ({why})")
        self._release_claimed()
        for w in self.workers.values():
            w.retiring = True
            w.send("stop")

    # --- workers -------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        w = self.factory.spawn(index)
        self.workers[index] = w
        self._loop.add_reader(w.conn.fileno(), self._on_worker_readable, w)
        self._loop.add_reader(w.process.sentinel, self._on_worker_exit, w)
        log.debug("worker started", extra={"worker": index, "pid": w.pid})

    async def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.settings.boot_timeout
        while not all(w.ready for w in self.workers.values()):
            if self.boot_error:
                raise BootError(self.boot_error)
            if time.monotonic() > deadline:
                raise BootError(f"workers did not start within {self.settings.boot_timeout}s")
            await self._wait(0.05)

    def _manage_workers(self) -> None:
        """Keep the number of workers; replace the ones that died or retired."""
        if self.draining or self.boot_error:
            return
        for index in range(1, self.settings.workers + 1):
            if index not in self.workers:
                self._spawn(index)
                self.metrics.worker_restarts.inc()

    def _on_worker_readable(self, w: WorkerProcess) -> None:
        try:
            while w.conn.poll():
                self._on_message(w, w.conn.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(w.conn.fileno())

    def _on_worker_exit(self, w: WorkerProcess) -> None:
        self._loop.remove_reader(w.process.sentinel)
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(w.conn.fileno())
        self._on_worker_readable(w)  # whatever it said before dying counts
        w.process.join(0)
        self.workers.pop(w.index, None)
        exitcode = w.process.exitcode
        how = describe_exit(exitcode, stopped_by_us=w.stop is not None)
        if not w.ready and not self.draining:
            cause = "a handler module does not import" if exitcode == BOOT_ERROR else how
            self.boot_error = f"worker {w.index} failed to boot: {cause} (see its error above)"
            log.error("worker failed to boot", extra={"worker": w.index, "exit": how})
        elif w.running is not None or not (w.retiring or self.draining):
            log.warning("worker died", extra={"worker": w.index, "pid": w.pid, "exit": how})
            self.metrics.worker_crashes.inc()
        if w.running is not None:
            self._end_running_job_of_dead_worker(w, how)
        for job in w.assigned.values():
            self._record(Outcome(job.id, job.attempts, OutcomeKind.RELEASED), job)
        w.assigned.clear()
        w.conn.close()
        w.process.close()
        self.wake()

    def _end_running_job_of_dead_worker(self, w: WorkerProcess, how: str) -> None:
        job = w.assigned.pop(w.running)
        if w.stop is not None:
            self._record(self._stopped_outcome(job, w.stop.reason), job)
            return
        crashes = job.crashes + 1
        error = ErrorInfo("WorkerCrashed", f"worker {w.index} {how} while running this job")
        retry_at = None
        if crashes >= self.settings.max_crashes:
            error = ErrorInfo(
                "PoisonJob",
                f"worker {w.index} {how}; the job has killed its worker {crashes} times"
                f" (workers.max_crashes = {self.settings.max_crashes})",
            )
        else:
            retry_at = self._retry_at(job, None)
        self._record(
            Outcome(
                job.id,
                job.attempts,
                OutcomeKind.FAILED,
                error=error,
                retry_at=retry_at,
                crashed=True,
            ),
            job,
        )

    # --- messages from workers -------------------------------------------------------------

    def _on_message(self, w: WorkerProcess, message: tuple) -> None:
        kind = message[0]
        if kind == "many":
            for part in message[1:]:
                self._on_message(w, part)
        elif kind == "start":
            self._job_started(w, message[1])
        elif kind == "done":
            job = self._job_ended(w, message[1])
            if job is not None:
                outcome = Outcome(job.id, job.attempts, OutcomeKind.COMPLETED, result=message[2])
                self._record(outcome, job)
        elif kind == "fail":
            stop = w.stop
            job = self._job_ended(w, message[1])
            if job is not None:
                self._record(self._failure_outcome(job, message[2:], stop, w.cancelled), job)
                w.cancelled.discard(job.id)
        elif kind == "released":
            job = w.assigned.pop(message[1], None)
            if job is not None:
                self._record(Outcome(job.id, job.attempts, OutcomeKind.RELEASED), job)
        elif kind == "ready":
            w.ready = True
        elif kind == "retiring":
            w.retiring = True
            log.info("worker retiring", extra={"worker": w.index, "reason": message[1]})
        elif kind == "progress":
            log.debug("progress", extra={"job_id": message[1], "progress": message[2]})
        if self.claimed and kind != "start":
            self._hand_out()  # a slot is free: the next claimed job goes now, not next turn
        self.wake()

    def job_event(self, event: str, job: Job, source: str | None) -> None:
        """A change the control server made (a job `submitted`, a pending one `canceled`, an
        operator's `requeued`): counted where a counter exists, and logged like the others."""
        self.job_events(event, [job], source)

    def job_events(self, event: str, jobs: list[Job], source: str | None) -> None:
        """job_event for many jobs at once (a submit_many's): the counter is moved once per
        type and queue rather than once per job, on the loop that runs the workers."""
        counter = self.metrics.jobs.get(event)
        if counter is not None:
            for (job_type, queue), n in Counter((job.type, job.queue) for job in jobs).items():
                counter.labels(job_type, queue).inc(n)
        if events.isEnabledFor(self._event_level):
            for job in jobs:
                extra = {**job_fields(job), "from": source, "to": job.state.value}
                events.log(self._event_level, f"job {event}", extra=extra)

    def _job_started(self, w: WorkerProcess, job_id: int) -> None:
        w.running = job_id
        w.started_at = time.monotonic()
        job = w.assigned.get(job_id)
        if job is None:
            return
        waited = max((utcnow() - job.run_at).total_seconds(), 0.0)
        self.metrics.job("started", job.type, job.queue)
        self.metrics.queue_wait.labels(job.type).observe(waited)
        if events.isEnabledFor(self._event_level):
            events.log(
                self._event_level,
                "job started",
                extra={
                    **job_fields(job),
                    "from": "pending",
                    "to": "running",
                    "worker": w.index,
                    "queue_wait": round(waited, 6),
                },
            )

    def _job_ended(self, w: WorkerProcess, job_id: int) -> Job | None:
        job = w.assigned.pop(job_id, None)
        if w.running == job_id:
            w.running = None
            w.stop = None
            if job is not None:
                ran = time.monotonic() - w.started_at
                self.metrics.run_duration.labels(job.type).observe(ran)
                self._run_time = _ewma(self._run_time, ran)
        w.jobs_done += 1
        return job

    def _failure_outcome(
        self, job: Job, failure: tuple, stop: StopRequest | None, cancelled: set[int]
    ) -> Outcome:
        kind, error_type, message, tb, delay = failure
        if stop is not None:
            return self._stopped_outcome(job, stop.reason)
        if kind == "cancelled" and job.id in cancelled:
            return self._stopped_outcome(job, "cancel")
        error = ErrorInfo(error_type, message, tb)
        if kind == "cancelled":  # the handler stopped by itself: treat as a plain error
            kind = "error"
        exc = (
            PermanentError()
            if kind == "permanent"
            else RetryLater(delay)
            if kind == "retry"
            else None
        )
        return Outcome(
            job.id, job.attempts, OutcomeKind.FAILED, error=error, retry_at=self._retry_at(job, exc)
        )

    def _stopped_outcome(self, job: Job, reason: str) -> Outcome:
        if reason == "cancel":
            return Outcome(
                job.id,
                job.attempts,
                OutcomeKind.CANCELED,
                error=ErrorInfo("Canceled", "canceled while running"),
            )
        if reason == "drain":
            return Outcome(job.id, job.attempts, OutcomeKind.RELEASED)
        timeout = self._timeout_of(job)
        self.metrics.job("timed_out", job.type, job.queue)
        return Outcome(
            job.id,
            job.attempts,
            OutcomeKind.FAILED,
            error=ErrorInfo("Timeout", f"timed out after {timeout:g}s"),
            retry_at=self._retry_at(job, None),
        )

    def _retry_at(self, job: Job, exc: BaseException | None) -> datetime | None:
        spec = self.registry.get(job.type)
        backoff = spec.backoff if spec and spec.backoff else self.settings.backoff
        return next_run_at(job, exc, backoff, utcnow())

    def _timeout_of(self, job: Job) -> float:
        if job.timeout is not None:
            return job.timeout
        spec = self.registry.get(job.type)
        if spec is not None and spec.timeout is not None:
            return spec.timeout
        return self.settings.default_timeout

    # --- deadlines: timeouts, cancellations, drain -------------------------------------------

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        draining_over = self.draining and now >= self.drain_deadline
        for w in list(self.workers.values()):
            if w.running is None:
                continue
            if w.stop is None:
                if draining_over:
                    self._stop_running(w, "drain")
                elif now - w.started_at > self._timeout_of(w.assigned[w.running]):
                    self._stop_running(w, "timeout")
            else:
                self._escalate(w, now)

    def _stop_running(self, w: WorkerProcess, reason: str) -> None:
        """Ask the worker's running job to stop; the kill follows if it does not."""
        log.info("stopping job", extra={"job_id": w.running, "worker": w.index, "reason": reason})
        now = time.monotonic()
        w.stop = StopRequest(reason, now)
        w.send("cancel", w.running)
        if self.immediate:  # a second signal: no time for the job to wind down by itself
            w.stop.since = now - self.settings.kill_grace
            self._escalate(w, now)

    def _escalate(self, w: WorkerProcess, now: float) -> None:
        grace = self.settings.kill_grace
        if w.stop.stage == "asked" and now - w.stop.since >= grace:
            w.stop.stage = "sigterm"
            w.signal_group(signal.SIGTERM)
        elif w.stop.stage == "sigterm" and now - w.stop.since >= 2 * grace:
            w.stop.stage = "sigkill"
            w.signal_group(signal.SIGKILL)

    def cancel_running(self, job_id: int) -> bool:
        """Stop job `job_id` if one of our workers holds it; True if it did."""
        for w in self.workers.values():
            if job_id not in w.assigned:
                continue
            if w.running == job_id:
                if w.stop is None:
                    self._stop_running(w, "cancel")
            else:  # handed over but not started: the worker skips it and reports it cancelled
                w.cancelled.add(job_id)
                w.send("cancel", job_id)
            return True
        for job in list(self.claimed):
            if job.id == job_id:
                self.claimed.remove(job)
                self._record(Outcome(job.id, job.attempts, OutcomeKind.CANCELED), job)
                return True
        return False

    # --- handing out work -------------------------------------------------------------------

    async def _dispatch(self) -> None:
        if self.draining or self.boot_error:
            return
        await self._claim_more()
        self._hand_out()

    def _capacity(self) -> int:
        """How many jobs to claim now: the free slots in the workers (each may hold _depth()
        jobs), plus what the workers will have started by the time the next claim comes back
        (see _claim_ahead), less what is already claimed and waiting."""
        depth = self._depth()
        free = sum(
            depth - len(w.assigned) for w in self.workers.values() if w.ready and not w.retiring
        )
        return max(free + self._claim_ahead() - len(self.claimed), 0)

    def _depth(self) -> int:
        """How many jobs a worker may hold: the one it runs plus `workers.prefetch`, and for
        short jobs with a backlog waiting, as many more as it finishes in two claim round
        trips (at most QUEUE_AHEAD_PER_WORKER).  A worker that holds its next jobs goes on
        without waiting for this loop to turn, and every turn spent on a claim, a write or a
        client is otherwise a wait for every worker (measured: no-op jobs ran 40% faster).
        Long jobs get only the prefetch: a job queued behind one would wait for it while
        another worker may be free."""
        depth = 1 + self.settings.prefetch
        if not self._backlog or self._run_time <= 0:
            return depth
        ahead = int(2 * self._claim_time / self._run_time)
        return max(depth, 1 + min(ahead, QUEUE_AHEAD_PER_WORKER))

    def _claim_ahead(self) -> int:
        """Jobs worth holding claimed beyond the free slots: as many as the workers finish in
        two claim round trips, when jobs are short and a backlog is waiting; none for long jobs
        (they would wait here while another node could run them) or without a backlog."""
        if not self._backlog or self._run_time <= 0:
            return 0
        busy = sum(1 for w in self.workers.values() if w.ready and not w.retiring)
        ahead = busy * 2 * self._claim_time / self._run_time
        return min(int(ahead), busy * CLAIM_AHEAD_PER_WORKER)

    async def _claim_more(self) -> None:
        wanted = self._capacity()
        now = time.monotonic()
        if wanted <= 0 or now < self._claim_backoff_until:
            return
        if (
            not self._work_hint.is_set()
            and now - self._last_empty_claim < self.settings.poll_interval
        ):
            return
        self._work_hint.clear()
        types = None if self.settings.fail_unknown_types else self.registry.types()
        try:
            jobs = await self._claim(wanted, types)
        except Unavailable as exc:
            self._store_trouble("claim", exc)
            return
        self._store_ok()
        self._claim_time = _ewma(self._claim_time, time.monotonic() - now)
        self.claimed.extend(jobs)
        self._hand_out()
        self._backlog = len(jobs) == wanted
        if self._backlog:
            self._work_hint.set()  # there may be more: claim again on the next turn
            self.wake()
        else:
            self._last_empty_claim = now

    async def _claim(self, wanted: int, types: list[str] | None) -> list[Job]:
        limits = self.settings.queue_limits
        lease = self.settings.lease_seconds
        if not limits:
            return await self.store.claim(self.node, wanted, lease=lease, types=types)
        jobs: list[Job] = []
        running = self._running_by_queue()
        for queue, limit in limits.items():
            room = min(limit - running.get(queue, 0), wanted - len(jobs))
            if room > 0:
                jobs += await self.store.claim(
                    self.node, room, lease=lease, queues=[queue], types=types
                )
        room = wanted - len(jobs)
        if room > 0:
            jobs += await self.store.claim(
                self.node, room, lease=lease, types=types, exclude_queues=list(limits)
            )
        return jobs

    def _running_by_queue(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._held_jobs():
            counts[job.queue] = counts.get(job.queue, 0) + 1
        return counts

    def _held_jobs(self) -> list[Job]:
        held = list(self.claimed)
        for w in self.workers.values():
            held.extend(w.assigned.values())
        return held

    def _hand_out(self) -> None:
        """Give claimed jobs to the workers with the fewest, up to _depth() each; the jobs a
        worker gets in one go travel in one message (one write, one wake-up)."""
        depth = self._depth()
        batches: dict[int, list[Job]] = {}
        while self.claimed:
            candidates = [
                w
                for w in self.workers.values()
                if w.ready and not w.retiring and len(w.assigned) < depth
            ]
            if not candidates:
                break
            w = min(candidates, key=lambda c: len(c.assigned))
            job = self.claimed.popleft()
            if job.type not in self.registry:
                self._record(self._unknown_type(job), job)
                continue
            w.assigned[job.id] = job
            batches.setdefault(w.index, []).append(job)
        for index, jobs in batches.items():
            self._send_jobs(self.workers[index], jobs)

    def _send_jobs(self, w: WorkerProcess, jobs: list[Job]) -> None:
        runs = [
            (
                job.id,
                job.attempts,
                job.max_attempts,
                job.type,
                job.queue,
                job.payload,
                job.correlation_id,
                self._timeout_of(job),
            )
            for job in jobs
        ]
        if not w.send("run", *runs):  # gone: its sentinel will say so; the jobs wait here
            for job in reversed(jobs):
                w.assigned.pop(job.id)
                self.claimed.appendleft(job)

    def _unknown_type(self, job: Job) -> Outcome:
        known = ", ".join(self.registry.types())
        error = ErrorInfo("UnknownType", f"unknown job type {job.type!r} (this node runs: {known})")
        return Outcome(job.id, job.attempts, OutcomeKind.FAILED, error=error)

    def _release_claimed(self) -> None:
        while self.claimed:
            job = self.claimed.popleft()
            self._record(Outcome(job.id, job.attempts, OutcomeKind.RELEASED), job)

    # --- writing results back ----------------------------------------------------------------

    def _record(self, outcome: Outcome, job: Job) -> None:
        self.outcomes.append(outcome)
        self._outcome_jobs.setdefault(outcome.job_id, deque()).append(job)
        self._flush_needed.set()

    async def _flush_loop(self) -> None:
        """Write outcomes back in batches: at once when idle, grouped when busy (whatever
        arrives while one write is in flight goes in the next).  Ends once closing and empty."""
        delay = 0.05
        while not (self.closing and not self.outcomes):
            await self._flush_needed.wait()
            self._flush_needed.clear()
            batch, self.outcomes = self.outcomes, []
            if not batch:
                continue
            try:
                applied = await self.store.finish(self.node, batch)
            except Unavailable as exc:
                self.outcomes[:0] = batch  # keep them: written once the store is back
                self._store_trouble("write results", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._flush_needed.set()
                continue
            except BaseException:
                self.outcomes[:0] = batch
                raise
            delay = 0.05
            self._store_ok()
            self._account(batch, applied)

    def _account(self, batch: list[Outcome], applied: dict[int, State]) -> None:
        """Count and log each written outcome, one transition event each."""
        for outcome in batch:
            job = self._outcome_job(outcome.job_id)
            fields = job_fields(job) if job else {"job_id": outcome.job_id}
            fields["attempt"] = outcome.attempt
            state = applied.get(outcome.job_id)
            if state is None:
                log.warning(
                    "result discarded: the job's lease was lost",
                    extra={**fields, "outcome": outcome.kind.value},
                )
                continue
            event = _EVENTS.get((outcome.kind, state), state.value)
            if job is not None:
                self.metrics.job(event, job.type, job.queue)
            self._log_transition(event, outcome, state, fields)

    def _outcome_job(self, job_id: int) -> Job | None:
        """The job of the oldest outcome of `job_id` (outcomes are written in the order
        recorded), forgotten as it is written."""
        jobs = self._outcome_jobs.get(job_id)
        if not jobs:
            return None
        job = jobs.popleft()
        if not jobs:
            del self._outcome_jobs[job_id]
        return job

    def _log_transition(
        self, event: str, outcome: Outcome, state: State, fields: dict[str, Any]
    ) -> None:
        level = {"failed": logging.WARNING, "retried": logging.INFO, "canceled": logging.INFO}
        level = level.get(event, self._event_level)
        if not events.isEnabledFor(level):
            return
        extra = {**fields, "from": "running", "to": state.value}
        if outcome.error is not None and outcome.kind is not OutcomeKind.RELEASED:
            extra["error_type"] = outcome.error.type
            extra["error"] = outcome.error.message
            if state is State.FAILED and outcome.error.traceback:
                extra["traceback"] = outcome.error.traceback
        if outcome.retry_at is not None and state is State.PENDING:
            extra["run_at"] = outcome.retry_at.isoformat()
        events.log(level, f"job {event}", extra=extra)

    # --- periodic store work -----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._renew_leases()
            except Unavailable as exc:
                self._store_trouble("heartbeat", exc)

    async def _renew_leases(self) -> None:
        """Extend the leases of the jobs this node holds (running, queued in a worker, claimed,
        or with a result waiting to be written).  Only those: one the database gave it whose
        claim answer never arrived must expire and be recovered, not be renewed for ever."""
        held = {job.id for job in self._held_jobs()} | set(self._outcome_jobs)
        to_cancel = await self.store.heartbeat(self.node, self.settings.lease_seconds, held)
        self._store_ok()
        for job_id in to_cancel:
            self.cancel_running(job_id)

    async def _recovery_loop(self) -> None:
        interval = max(min(self.settings.lease_seconds / 2, 10.0), 0.2)
        while True:
            try:
                # Our own leases first: after an outage longer than the lease they have run
                # out too, and this node must not take back -- and then discard the results
                # of -- the jobs it is running or holds results for.  (Other nodes' live jobs
                # are spared by the heartbeat grace in _store_ok.)
                await self._renew_leases()
                if time.monotonic() < self._recover_after:
                    await asyncio.sleep(interval)
                    continue
                for job in await self.store.recover_expired():
                    self.metrics.job("recovered", job.type, job.queue)
                    if job.state.terminal:  # no attempt left, or a cancel was waiting
                        self.metrics.job(job.state.value, job.type, job.queue)
                    log.warning(
                        "recovered a job whose lease expired",
                        extra={**job_fields(job), "from": "running", "to": job.state.value},
                    )
                    self._work_hint.set()
                    self.wake()
            except Unavailable as exc:
                self._store_trouble("recover leases", exc)
            await asyncio.sleep(interval)

    async def _prune_loop(self) -> None:
        """Housekeeping: the store's maintenance every few seconds (PostgreSQL vacuums the jobs
        table when dead rows pile up), pruning of old finished jobs every minute."""
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                if await self.store.maintain():
                    log.debug("store maintenance done")
                retention = self.settings.retention  # 0: finished jobs are kept forever
                if retention > 0 and time.monotonic() - last_prune >= PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    pruned = await self.store.prune(timedelta(seconds=retention))
                    if pruned:
                        log.info("pruned finished jobs", extra={"count": pruned})
            except Unavailable as exc:
                self._store_trouble("maintenance", exc)

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
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

    def _on_notification(self, n: Notification) -> None:
        if n.kind is NotificationKind.SUBMITTED:
            self._work_hint.set()
            self.wake()
        elif n.kind is NotificationKind.CANCEL and n.job_id is not None:
            self.cancel_running(n.job_id)
            self.wake()

    def _store_trouble(self, what: str, exc: JobdError) -> None:
        if self.store_ok:
            log.error("store unavailable", extra={"operation": what, "error": str(exc)})
        self.store_ok = False
        self._claim_backoff_until = time.monotonic() + 1.0

    def _store_ok(self) -> None:
        if not self.store_ok:
            log.info("store available again")
            # Every node lost the database too, perhaps, and their leases ran out meanwhile:
            # give them a heartbeat or two to renew before taking their jobs as dead ones.
            self._recover_after = time.monotonic() + 2 * self.settings.heartbeat_seconds
        self.store_ok = True

    # --- the end ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for hook in self.on_stopping:
            with contextlib.suppress(Exception):
                await hook()
        if self.workers:  # boot error or an exception: do not leave workers behind
            await self._kill_all_workers()
        self._release_claimed()
        self.closing = True
        self._flush_needed.set()
        try:
            if self._flusher is not None:
                await asyncio.wait_for(self._flusher, max(self.settings.lease_seconds, 5.0))
        except (TimeoutError, asyncio.CancelledError):
            log.error(
                "could not write every result back before exit; those jobs run again"
                " when their leases expire",
                extra={"unwritten": len(self.outcomes)},
            )
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.remove_signal_handler(signum)
        self.store.remove_listener(self._on_notification)
        self.notifier.close()
        log.info("jobd stopped", extra={"node": self.node})

    async def _kill_all_workers(self) -> None:
        self.draining = True
        for w in self.workers.values():
            if w.running is not None and w.stop is None:
                w.stop = StopRequest("drain", time.monotonic(), "sigkill")
            w.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.workers and time.monotonic() < deadline:
            await self._wait(0.05)

    def _title(self) -> None:
        busy = sum(1 for w in self.workers.values() if w.running is not None)
        self.metrics.set_workers(busy, len(self.workers) - busy)
        self._track_worker_count()
        if self.rates.due():
            self.rates.sample(self.metrics.totals())
        state = "draining" if self.draining else "running"
        setproctitle(f"jobd: supervisor {state} {busy}/{len(self.workers)} busy node={self.node}")

    def _track_worker_count(self) -> None:
        ready = sum(1 for w in self.workers.values() if w.ready)
        if ready >= self.settings.workers:
            self._workers_short_since = None
        elif self._workers_short_since is None:
            self._workers_short_since = time.monotonic()

    def workers_short_for(self) -> float:
        """Seconds this node has had fewer ready workers than configured (0: it has them all).
        A worker being replaced is short for milliseconds; health only minds a long gap."""
        if self._workers_short_since is None:
            return 0.0
        return time.monotonic() - self._workers_short_since

    def _status(self) -> str:
        busy = sum(1 for w in self.workers.values() if w.running is not None)
        totals = self.metrics.totals()
        state = "draining" if self.draining else "running"
        return (
            f"{state}: {busy}/{len(self.workers)} workers busy, {totals['completed']:.0f}"
            f" completed, {totals['failed']:.0f} failed"
            + ("" if self.store_ok else "; store unavailable")
        )

    async def _systemd_loop(self) -> None:
        """Watchdog pings from the loop itself (a stuck loop stops them), a STATUS line every
        few seconds, and more stop time asked for while a drain waits for long jobs."""
        interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
        while True:
            self.notifier.watchdog()
            self.notifier.status(self._status())
            if self.draining:
                left = max(self.drain_deadline - time.monotonic(), 0.0)
                self.notifier.extend_timeout(left + 2 * self.settings.kill_grace + 10.0)
            await asyncio.sleep(interval)

    # --- metrics ----------------------------------------------------------------------------

    async def metrics_text(self) -> str:
        """Every metric in the Prometheus text format; the job counts by state and queue are
        read from the store when the cached ones are older than a few seconds."""
        if self.counts_cache.stale():
            try:
                self.counts_cache.put(await self.store.counts())
            except Unavailable as exc:
                self._store_trouble("count jobs", exc)
        return self.metrics.exposition()

    @property
    def counters(self) -> dict[str, int]:
        """Jobs this node has seen, by event, and its workers' crashes and restarts."""
        return {k: int(v) for k, v in self.metrics.totals().items()}

    # --- views for the control server -------------------------------------------------------

    def worker_views(self) -> list[dict[str, Any]]:
        return [
            {
                "index": w.index,
                "pid": w.pid,
                "state": w.state(),
                "job_id": w.running,
                "jobs_done": w.jobs_done,
                "rss": resident_memory_of(w.pid),
            }
            for w in sorted(self.workers.values(), key=lambda w: w.index)
        ]
