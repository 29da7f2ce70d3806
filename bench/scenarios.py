"""The scenarios of bench/run.py.  Each gets the run's settings and a maker of fresh stores of
one kind, starts `jobd run` as it needs, and returns Figures for the table (and may add detail
tables to `run.details`).  Targets are issue 9's."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from harness import (
    MB,
    SCHEDULE_EVERY,
    SUBMIT_CHUNK,
    BenchStore,
    CpuMeter,
    CpuUse,
    Daemon,
    Profiler,
    Span,
    TableSize,
    cpu_seconds,
    expect_completed,
    fill,
    machine_busy_seconds,
    max_id,
    migrate,
    percentiles,
    profile_summary,
    progress,
    rss_bytes,
    running,
    scheduled,
    span,
    table_size,
    wait_drained,
    wait_first_claim,
)

from jobd.domain import NewJob
from jobd.store import Outcome, OutcomeKind
from jobd.store.postgres import QUERIES
from jobd.store.postgres.rows import submit_params

NOOP = "bench_noop"
RAW_NODE = "bench-raw"
RAW_CHANNEL = "bench_raw_submit"  # nobody listens: the raw loop claims without being told
LEASE = 30.0  # jobd's default jobs.lease_seconds
CEILING_BATCH = 100  # the pgbench reference: 100 jobs a statement


# --- figures and targets -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    value: float

    def met(self, value: float) -> bool:
        return value >= self.value if self.op == ">=" else value <= self.value

    def text(self, unit: str) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {fmt(self.value, unit)}"


@dataclass(frozen=True)
class Figure:
    scenario: str
    store: str
    name: str
    value: float | None
    unit: str  # jobs/s, ms, MB, x, ratio, n, bytes
    target: Target | None = None
    text: str | None = None  # shown instead of the value (batch sizes, errors)

    def shown(self) -> str:
        if self.text is not None:
            return self.text
        if self.value is None or self.value != self.value:  # None or NaN
            return "—"
        return fmt(self.value, self.unit)

    def verdict(self) -> str:
        if self.target is None or self.value is None or self.value != self.value:
            return ""
        return "met" if self.target.met(self.value) else "NOT MET"


def fmt(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value:,.0f} jobs/s"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "bytes":
        return f"{value / MB:,.1f} MB"
    if unit == "CPUs":
        return f"{value:.2f} CPUs"
    return f"{value:,.0f}"


# --- the run's settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    workers: int = 2
    burn_down: int = 50_000
    limit_jobs: int = 50_000
    limit_batches: tuple[int, int] | None = None  # (claim, finish); None: as jobd used them
    backlog_finished: int = 1_000_000
    backlog_pending: int = 100_000
    latency_jobs: int = 1_000
    latency_warmup: int = 10
    cpu_jobs: int = 200
    cpu_ms: float = 50.0
    memory_marks: tuple[int, ...] = (10_000, 50_000)
    respawns: int = 5
    settle: float = 1.0  # seconds an idle daemon is left alone before its RSS is read
    steady_seconds: float = 300.0
    steady_window: float = 30.0
    steady_cap: int = 0  # the producer keeps at most this many jobs pending (0: no limit)
    peer_jobs: int = 10_000  # the peers scenario's burn-down, per system and round
    peer_rounds: int = 3  # the systems take turns, each round in a new order
    peer_latency_jobs: int = 300  # one at a time, per system and round
    pgqueuer_batch: int = 25  # its performance-tuning guide's example for short jobs
    procrastinate_concurrency: int = 10  # async no-op tasks: its docs allow concurrency
    schedules: int = 0  # the burn-down's daemon runs this many schedules beside the drain
    paused_queue: str | None = None  # the burn-down: this queue paused fleet-wide beforehand
    limited_queue: str | None = None  # the burn-down: NAME:global=N,rate=R in the daemon's file
    workflow_jobs: int = 10_000  # the workflow scenario's fan-out/fan-in (bench/workflow.py)
    bulk_jobs: int = 50_000  # the bulk-retry scenario's burn-down (bench/bulk_retry.py)
    bulk_failed: int = 100_000  # the failed jobs it retries meanwhile
    bulk_rounds: int = 3  # alone and with the retry, alternating which goes first


QUICK = Sizes(
    burn_down=500,
    limit_jobs=500,
    backlog_finished=5_000,
    backlog_pending=500,
    latency_jobs=30,
    latency_warmup=3,
    cpu_jobs=6,
    cpu_ms=20.0,
    memory_marks=(200, 500),
    respawns=1,
    settle=0.1,
    steady_seconds=2.0,
    steady_window=1.0,
    peer_jobs=200,
    peer_rounds=1,
    peer_latency_jobs=10,
    workflow_jobs=300,
    bulk_jobs=500,
    bulk_failed=2_500,
    bulk_rounds=1,
)


MakeStore = Callable[[str], AbstractContextManager[BenchStore]]


@dataclass
class Run:
    sizes: Sizes
    env: dict[str, str]  # --daemon-env: extra JOBD_* settings for every daemon
    profile: Path | None = None  # --profile: py-spy the supervisor during drains, files here
    burn_down: dict[str, Span] = field(default_factory=dict)  # store kind -> its burn-down
    details: list[str] = field(default_factory=list)  # Markdown sections shown before the table


Scenario = Callable[[Run, str, MakeStore], Awaitable[list[Figure]]]


def drain_timeout(jobs: int) -> float:
    return 120.0 + jobs / 100.0  # far beyond any plausible rate: a hang, not a slow run


# --- burn-down ---------------------------------------------------------------------------------


async def burn_down(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """N no-op jobs submitted before the daemon starts, drained by its workers (with
    --schedules, while the daemon runs that many schedules of a type the drain does not
    submit: what the schedules cost the hot path)."""
    jobs, workers, schedules = run.sizes.burn_down, run.sizes.workers, run.sizes.schedules
    queues = queue_limits_config(run.sizes.limited_queue)
    with make("burn_down") as store:
        await fill(store, jobs)
        if run.sizes.paused_queue:
            pause_queue(store, run.sizes.paused_queue)
        store.checkpoint()
        found, use, size = drain_metered(
            run, store, jobs, f"burn-down-{kind}", 0, schedules, queues
        )
        ticked = scheduled(store)
    expect_completed(found, jobs, "burn-down")
    progress(f"burn-down: {found.rate:,.0f} jobs/s over {found.seconds:.1f} s")
    run.details.append(_cpu_table(f"burn-down, {kind}", found, use, size))
    run.burn_down[kind] = found
    target = Target(">=", 6000 if kind == "postgres" else 4000)
    beside = f", {schedules} schedules" if schedules else ""
    if run.sizes.paused_queue:
        beside += f", queue {run.sizes.paused_queue} paused"
    if run.sizes.limited_queue:
        beside += f", limits {run.sizes.limited_queue}"
    figures = [
        Figure(
            "burn-down",
            kind,
            f"{jobs:,} no-op jobs, {workers} workers{beside}: first claim → last completion",
            found.rate,
            "jobs/s",
            target,
        ),
        Figure(
            "burn-down",
            kind,
            "jobs per finish statement (from distinct finish times)",
            None,
            "",
            text=f"{found.finish_batch:.1f}",
        ),
        _elsewhere("burn-down", kind, found, use),
    ]
    if schedules:
        name = f"jobs the {schedules} schedules (every {SCHEDULE_EVERY}) made while the daemon ran"
        figures.append(Figure("burn-down", kind, name, ticked, "jobs"))
    return figures


def queue_limits_config(text: str | None) -> dict[str, dict[str, object]] | None:
    """--limited-queue NAME:global=N,rate=R as the file's `queues` entry (either may go)."""
    if not text:
        return None
    name, _, spec = text.partition(":")
    keys = {"global": "global_concurrency", "rate": "rate"}
    entry: dict[str, object] = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key not in keys or not value:
            raise ValueError(f"--limited-queue: {part!r} is not global=N or rate=N/s")
        entry[keys[key]] = int(value) if key == "global" else value
    if not name or not entry:
        raise ValueError("--limited-queue: expected NAME:global=N,rate=R")
    return {name: entry}


