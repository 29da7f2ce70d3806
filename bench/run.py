"""jobd's benchmark harness (issue 9): every scenario against `jobd run` as a real subprocess,
one table of figures next to their targets.

    python bench/run.py                          # every scenario on both stores (~15 minutes)
    python bench/run.py --quick                  # tiny sizes: does it all still work? (seconds)
    python bench/run.py --scenario burn-down,limit --store postgres --jobs 100000

Scenarios (--scenario, comma-separated; they run in this order):
  burn-down  N no-op jobs (--jobs, 50,000) submitted with the store's submit_many before the
             daemon starts, drained by 2 workers: first claim to last completion, from the
             jobs' started_at/finished_at.  Also the claim and finish batch sizes jobd used.
             --schedules N: the daemon also runs N schedules (`every: 1s`, a no-op type the
             drain does not submit, their jobs left out of its figures): run with and
             without, alternated, to see what schedules cost the hot path.
             --paused-queue NAME, --limited-queue NAME:global=N,rate=R: another queue
             paused, and fleet-wide limits on another (their jobs are none of the drain's):
             run with and without, alternated, to see what they cost the default queue.
  limit      jobd's own submit/claim/finish SQL (jobd/store/sql/postgres.sql) from a plain
             psycopg loop, at the batch sizes the burn-down used (or --limit-batch), on two
             connections, in the same database; and the burn-down as a fraction of it.  On
             SQLite: the store's own claim/finish from one caller.
  backlog    the burn-down of 100,000 pending jobs with 1,000,000 finished ones already in the
             table (written with generate_series), against the empty-table burn-down.
  latency    an idle daemon, 1,000 jobs submitted one at a time over the control socket and
             each awaited: submit→handler start and submit→wait returned, client clock (the
             table's figures), and created_at→started_at/finished_at from the store (details).
  cpu        jobs burning 50 ms of CPU each, 1 worker then 2: the speed-up.
  memory     RSS of the supervisor and of its largest worker (/proc/<pid>/statm): idle, then
             idle after 10,000 and after 50,000 jobs; then, on a one-worker daemon, SIGKILL of
             the worker to a freshly submitted job starting in its replacement.
  workflow   --workflow-jobs no-op jobs (10,000) as one fan-out/fan-in (a root, the jobs after
             it, one job after all of them: bench/workflow.py), submitted before the daemon
             starts and drained as the burn-down is; its rate ÷ the burn-down's (target 0.5).
  steady     a producer submitting as fast as it can (submit_many over the control socket,
             answered with ids: Client.submit_ids) for 5 minutes: jobs/s per 30-second
             window, the backlog, the jobs table's dead tuples and size over time.
             --steady-backlog N holds the backlog near N instead, so the table's growth is
             the daemon's doing, not the producer's.
  bulk-retry a bulk retry of --bulk-failed failed jobs (100,000, written straight into
             finished_jobs) while 2 workers burn down --bulk-jobs no-op jobs (50,000) of another
             queue, against the same burn-down alone, over --bulk-rounds rounds (3) alternating
             which goes first (bench/bulk_retry.py; PostgreSQL only): both rates, their ratio
             (target 0.5), and the most rows one transaction moved (a trigger counts them).
  peers      jobd against pgqueuer and procrastinate (PostgreSQL only; the `test` extra
             installs them), each in a schema of its own, over --rounds rounds (3) in
             alternating order: the burn-down of --peer-jobs no-op jobs (10,000) enqueued
             before 2 worker processes start, and --peer-latency-jobs jobs (300) one at a time
             to idle workers, submit → completion seen.  Medians, and jobd ÷ each peer.

Stores (--store): PostgreSQL in a database this command creates and drops (--pg: a URL allowed
to CREATE DATABASE), each scenario in a schema of its own dropped when it ends; SQLite in a
temporary directory.  The daemon runs with its defaults except workers, socket, database and
the benchmark's handler module (bench/bench_handlers.py), in an environment without the
caller's JOBD_*, XDG_* and systemd folders (tests/daemon.py); --daemon-env KEY=VALUE adds JOBD_*
settings.  Progress goes to stderr; the machine (with its hops, timed first: bench/hops.py),
the details and the table (Markdown) to stdout.  Exit status 1 if a scenario failed (its row
says why).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import hops
import psycopg
from bulk_retry import bulk_retry
from harness import ROOT, BenchStore, progress
from peers import peers
from scenarios import QUICK, SCENARIOS, Figure, MakeStore, Run, Scenario, Sizes
from store import postgres_database
from workflow import workflow

STORES = ("postgres", "sqlite")
# Every scenario, in the order they run; peers last (it compares jobd with other queues).
ALL: dict[str, Scenario] = {
    **SCENARIOS,
    "workflow": workflow,
    "bulk-retry": bulk_retry,
    "peers": peers,
}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- stores of their own -----------------------------------------------------------------------


@asynccontextmanager
async def store_maker(kind: str, admin_url: str) -> AsyncIterator[MakeStore]:
    """For one store kind: a maker of a fresh store per scenario, dropped after it."""
    if kind == "postgres":
        async with postgres_database(admin_url) as url:
            yield _maker(lambda name: BenchStore.postgres(url, f"bench_{name}"))
    else:
        with tempfile.TemporaryDirectory(prefix="jobd-bench-") as tmp:
            yield _maker(lambda name: BenchStore.sqlite(Path(tmp), name))


def _maker(new: Callable[[str], BenchStore]) -> MakeStore:
    @contextmanager
    def make(name: str) -> Iterator[BenchStore]:
        store = new(name)
        try:
            yield store
        finally:
            store.drop()

    return make


# --- the machine -------------------------------------------------------------------------------


def machine(args: argparse.Namespace, stores: list[str]) -> list[str]:
    """What the figures were measured on and with, as Markdown bullets."""
    lines = [
        f"- command: `{shlex.join(['python', 'bench/run.py', *sys.argv[1:]])}`",
        f"- jobd: {_commit()}",
        f"- CPU: {os.cpu_count()} x {_cpu_model()}; memory {_mem_total()}; Linux"
        f" {platform.release()}; load average {os.getloadavg()[0]:.2f} at the start",
        f"- Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}",
    ]
    if "postgres" in stores:
        lines.append(f"- {_postgres(args.pg)}")
    lines.append(f"- {hops.measure(args.pg if 'postgres' in stores else None).text()}")
    if args.daemon_env:
        lines.append(f"- daemon settings: {' '.join(args.daemon_env)}")
    return lines


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--", "jobd", "migrations")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}" + (" with uncommitted changes in jobd/" if dirty else "")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _mem_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return "unknown"


def _postgres(admin_url: str) -> str:
    names = ("server_version", "autovacuum", "synchronous_commit", "fsync", "shared_buffers")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        values = {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}  # type: ignore[index]
    return (
        f"PostgreSQL {values['server_version']} on this machine: autovacuum"
        f" {values['autovacuum']}, synchronous_commit {values['synchronous_commit']}, fsync"
        f" {values['fsync']}, shared_buffers {values['shared_buffers']}"
    )


# --- the table ---------------------------------------------------------------------------------


def table(figures: list[Figure]) -> str:
    """A Markdown table, padded so it reads in a terminal too."""
    rows = [("scenario", "store", "figure", "value", "target", "met")]
    for f in figures:
        target = f.target.text(f.unit) if f.target else ""
        rows.append((f.scenario, f.store, f.name, f.shown(), target, f.verdict()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {3}  # values line up on the right

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:])])


# --- running -----------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace) -> int:
    sizes = sizes_from(args)
    env = dict(item.split("=", 1) for item in args.daemon_env)
    run = Run(sizes, env, profile=args.profile)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    stores = args.store
    print("\n".join(machine(args, stores)), flush=True)
    figures: list[Figure] = []
    failed = False
    for kind in stores:
        async with store_maker(kind, args.pg) as make:
            for name in [s for s in ALL if s in args.scenario]:
                progress(f"{name} on {kind}")
                try:
                    figures += await ALL[name](run, kind, make)
                except Exception as exc:
                    traceback.print_exc()
                    failed = True
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    figures.append(
                        Figure(name, kind, "failed", None, "", text=f"error: {first_line}")
                    )
    progress("done")
    for section in run.details:
        print(f"\n{section}")
    print(f"\n{table(figures)}")
    return 1 if failed else 0


def sizes_from(args: argparse.Namespace) -> Sizes:
    """--quick's small sizes or the issue's, then whatever was given explicitly."""
    base = QUICK if args.quick else Sizes()
    given = {
        "burn_down": args.jobs,
        "limit_jobs": args.limit_jobs,
        "limit_batches": args.limit_batch,
        "backlog_finished": args.backlog_finished,
        "backlog_pending": args.backlog_pending,
        "latency_jobs": args.latency_jobs,
        "cpu_jobs": args.cpu_jobs,
        "cpu_ms": args.cpu_ms,
        "memory_marks": args.memory_jobs,
        "respawns": args.respawns,
        "steady_seconds": args.steady_seconds,
        "steady_window": args.window,
        "steady_cap": args.steady_backlog,
        "peer_jobs": args.peer_jobs,
        "peer_rounds": args.rounds,
        "peer_latency_jobs": args.peer_latency_jobs,
        "pgqueuer_batch": args.pgqueuer_batch,
        "procrastinate_concurrency": args.procrastinate_concurrency,
        "schedules": args.schedules,
        "paused_queue": args.paused_queue,
        "limited_queue": args.limited_queue,
        "workflow_jobs": args.workflow_jobs,
        "bulk_jobs": args.bulk_jobs,
        "bulk_failed": args.bulk_failed,
        "bulk_rounds": args.bulk_rounds,
    }
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def _names(choices: tuple[str, ...] | list[str]) -> object:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = sorted(set(names) - set(choices))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return names

    return parse


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _batch(text: str) -> tuple[int, int]:
    claim, _, finish = text.partition("/")
    return int(claim), int(finish or claim)


def _setting(text: str) -> str:
    if "=" not in text or not text.startswith("JOBD_"):
        raise argparse.ArgumentTypeError("expected JOBD_NAME=VALUE")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenario",
        type=_names(list(ALL)),
        default=list(ALL),
        help="comma-separated scenarios (default: all)",
    )
    p.add_argument(
        "--store",
        type=_names(STORES),
        default=list(STORES),
        help="comma-separated stores (default: postgres,sqlite)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (about 20 s)")
    p.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL allowed to CREATE DATABASE")
    p.add_argument(
        "--daemon-env",
        type=_setting,
        action="append",
        default=[],
        metavar="JOBD_X=V",
        help="a setting for every daemon (repeatable)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the supervisor during the burn-down and backlog drains (files in DIR)",
    )
    p.add_argument("--jobs", type=int, help="burn-down jobs (50,000)")
    p.add_argument(
        "--schedules",
        type=int,
        metavar="N",
        help="burn-down: the daemon runs N schedules every second beside the drain (0)",
    )
    p.add_argument(
        "--paused-queue",
        metavar="NAME",
        help="burn-down: queue NAME paused fleet-wide before the daemon starts",
    )
    p.add_argument(
        "--limited-queue",
        metavar="NAME:global=N,rate=R",
        help="burn-down: fleet-wide limits on queue NAME in the daemon's file (rate: 10/s)",
    )
    p.add_argument(
        "--workflow-jobs", type=int, help="jobs of the workflow scenario's fan-out/fan-in (10,000)"
    )
    p.add_argument("--bulk-jobs", type=int, help="bulk-retry: burn-down jobs (50,000)")
    p.add_argument("--bulk-failed", type=int, help="bulk-retry: failed jobs retried (100,000)")
    p.add_argument("--bulk-rounds", type=int, help="bulk-retry: rounds, alternating (3)")
    p.add_argument("--limit-jobs", type=int, help="jobs through the limit loop (50,000)")
    p.add_argument(
        "--limit-batch",
        type=_batch,
        metavar="CLAIM[/FINISH]",
        help="the limit loop's batch sizes (default: as the burn-down used)",
    )
    p.add_argument("--backlog-finished", type=int, help="finished jobs in the table (1,000,000)")
    p.add_argument("--backlog-pending", type=int, help="pending jobs to drain (100,000)")
    p.add_argument("--latency-jobs", type=int, help="jobs one at a time (1,000)")
    p.add_argument("--cpu-jobs", type=int, help="CPU-bound jobs (200)")
    p.add_argument("--cpu-ms", type=float, help="CPU milliseconds per job (50)")
    p.add_argument("--memory-jobs", type=_ints, metavar="N,M", help="RSS marks (10000,50000)")
    p.add_argument("--respawns", type=int, help="worker kills to time (5)")
    p.add_argument("--steady-seconds", type=float, help="steady-state duration (300)")
    p.add_argument("--window", type=float, help="steady-state window in seconds (30)")
    p.add_argument(
        "--steady-backlog",
        type=int,
        metavar="N",
        help="the steady-state producer waits while N jobs are pending (default: never)",
    )
    p.add_argument("--peer-jobs", type=int, help="peers: burn-down jobs per system (10,000)")
    p.add_argument("--rounds", type=int, help="peers: rounds, the systems alternating (3)")
    p.add_argument("--peer-latency-jobs", type=int, help="peers: jobs one at a time (300)")
    p.add_argument("--pgqueuer-batch", type=int, help="peers: pgqueuer's batch_size (25)")
    p.add_argument(
        "--procrastinate-concurrency", type=int, help="peers: procrastinate's concurrency (10)"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(run_all(parse_args())))
