"""The three systems the peers scenario (bench/peers.py) compares, behind one interface: jobd,
pgqueuer and procrastinate, each on a PostgreSQL schema of its own in the run's database.

Each does the same two things:

- burn-down: N no-op jobs enqueued in bulk before any worker runs (as the burn-down scenario
  does for jobd), then 2 worker processes started; the rate is first claim → last completion
  from the system's own records (jobd: started_at/finished_at; pgqueuer: pgqueuer_log's
  'picked' and 'successful' rows; procrastinate: procrastinate_events' 'started' and
  'succeeded'), once the queue is empty.
- latency: jobs enqueued one at a time to idle, running workers, each awaited with the
  system's own way of hearing of a completion before the next: submit call → completion seen,
  client clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from harness import (
    ROOT,
    SUBMIT_CHUNK,
    BenchStore,
    Span,
    cpu_seconds,
    expect_completed,
    fill,
    machine_busy_seconds,
    running,
)
from peer_processes import NOOP, search_path_options
from scenarios import Run, drain_metered, drain_timeout

WORKERS = 2  # processes per system, as jobd's burn-down
POLL = 1.0  # seconds between polls without a notification: jobd's default poll interval
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Drained:
    span: Span
    elsewhere: float  # CPUs the machine gave other work meanwhile (not this system, not us)


class System(Protocol):
    name: str

    def settings(self, run: Run) -> str: ...

    async def burn_down(self, run: Run, store: BenchStore) -> Drained: ...

    async def latency(self, run: Run, store: BenchStore) -> list[float]: ...


# --- jobd --------------------------------------------------------------------------------------


class Jobd:
    name = "jobd"

    def settings(self, run: Run) -> str:
        return f"`jobd run` with its defaults and {WORKERS} workers (prefetch 1, poll 1 s)"

    async def burn_down(self, run: Run, store: BenchStore) -> Drained:
        await fill(store, run.sizes.peer_jobs)
        store.checkpoint()
        found, use, _ = drain_metered(run, store, run.sizes.peer_jobs, "peers-jobd")
        return Drained(found, use.elsewhere / found.seconds)

    async def latency(self, run: Run, store: BenchStore) -> list[float]:
        with running(store, WORKERS, run.env) as daemon, daemon.client() as client:

            def one() -> None:
                job = client.submit(NOOP).job
                if client.wait(job.id, timeout=60).timed_out:
                    raise RuntimeError(f"jobd: job {job.id} did not complete")

            return _timed_series(one, run.sizes.latency_warmup, run.sizes.peer_latency_jobs)


# --- the peers ---------------------------------------------------------------------------------


def _span_sql(log: str, kind: str, at: str, claimed: str, completed: str) -> str:
    """A peer's Span (jobs, first claim, last completion, completion statements) from its log
    of job events: one row per event, its `kind` and its time `at`."""
    return f"""
        SELECT count(*) FILTER (WHERE {kind} = '{completed}'),
               extract(epoch FROM min({at}) FILTER (WHERE {kind} = '{claimed}'))::float8,
               extract(epoch FROM max({at}) FILTER (WHERE {kind} = '{completed}'))::float8,
               count(DISTINCT {at}) FILTER (WHERE {kind} = '{completed}')
          FROM {log}"""


class Peer:
    """What pgqueuer and procrastinate share: worker processes of bench/peer_processes.py,
    and SQL over their own tables for the span and for "the queue is empty"."""

    name: str
    first_claim_sql: str  # true once some job has been claimed
    busy_sql: str  # true while some job is queued or running
    span_sql: str  # jobs, first claim, last completion, completion statements

    def worker_options(self, run: Run) -> list[str]:
        raise NotImplementedError

    async def burn_down(self, run: Run, store: BenchStore) -> Drained:
        jobs = run.sizes.peer_jobs
        await self.install(store)
        await self.enqueue(store, jobs)
        store.checkpoint()
        with self.workers(run, store) as alive:
            _wait(store, self.first_claim_sql, True, 120.0, alive, poll=0.005)
            meter = ElsewhereMeter(store, self._pids)
            _wait(store, self.busy_sql, False, drain_timeout(jobs), alive, poll=0.2)
            elsewhere = meter.stop()
        row = store.query(self.span_sql)[0]
        found = Span(*row)
        expect_completed(found, jobs, f"{self.name} burn-down")
        return Drained(found, elsewhere)

    async def latency(self, run: Run, store: BenchStore) -> list[float]:
        await self.install(store)
        with self.workers(run, store):
            return await self.timed_latency(run, store)

    @contextmanager
    def workers(self, run: Run, store: BenchStore) -> Iterator[Callable[[], None]]:
        """WORKERS worker processes, each in a session of its own; SIGTERM afterwards (and
        SIGKILL to the session if one does not stop).  Yields a check that raises if one died."""
        command = [sys.executable, "-m", "bench.peer_processes", self.name, store.url]
        command += [store.schema or "", *self.worker_options(run)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._processes = [
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            for _ in range(WORKERS)
        ]
        try:
            yield self._check_alive
        finally:
            _stop(self._processes)

    def _pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def _check_alive(self) -> None:
        for p in self._processes:
            if p.poll() is not None:
                error = p.stderr.read().decode(errors="replace")[-3000:] if p.stderr else ""
                raise RuntimeError(f"a {self.name} worker exited {p.returncode}:\n{error}")

    async def install(self, store: BenchStore) -> None:
        raise NotImplementedError

    async def enqueue(self, store: BenchStore, jobs: int) -> None:
        raise NotImplementedError

    async def timed_latency(self, run: Run, store: BenchStore) -> list[float]:
        raise NotImplementedError


class Pgqueuer(Peer):
    name = "pgqueuer"
    first_claim_sql = "SELECT EXISTS (SELECT 1 FROM pgqueuer_log WHERE status = 'picked')"
    busy_sql = "SELECT EXISTS (SELECT 1 FROM pgqueuer)"  # a completed job's row is deleted
    span_sql = _span_sql("pgqueuer_log", "status", "created", "picked", "successful")

    def settings(self, run: Run) -> str:
        return (
            f"pgqueuer {_version('pgqueuer')}, asyncpg {_version('asyncpg')}: {WORKERS}"
            f" processes, each one QueueManager on a direct asyncpg connection,"
            f" batch_size={run.sizes.pgqueuer_batch}, dequeue_timeout={POLL:g} s (LISTEN/NOTIFY"
            " wakes it before that), max_concurrent_tasks unset, durability durable (default)"
        )

    def worker_options(self, run: Run) -> list[str]:
        return ["--batch-size", str(run.sizes.pgqueuer_batch), "--poll", str(POLL)]

    async def install(self, store: BenchStore) -> None:
        store.query(f'CREATE SCHEMA IF NOT EXISTS "{store.schema}"')
        async with _pgqueuer_queries(store) as queries:
            await queries.install()

    async def enqueue(self, store: BenchStore, jobs: int) -> None:
        async with _pgqueuer_queries(store) as queries:
            for start in range(0, jobs, SUBMIT_CHUNK):
                count = min(SUBMIT_CHUNK, jobs - start)
                await queries.enqueue([NOOP] * count, [None] * count, [0] * count)

    async def timed_latency(self, run: Run, store: BenchStore) -> list[float]:
        from pgqueuer.core.completion import CompletionWatcher

        async with _pgqueuer_queries(store) as queries, _pgqueuer_queries(store) as listening:
            # Its documented way to await a job; no debounce, so a NOTIFY is acted on at once.
            watcher = CompletionWatcher(listening.driver, queries=listening, debounce=timedelta(0))
            async with watcher:

                async def one() -> None:
                    (job_id,) = await queries.enqueue(NOOP, None)
                    status = await _within(watcher.wait_for(job_id), 60.0)
                    if status != "successful":
                        raise RuntimeError(f"pgqueuer: job {job_id} ended {status}")

                times = await _timed_series_async(
                    one, run.sizes.latency_warmup, run.sizes.peer_latency_jobs
                )
        return times  # CompletionWatcher's exit may swallow exceptions: mypy's view


class Procrastinate(Peer):
    name = "procrastinate"
    first_claim_sql = "SELECT EXISTS (SELECT 1 FROM procrastinate_events WHERE type = 'started')"
    busy_sql = "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    span_sql = _span_sql("procrastinate_events", "type", "at", "started", "succeeded")

    def settings(self, run: Run) -> str:
        return (
            f"procrastinate {_version('procrastinate')} (psycopg connector): {WORKERS} worker"
            f" processes, concurrency={run.sizes.procrastinate_concurrency},"
            f" listen_notify=True, fetch_job_polling_interval={POLL:g} s,"
            " delete_jobs=never (default)"
        )

    def worker_options(self, run: Run) -> list[str]:
        return ["--concurrency", str(run.sizes.procrastinate_concurrency), "--poll", str(POLL)]

    async def install(self, store: BenchStore) -> None:
        store.query(f'CREATE SCHEMA IF NOT EXISTS "{store.schema}"')
        async with _procrastinate_app(store) as (app, _):
            await app.schema_manager.apply_schema_async()

    async def enqueue(self, store: BenchStore, jobs: int) -> None:
        async with _procrastinate_app(store) as (_, noop):
            for start in range(0, jobs, SUBMIT_CHUNK):
                await noop.batch_defer_async(*[{}] * min(SUBMIT_CHUNK, jobs - start))

    async def timed_latency(self, run: Run, store: BenchStore) -> list[float]:
        import psycopg

        async with (
            _procrastinate_app(store) as (_, noop),
            await psycopg.AsyncConnection.connect(
                store.url, autocommit=True, options=search_path_options(store.schema or "")
            ) as conn,
        ):

            async def one() -> None:
                job_id = await noop.defer_async()
                # procrastinate tells no client of a completion: poll the job's row.
                deadline = time.monotonic() + 60.0
                while True:
                    cur = await conn.execute(
                        "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
                    )
                    row = await cur.fetchone()
                    if row and row[0] == "succeeded":
                        return
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"procrastinate: job {job_id} is {row}")
                    await asyncio.sleep(LATENCY_POLL)

            return await _timed_series_async(
                one, run.sizes.latency_warmup, run.sizes.peer_latency_jobs
            )


LATENCY_POLL = 0.0005  # seconds between the status reads of a procrastinate job awaited


SYSTEMS: tuple[System, ...] = (Jobd(), Pgqueuer(), Procrastinate())


# --- helpers -----------------------------------------------------------------------------------


@asynccontextmanager
async def _pgqueuer_queries(store: BenchStore) -> AsyncIterator[Any]:
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(store.url, server_settings={"search_path": store.schema or ""})
    try:
        yield Queries(AsyncpgDriver(conn))
    finally:
        await conn.close()


@asynccontextmanager
async def _procrastinate_app(store: BenchStore) -> AsyncIterator[tuple[Any, Any]]:
    from procrastinate import App, PsycopgConnector

    options = search_path_options(store.schema or "")
    app = App(connector=PsycopgConnector(conninfo=store.url, kwargs={"options": options}))

    @app.task(name=NOOP)
    async def noop() -> None:
        return None

    async with app.open_async():
        yield app, noop


async def _within(future: Awaitable[Any], seconds: float) -> Any:
    return await asyncio.wait_for(future, seconds)


def _timed_series(one: Callable[[], None], warmup: int, count: int) -> list[float]:
    """Milliseconds per call of `one`, after `warmup` unmeasured calls."""
    for _ in range(warmup):
        one()
    times = []
    for _ in range(count):
        began = time.perf_counter()
        one()
        times.append(1000 * (time.perf_counter() - began))
    return times


async def _timed_series_async(
    one: Callable[[], Awaitable[None]], warmup: int, count: int
) -> list[float]:
    for _ in range(warmup):  # also: until the workers are up and listening
        await one()
    times = []
    for _ in range(count):
        began = time.perf_counter()
        await one()
        times.append(1000 * (time.perf_counter() - began))
    return times


def _wait(
    store: BenchStore,
    sql: str,
    until: bool,
    timeout: float,
    alive: Callable[[], None],
    poll: float,
) -> None:
    deadline = time.monotonic() + timeout
    while bool(store.scalar(sql)) != until:
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {until} after {timeout:.0f} s: {sql}")
        time.sleep(poll)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class ElsewhereMeter:
    """CPUs the machine kept busy with anything but the system's worker processes, the
    database's backends and this process, from now until stop()."""

    def __init__(self, store: BenchStore, pids: Callable[[], list[int]]):
        self._store = store
        self._pids = pids
        self._began = time.monotonic()
        self._busy = machine_busy_seconds()
        self._before = self._ours()

    def _ours(self) -> dict[int, float]:
        rows = self._store.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        found = {}
        for pid in [*self._pids(), *(row[0] for row in rows), os.getpid()]:
            try:
                found[pid] = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # gone meanwhile: its time is lost, a small error
        return found

    def stop(self) -> float:
        busy = machine_busy_seconds() - self._busy
        after = self._ours()
        ours = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        return max(busy - ours, 0.0) / (time.monotonic() - self._began)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"