def pause_queue(store: BenchStore, name: str) -> None:
    """Pause `name` for the fleet as `jobctl queues pause` would (the row the nodes read)."""
    store.query(
        "INSERT INTO queues (name, paused, reason, changed_by, changed_at)"
        " VALUES (%s, %s, 'bench', 'bench', %s)",
        (name, True if store.kind == "postgres" else 1, _now(store)),
    )


def _now(store: BenchStore) -> object:
    return datetime.now(UTC) if store.kind == "postgres" else time.time()


def _elsewhere(scenario: str, kind: str, found: Span, use: CpuUse) -> Figure:
    """How busy the shared machine was with other work: the context of every rate."""
    name = "meanwhile the machine's other work (not jobd's, not ours)"
    return Figure(scenario, kind, name, use.elsewhere / found.seconds, "CPUs")


def drain_metered(
    run: Run,
    store: BenchStore,
    jobs: int,
    name: str,
    after_id: int = 0,
    schedules: int = 0,
    queues: dict[str, dict[str, object]] | None = None,
) -> tuple[Span, CpuUse, TableSize]:
    """Start jobd (running `schedules` schedules, with `queues` in its file) on a store full
    of pending jobs and let it drain them; the CPU it used is read from its first claim to
    the end, the table's statistics after it."""
    daemon_running = running(
        store, run.sizes.workers, run.env, ready=False, schedules=schedules, queues=queues
    )
    with daemon_running as daemon:
        wait_first_claim(store, 120.0, daemon.check_alive)
        meter = CpuMeter(daemon, store)
        meter.start()
        with profiled(run, daemon, name):
            wait_drained(store, drain_timeout(jobs), daemon.check_alive)
        use = meter.stop()
    return span(store, after_id), use, table_size(store)


def profiled(run: Run, daemon: Daemon, name: str) -> AbstractContextManager[object]:
    """py-spy on the supervisor when --profile is given; its summary goes to the details."""
    if run.profile is None:
        return nullcontext()
    path = run.profile / f"{name}.txt"

    @contextmanager
    def profiled() -> Iterator[None]:
        with Profiler(daemon.pid, path):
            yield
        summary = "\n".join(profile_summary(path))
        run.details.append(f"#### Supervisor profile, {name} (py-spy, {path})\n\n{summary}")

    return profiled()


def _cpu_table(what: str, found: Span, use: CpuUse, size: TableSize) -> str:
    """Where the CPU went: per 1,000 jobs, and as CPUs kept busy over the drain."""
    per_k = 1000 / found.jobs
    rows = [
        ("jobd supervisor", use.supervisor),
        ("jobd workers (all)", use.workers),
        ("PostgreSQL backends of jobd", use.database),
        ("this benchmark (polling the store)", use.benchmark),
        ("the whole machine, busy", use.machine),
    ]
    lines = [
        f"#### Where the CPU went: {what}, {found.jobs:,} jobs in {found.seconds:.1f} s",
        "",
        "| who | CPU seconds | CPU ms per 1,000 jobs | CPUs busy |",
        "|---|---:|---:|---:|",
    ]
    for who, seconds in rows:
        if seconds is not None:
            lines.append(
                f"| {who} | {seconds:.2f} | {seconds * per_k * 1000:,.0f}"
                f" | {seconds / found.seconds:.2f} |"
            )
    known = use.supervisor + use.workers + (use.database or 0) + use.benchmark
    listed = sorted(use.others.items(), key=lambda kv: -kv[1])[:4]
    lines += [
        "",
        "Meanwhile the rest of the machine: "
        + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in listed if seconds >= 0.01)
        + f"; not attributed (processes that came and went): "
        f"{max(use.machine - known - sum(use.others.values()), 0.0):.2f} s.",
    ]
    if size.dead_tuples is not None:
        lines += [
            "",
            f"Afterwards: {size.dead_tuples:,} dead tuples in jobs, {fmt(size.jobs_bytes, 'bytes')}"
            f" with its indexes; VACUUMs of jobs so far: {size.vacuums}.",
        ]
    return "\n".join(lines)


# --- the limit: jobd's own SQL without jobd ----------------------------------------------------


def limit_batches(run: Run, kind: str) -> tuple[int, int]:
    """The finish batch size jobd used in this run's burn-down, for both the claim and the
    finish (claims leave no mark to count them by; jobd's two sizes are close, as the adaptive
    claim sizes itself by the jobs finishing), else its nominal claim size (workers * (1 +
    prefetch 1)) for both."""
    if run.sizes.limit_batches:
        return run.sizes.limit_batches
    found = run.burn_down.get(kind) or run.burn_down.get("postgres")
    if found is None:
        nominal = run.sizes.workers * 2
        return nominal, nominal
    batch = max(1, round(found.finish_batch))
    return batch, batch


async def limit(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    jobs = run.sizes.limit_jobs
    claim_batch, finish_batch = limit_batches(run, kind)
    loop = raw_sql_loop if kind == "postgres" else store_api_loop
    what = "raw psycopg loop, jobd's SQL" if kind == "postgres" else "store API loop, 1 connection"
    with make("limit") as store:
        at_jobd = await loop(store, jobs, claim_batch, finish_batch)
    progress(f"limit at {claim_batch}/{finish_batch}: {at_jobd.rate:,.0f} jobs/s")
    with make("limit_100") as store:
        ceiling = await loop(store, jobs, CEILING_BATCH, CEILING_BATCH)
    progress(f"limit at {CEILING_BATCH}: {ceiling.rate:,.0f} jobs/s")
    figures = [
        Figure(
            "limit",
            kind,
            f"{what}: claim {claim_batch} / finish {finish_batch} a statement",
            at_jobd.rate,
            "jobs/s",
        ),
        Figure(
            "limit",
            kind,
            f"{what}: {CEILING_BATCH} a statement (for reference)",
            ceiling.rate,
            "jobs/s",
        ),
    ]
    mine = run.burn_down.get(kind)
    figures.append(
        Figure(
            "limit",
            kind,
            "jobd burn-down ÷ limit at jobd's batch sizes",
            mine.rate / at_jobd.rate if mine else None,
            "ratio",
            Target(">=", 0.3) if kind == "postgres" else None,
            text=None if mine else "— (run burn-down too)",
        )
    )
    return figures


def _raw_submit_params(count: int) -> dict[str, str]:
    """jobd's submit query's parameters for `count` no-op jobs with every default."""
    return submit_params([NewJob(NOOP)] * count, RAW_CHANNEL)


def _raw_finish_params(held: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Each held job is (id, attempt, lease token), the fence jobd's finish checks."""
    count = len(held)
    return {
        "node": RAW_NODE,
        "ids": [job_id for job_id, _, _ in held],
        "attempts": [attempt for _, attempt, _ in held],
        "kinds": ["completed"] * count,
        "results": [None] * count,
        "errors": [None] * count,
        "crashed": [False] * count,
        "tokens": [token for _, _, token in held],
        "started_ats": [datetime.now(UTC)] * count,  # as a worker would report it
    }


async def _raw_connection(store: BenchStore) -> psycopg.AsyncConnection[Any]:
    """Set up as jobd's pool sets up its connections (store/postgres/connections.py)."""
    conn = await psycopg.AsyncConnection.connect(store.url, autocommit=True)
    await conn.execute(
        f"SET search_path TO \"{store.schema}\"; SET TIME ZONE 'UTC';"
        " SET enable_sort = off; SET jit = off"
    )
    return conn


async def raw_sql_loop(
    store: BenchStore, jobs: int, claim_batch: int, finish_batch: int, lanes: int = 2
) -> Span:
    """jobd's own submit, claim and finish statements (jobd.store.postgres.QUERIES) from a
    plain psycopg loop: submit in batches of 1,000 (untimed, as the burn-down's), then `lanes`
    connections each claiming `claim_batch` and finishing `finish_batch` at a time, prepared,
    as jobd sends them.  Two lanes: jobd's supervisor too has a claim and a finish in flight
    at once.  Timed like the burn-down, from the jobs' timestamps."""
    await migrate(store)
    conns = [await _raw_connection(store) for _ in range(lanes)]
    try:
        for start in range(0, jobs, SUBMIT_CHUNK):
            await conns[0].execute(
                QUERIES["submit"], _raw_submit_params(min(SUBMIT_CHUNK, jobs - start))
            )
        store.checkpoint()
        await asyncio.gather(*(_raw_lane(c, claim_batch, finish_batch) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    found = span(store)
    expect_completed(found, jobs, "raw SQL loop")
    return found


async def _raw_lane(
    conn: psycopg.AsyncConnection[Any], claim_batch: int, finish_batch: int
) -> None:
    claim = {
        "node": RAW_NODE,
        "limit": claim_batch,
        "lease": LEASE,
        "queues": None,
        "types": None,
        "exclude_queues": None,
    }
    held: list[tuple[int, int, int]] = []
    while True:
        cur = await conn.execute(QUERIES["claim"], claim, prepare=True)
        rows = await cur.fetchall()
        names = [c.name for c in cur.description or ()]
        at = [names.index(name) for name in ("id", "attempts", "lease_token")]
        held += [(row[at[0]], row[at[1]], row[at[2]]) for row in rows]
        while held and (len(held) >= finish_batch or not rows):
            batch, held = held[:finish_batch], held[finish_batch:]
            async with conn.pipeline():  # as the store sends it (ADR 0043)
                await conn.execute(QUERIES["write_back_hash_joins"], prepare=True)
                await conn.execute(QUERIES["finish"], _raw_finish_params(batch), prepare=True)
        if not rows:
            return


async def store_api_loop(store: BenchStore, jobs: int, claim_batch: int, finish_batch: int) -> Span:
    """SQLite has no SQL file of jobd's to replay: its store's own claim and finish, one
    caller (SQLite has one writer at a time anyway)."""
    await fill(store, jobs)
    store.checkpoint()
    jobd_store = store.jobd_store()
    await jobd_store.open()
    try:
        held: list[Outcome] = []
        while True:
            claimed = await jobd_store.claim(RAW_NODE, claim_batch, lease=LEASE)
            started = datetime.now(UTC)  # as a worker would report it, with the outcome
            held += [
                Outcome(j.id, j.attempts, OutcomeKind.COMPLETED, result=None, started_at=started)
                for j in claimed
            ]
            while held and (len(held) >= finish_batch or not claimed):
                batch, held = held[:finish_batch], held[finish_batch:]
                await jobd_store.finish(RAW_NODE, batch)
            if not claimed:
                break
    finally:
        await jobd_store.close()
    found = span(store)
    expect_completed(found, jobs, "store API loop")
    return found


# --- backlog: the burn-down with a full table --------------------------------------------------


PG_FINISHED = """
INSERT INTO finished_jobs (id, type, payload, state, attempts, max_attempts, run_at, created_at,
                           updated_at, started_at, finished_at)
SELECT nextval('jobs_id_seq'), 'bench_noop', '{}', 'completed', 1, 3, t, t, t + interval '2 ms',
       t + interval '1 ms', t + interval '2 ms'
  FROM (SELECT now() - interval '1 day' + i * interval '50 microseconds' AS t
          FROM generate_series(1, %s) AS i) AS s
"""
PG_PENDING = (
    "INSERT INTO jobs (type, payload) SELECT 'bench_noop', '{}' FROM generate_series(1, %s)"
)
SQLITE_FINISHED = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)
INSERT INTO jobs (type, payload, state, attempts, max_attempts, run_at, created_at, updated_at,
                  started_at, finished_at)
SELECT 'bench_noop', '{}', 'completed', 1, 3, t, t, t + 0.002, t + 0.001, t + 0.002
  FROM (SELECT %s + i * 0.00005 AS t FROM n)
"""
SQLITE_PENDING = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)
INSERT INTO jobs (type, payload, max_attempts, run_at, created_at, updated_at)
SELECT 'bench_noop', '{}', 3, %s, %s, %s FROM n
"""


def prefill(store: BenchStore, finished: int, pending: int) -> int:
    """`finished` completed jobs (a day old, inside the default retention) and `pending`
    no-op jobs, written straight into jobd's table; returns the last finished job's id.  Then
    VACUUM ANALYZE: the table as autovacuum would have left it (it is off on our server),
    statistics included."""
    if store.kind == "postgres":
        store.query(PG_FINISHED, (finished,))
        last = max_id(store)
        store.query(PG_PENDING, (pending,))
        store.query("VACUUM ANALYZE jobs, finished_jobs")
        return last
    now = time.time()
    store.query("BEGIN")
    store.query(SQLITE_FINISHED, (finished, now - 86400))
    last = max_id(store)
    store.query(SQLITE_PENDING, (pending, now, now, now))
    store.query("COMMIT")
    store.query("ANALYZE")
    return last


async def backlog(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """The burn-down of `pending` jobs with `finished` finished ones in the table, then of the
    same `pending` jobs in a table without them: the ratio isolates what the finished jobs
    cost (a larger backlog costs something of its own: a longer claim index, more vacuums)."""
    finished, pending = run.sizes.backlog_finished, run.sizes.backlog_pending
    found, use, size = await _backlog_drain(run, kind, make, "backlog", finished, pending)
    run.details.append(_cpu_table(f"backlog, {kind}", found, use, size))
    progress(f"backlog: {found.rate:,.0f} jobs/s over {found.seconds:.1f} s")
    alone, _, _ = await _backlog_drain(run, kind, make, "backlog_alone", 0, pending)
    progress(f"backlog without finished jobs: {alone.rate:,.0f} jobs/s")
    empty = run.burn_down.get(kind)
    return [
        Figure(
            "backlog",
            kind,
            f"{pending:,} pending + {finished:,} finished in the table: burn-down",
            found.rate,
            "jobs/s",
        ),
        Figure(
            "backlog",
            kind,
            f"{pending:,} pending, no finished job: burn-down",
            alone.rate,
            "jobs/s",
        ),
        Figure(
            "backlog",
            kind,
            f"÷ the same {pending:,} on a table without finished jobs",
            found.rate / alone.rate,
            "ratio",
            Target(">=", 0.9),
        ),
        Figure(
            "backlog",
            kind,
            f"÷ the burn-down ({run.sizes.burn_down:,} jobs, empty table)",
            found.rate / empty.rate if empty else None,
            "ratio",
            text=None if empty else "— (run burn-down too)",
        ),
        _elsewhere("backlog", kind, found, use),
    ]


async def _backlog_drain(
    run: Run, kind: str, make: MakeStore, name: str, finished: int, pending: int
) -> tuple[Span, CpuUse, TableSize]:
    with make(name) as store:
        await migrate(store)
        last_old = prefill(store, finished, pending)
        progress(f"{name}: table filled, {fmt(table_size(store).jobs_bytes, 'bytes')}")
        store.checkpoint()
        found, use, size = drain_metered(run, store, pending, f"{name}-{kind}", last_old)
    expect_completed(found, pending, name)
    return found, use, size


# --- latency -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    job_id: int
    submitted: float  # client clock, just before the submit call
    handler_start: float  # the worker's clock, when the handler began
    returned: float  # client clock, when wait returned


async def latency(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """An idle daemon; jobs submitted one at a time over the control socket, each awaited
    before the next.  All clocks are this machine's one wall clock."""
    with make("latency") as store, running(store, run.sizes.workers, run.env) as daemon:
        with daemon.client() as client:
            for _ in range(run.sizes.latency_warmup):  # connections, prepared statements
                _one_timed(client)
            timings = [_one_timed(client) for _ in range(run.sizes.latency_jobs)]
        stamps = _store_stamps(store, [t.job_id for t in timings])
    client_start = [1000 * (t.handler_start - t.submitted) for t in timings]
    client_done = [1000 * (t.returned - t.submitted) for t in timings]
    store_start = [1000 * (stamps[t.job_id][1] - stamps[t.job_id][0]) for t in timings]
    store_done = [1000 * (stamps[t.job_id][2] - stamps[t.job_id][0]) for t in timings]
    rows = [
        ("submit call → handler starts (client clock)", client_start),
        ("submit call → wait returns (client clock)", client_done),
        ("created_at → started_at (store)", store_start),
        ("created_at → finished_at (store)", store_done),
    ]
    run.details.append(_latency_table(kind, len(timings), rows))
    p_start = percentiles(client_start)
    p_done = percentiles(client_done)
    name = "idle, one at a time: submit call → "
    return [
        Figure("latency", kind, name + "handler starts, p50", p_start[0], "ms", Target("<=", 2)),
        Figure("latency", kind, name + "handler starts, p99", p_start[2], "ms", Target("<=", 10)),
        Figure("latency", kind, name + "wait returns, p50", p_done[0], "ms", Target("<=", 5)),
    ]


def _one_timed(client: Any) -> Timing:
    submitted = time.time()
    job = client.submit("bench_stamp").job
    waited = client.wait(job.id, timeout=60)
    returned = time.time()
    if waited.timed_out or not isinstance(waited.job.result, dict):
        raise RuntimeError(f"latency: job {job.id} did not complete: {waited.job.state}")
    return Timing(job.id, submitted, float(waited.job.result["t"]), returned)


def _store_stamps(store: BenchStore, ids: list[int]) -> dict[int, tuple[float, float, float]]:
    rows = store.query(
        f"SELECT id, {store.epoch('created_at')}, {store.epoch('started_at')},"
        f"       {store.epoch('finished_at')} FROM {store.all_jobs} WHERE id >= %s AND id <= %s",
        (min(ids), max(ids)),
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _latency_table(kind: str, jobs: int, rows: list[tuple[str, list[float]]]) -> str:
    lines = [
        f"#### Latency, {kind}: {jobs:,} jobs one at a time (ms)",
        "",
        "| measured | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in rows:
        p50, p95, p99 = percentiles(values)
        lines.append(f"| {name} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {max(values):.2f} |")
    return "\n".join(lines)


# --- CPU-bound ---------------------------------------------------------------------------------


async def cpu(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """Jobs that each burn cpu_ms of CPU, with 1 then 2 workers, each on a fresh store; the
    jobs are submitted once every worker is up, so the span has all of them working."""
    jobs, ms = run.sizes.cpu_jobs, run.sizes.cpu_ms
    rates, elsewhere = {}, {}
    lines = [
        f"#### CPU-bound, {kind}: {jobs} jobs of {ms:g} ms CPU, and who had the CPUs",
        "",
        "| workers | jobs/s | seconds | workers' CPU s | whole machine's busy CPU s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for workers in (1, 2):
        with make(f"cpu_{workers}") as store, running(store, workers, run.env) as daemon:
            found, usage = _burn(store, daemon, jobs, ms)
        rates[workers] = found.rate
        elsewhere[workers] = max(usage[2] - usage[1], 0.0) / usage[0]
        progress(f"cpu-bound, {workers} workers: {found.rate:,.1f} jobs/s")
        lines.append(
            f"| {workers} | {found.rate:,.1f} | {usage[0]:.2f} | {usage[1]:.2f} | {usage[2]:.2f} |"
        )
    run.details.append("\n".join(lines))
    name = f"{jobs} jobs of {ms:g} ms CPU"
    return [
        Figure("cpu-bound", kind, f"{name}, 1 worker", rates[1], "jobs/s"),
        Figure("cpu-bound", kind, f"{name}, 2 workers", rates[2], "jobs/s"),
        Figure(
            "cpu-bound",
            kind,
            "speed-up, 2 workers over 1",
            rates[2] / rates[1],
            "x",
            Target(">=", 1.8),
        ),
        Figure(
            "cpu-bound",
            kind,
            "meanwhile the machine's other work (all but the workers), 1 / 2 workers",
            None,
            "",
            text=f"{elsewhere[1]:.2f} / {elsewhere[2]:.2f} CPUs",
        ),
    ]


def _burn(
    store: BenchStore, daemon: Daemon, jobs: int, ms: float
) -> tuple[Span, tuple[float, float, float]]:
    """Submit and drain the CPU-burning jobs; also (wall seconds, the workers' CPU seconds,
    the machine's busy CPU seconds) over the drain, to show what other work took."""
    pids = daemon.worker_pids()
    spec = {"type": "bench_burn", "payload": {"ms": ms}}
    began, busy, used = time.monotonic(), machine_busy_seconds(), _cpu_of(pids)
    with daemon.client() as client:
        for start in range(0, jobs, SUBMIT_CHUNK):
            client.submit_many([spec] * min(SUBMIT_CHUNK, jobs - start))
    wait_drained(store, drain_timeout(jobs) + jobs * ms / 1000, daemon.check_alive)
    usage = (
        time.monotonic() - began,
        _cpu_of(pids) - used,
        machine_busy_seconds() - busy,
    )
    found = span(store)
    expect_completed(found, jobs, f"CPU-bound, {daemon.workers} workers")
    return found, usage


def _cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


# --- memory and respawn ------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    supervisor: int  # bytes
    worker: int  # the largest worker's
    worker_pids: tuple[int, ...]

    def text(self) -> str:
        return f"supervisor {self.supervisor / MB:.1f} MB, worker {self.worker / MB:.1f} MB"


def memory_of(daemon: Daemon) -> Memory:
    pids = tuple(daemon.worker_pids())
    return Memory(rss_bytes(daemon.pid), max(rss_bytes(p) for p in pids), pids)


async def memory(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """RSS (/proc/<pid>/statm) of the supervisor and of its largest worker: idle, then idle
    again after each mark of jobs run (submitted through the control socket while running)."""
    marks = run.sizes.memory_marks
    samples: dict[int, Memory] = {}
    with make("memory") as store, running(store, run.sizes.workers, run.env) as daemon:
        time.sleep(run.sizes.settle)  # start-up's garbage collected, pools at rest
        samples[0] = memory_of(daemon)
        done = 0
        with daemon.client() as client:
            for mark in marks:
                for start in range(done, mark, SUBMIT_CHUNK):
                    client.submit_many([{"type": NOOP}] * min(SUBMIT_CHUNK, mark - start))
                wait_drained(store, drain_timeout(mark - done), daemon.check_alive)
                done = mark
                time.sleep(run.sizes.settle)
                samples[mark] = memory_of(daemon)
                progress(f"memory after {mark:,} jobs: {samples[mark].text()}")
    figures = []
    for mark, sample in samples.items():
        when = "idle at start" if mark == 0 else f"idle after {mark:,} jobs"
        last = mark == marks[-1]
        figures += [
            Figure(
                "memory",
                kind,
                f"supervisor RSS, {when}",
                sample.supervisor / MB,
                "MB",
                Target("<=", 80) if last else None,
            ),
            Figure(
                "memory",
                kind,
                f"worker RSS, {when}",
                sample.worker / MB,
                "MB",
                Target("<=", 40) if last else None,
            ),
        ]
    first, last = samples[marks[0]], samples[marks[-1]]
    between = f"{marks[0]:,} → {marks[-1]:,} jobs"
    # "No growth" within what RSS can show: a page here or there is allocator noise.
    figures += [
        Figure(
            "memory",
            kind,
            f"supervisor RSS growth, {between}",
            (last.supervisor - first.supervisor) / MB,
            "MB",
            Target("<=", 1),
        ),
        Figure(
            "memory",
            kind,
            f"worker RSS growth, {between}",
            (last.worker - first.worker) / MB,
            "MB",
            Target("<=", 1),
        ),
    ]
    if set(first.worker_pids) != set(last.worker_pids):
        run.details.append(f"Note ({kind}): workers were replaced between {between}.")
    return figures + await respawn(run, kind, make)


async def respawn(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """SIGKILL the only worker of a one-worker daemon, submit a job at once, and time the kill
    to the moment that job's handler starts (in the new worker: checked by its pid).  One
    worker, so no other worker (or its prefetch slot) can take the job instead."""
    times = []
    with (
        make("respawn") as store,
        running(store, 1, run.env) as daemon,
        daemon.client() as client,
    ):
        _one_timed(client)
        for _ in range(run.sizes.respawns):
            daemon.wait_ready()
            [victim] = daemon.worker_pids()
            os.kill(victim, signal.SIGKILL)
            killed = time.time()
            waited = client.wait(client.submit("bench_stamp").job.id, timeout=60)
            result = waited.job.result
            if not isinstance(result, dict) or result["pid"] == victim:
                raise RuntimeError(f"respawn: the job did not run in a new worker: {result}")
            times.append(1000 * (result["t"] - killed))
            progress(f"respawn: {times[-1]:.1f} ms")
            time.sleep(0.2)
    label = f"worker SIGKILL → a new job starts in its replacement ({len(times)} kills)"
    return [
        Figure(
            "respawn", kind, f"{label}, median", statistics.median(times), "ms", Target("<=", 100)
        ),
        Figure("respawn", kind, f"{label}, worst", max(times), "ms"),
    ]


# --- steady state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the producer started
    dead_tuples: int | None
    jobs_bytes: int
    all_bytes: int
    vacuums: int | None
    finished_bytes: int | None


@dataclass(frozen=True)
class Window:
    index: int
    submitted: int
    completed: int
    backlog: int  # submitted so far - completed so far, at the window's end
    sample: Sample | None


async def steady(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    """A producer submits (submit_many of 1,000 over the control socket, answered with ids, as
    fast as it can, or holding the backlog under --steady-backlog) while the workers drain.
    While it runs only statistics and file sizes are read; the per-window counts come
    afterwards from created_at/finished_at, so the measuring never scans the table under the
    daemon."""
    seconds, width, cap = run.sizes.steady_seconds, run.sizes.steady_window, run.sizes.steady_cap
    with make("steady") as store, running(store, run.sizes.workers, run.env) as daemon:
        began = time.time()
        with Producer(daemon, store, cap) as produced:
            samples = _sample_until(store, began, seconds, width)
        windows = _windows(store, began, seconds, width, samples)
        size = table_size(store)
    producer = f"≤ {cap:,} pending" if cap else "as fast as it can"
    run.details.append(_steady_table(kind, width, windows, produced[0], producer))
    first, last = windows[0], windows[-1]
    name = f"producer {producer}, {seconds:g} s: jobs/s"
    where = "jobs table size (with indexes)" if kind == "postgres" else "database file size"
    figures = [
        Figure("steady", kind, f"{name}, first window", first.completed / width, "jobs/s"),
        Figure("steady", kind, f"{name}, last window", last.completed / width, "jobs/s"),
        Figure(
            "steady",
            kind,
            "last window ÷ first",
            last.completed / first.completed if first.completed else None,
            "ratio",
            Target(">=", 0.9),
        ),
        Figure("steady", kind, f"backlog after {seconds:g} s", last.backlog, "n"),
        Figure("steady", kind, f"{where} at the end", size.jobs_bytes, "bytes"),
    ]
    if size.dead_tuples is not None:
        figures.append(
            Figure("steady", kind, "jobs table dead tuples at the end", size.dead_tuples, "n")
        )
    if size.finished_bytes is not None:
        figures.append(
            Figure("steady", kind, "finished_jobs size at the end", size.finished_bytes, "bytes")
        )
    return figures


class Producer(AbstractContextManager["list[int]"]):
    """A thread submitting batches of 1,000 no-op jobs until the block ends, answered with
    their ids (`Client.submit_ids`: what a bulk producer asks for, ADR 0044); yields a
    one-element list holding how many it submitted.  With a `cap`, it waits while that many
    jobs are pending (counted on a connection of its own: cheap, as the backlog is small)."""

    def __init__(self, daemon: Daemon, store: BenchStore, cap: int = 0):
        self._daemon = daemon
        self._counter = BenchStore(store.kind, store.url, store.schema) if cap else None
        self._cap = cap
        self._stop = threading.Event()
        self._count = [0]
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def __enter__(self) -> list[int]:
        self._thread.start()
        return self._count

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        if self._error is not None:
            raise RuntimeError(f"steady state: the producer failed: {self._error}")

    def _run(self) -> None:
        batch = [{"type": NOOP}] * SUBMIT_CHUNK
        try:
            with self._daemon.client() as client:
                while not self._stop.is_set():
                    if self._full():
                        time.sleep(0.01)
                        continue
                    self._count[0] += len(client.submit_ids(batch).ids)
        except BaseException as exc:  # reported by __exit__, in the main thread
            self._error = exc
        finally:
            if self._counter is not None:
                self._counter.close()

    def _full(self) -> bool:
        if self._counter is None:
            return False
        pending = self._counter.scalar("SELECT count(*) FROM jobs WHERE state = 'pending'")
        return int(pending) >= self._cap


def _sample_until(store: BenchStore, began: float, seconds: float, width: float) -> list[Sample]:
    """Table statistics at the start and at each window's end."""
    samples = []
    for k in range(round(seconds / width) + 1):
        time.sleep(max(0.0, began + k * width - time.time()))
        size = table_size(store)
        progress(f"steady: dead tuples {size.dead_tuples}, {fmt(size.jobs_bytes, 'bytes')}")
        samples.append(
            Sample(
                time.time() - began,
                size.dead_tuples,
                size.jobs_bytes,
                size.all_bytes,
                size.vacuums,
                size.finished_bytes,
            )
        )
    return samples


def _windows(
    store: BenchStore, began: float, seconds: float, width: float, samples: list[Sample]
) -> list[Window]:
    count = round(seconds / width)
    submitted = _histogram(store, "created_at", began, width, count)
    completed = _histogram(store, "finished_at", began, width, count)
    windows, total_in, total_out = [], 0, 0
    for k in range(count):
        total_in += submitted[k]
        total_out += completed[k]
        sample = samples[k + 1] if k + 1 < len(samples) else None
        windows.append(Window(k, submitted[k], completed[k], total_in - total_out, sample))
    return windows


def _histogram(store: BenchStore, column: str, began: float, width: float, count: int) -> list[int]:
    """Jobs per window of `column` (the first window starts at `began`)."""
    bucket = f"floor(({store.epoch(column)} - %s) / %s)"
    rows = store.query(
        f"SELECT {bucket} AS w, count(*) FROM {store.all_jobs} WHERE {column} IS NOT NULL"
        " GROUP BY 1",
        (began, width),
    )
    counts = [0] * count
    for window, n in rows:
        if 0 <= int(window) < count:
            counts[int(window)] += n
    return counts


def _steady_table(
    kind: str, width: float, windows: list[Window], produced: int, producer: str
) -> str:
    lines = [
        f"#### Steady state, {kind}: producer {producer}, {width:g}-second windows"
        f" ({produced:,} jobs submitted)",
        "",
        "| window | submitted/s | completed/s | backlog at end | dead tuples | VACUUMs | "
        + (
            "jobs (hot) table | finished_jobs | schema |"
            if kind == "postgres"
            else "database file | with WAL |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if kind == "postgres" else ""),
    ]
    for w in windows:
        s = w.sample
        dead = "—" if s is None or s.dead_tuples is None else f"{s.dead_tuples:,}"
        vacuums = "—" if s is None or s.vacuums is None else f"{s.vacuums}"
        size = "—" if s is None else fmt(s.jobs_bytes, "bytes")
        total = "—" if s is None else fmt(s.all_bytes, "bytes")
        done = (
            ""
            if kind != "postgres"
            else ("—" if s is None else fmt(s.finished_bytes or 0, "bytes") + " | ")
        )
        lines.append(
            f"| {w.index + 1} | {w.submitted / width:,.0f} | {w.completed / width:,.0f}"
            f" | {w.backlog:,} | {dead} | {vacuums} | {size} | {done}{total} |"
        )
    return "\n".join(lines)


SCENARIOS: dict[str, Scenario] = {
    # in the order they run: limit and backlog compare themselves with the burn-down
    "burn-down": burn_down,
    "limit": limit,
    "backlog": backlog,
    "latency": latency,
    "cpu": cpu,
    "memory": memory,
    "steady": steady,
}
