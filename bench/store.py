"""Claim + complete throughput of the stores, in jobs per second.

    python bench/store.py [--jobs N] [--pg ADMIN_URL] [--batches 1,100]

For each store (PostgreSQL, SQLite) and each batch size: a fresh, migrated store gets N jobs
with submit_many (not timed), then one node claims `batch` jobs and completes them with one
finish call, until none is left (timed).  PostgreSQL runs in a database this script creates
and drops; SQLite in a temporary file.  Only the public store API (jobd.store.create_store)
is used, so a store that does not exist yet is reported as unavailable rather than failing.

One node, one connection at a time: this measures the cost of the store's round trips and
commits, not the server's concurrency.  A short run also flatters a queue table (no dead
tuples have piled up yet, autovacuum has not had to keep up): use a large --jobs to see
sustained throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import psycopg

from jobd.domain import NewJob
from jobd.store import Outcome, OutcomeKind, Store, create_store

NODE = "bench"
SUBMIT_CHUNK = 1000
StoreFactory = Callable[[str], AbstractAsyncContextManager[Store]]


@dataclass(frozen=True)
class Result:
    store: str
    batch: int
    jobs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else float("inf")


async def run_one(store: Store, jobs: int, batch: int) -> float:
    """Submit `jobs` jobs, then time claiming and completing them `batch` at a time."""
    await store.migrate()
    for start in range(0, jobs, SUBMIT_CHUNK):
        count = min(SUBMIT_CHUNK, jobs - start)
        await store.submit_many([NewJob("bench", {"i": start + i}) for i in range(count)])
    done = 0
    began = time.perf_counter()
    while claimed := await store.claim(NODE, batch, lease=60.0):
        outcomes = [Outcome(j.id, j.attempts, OutcomeKind.COMPLETED, result=None) for j in claimed]
        applied = await store.finish(NODE, outcomes)
        done += len(applied)
    elapsed = time.perf_counter() - began
    if done != jobs:
        raise RuntimeError(f"completed {done} jobs of {jobs}")
    return elapsed


@asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A database of our own for the run, dropped afterwards whatever happens."""
    name = f"jobd_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def opened(url: str, **options: object) -> AsyncIterator[Store]:
    store = create_store(url, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def bench(kind: str, factory: StoreFactory, jobs: int, batches: list[int]) -> list[Result]:
    results = []
    for batch in batches:
        async with factory(f"b{batch}") as store:
            seconds = await run_one(store, jobs, batch)
        results.append(Result(kind, batch, jobs, seconds))
        print(f"  {kind} batch {batch}: {jobs / seconds:,.0f} jobs/s", file=sys.stderr)
    return results


async def main(args: argparse.Namespace) -> int:
    results: list[Result] = []
    async with postgres_database(args.pg) as url:
        results += await bench(
            "postgres", lambda name: opened(url, schema=name), args.jobs, args.batches
        )
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="jobd-bench-") as tmp:
            try:
                results += await bench(
                    "sqlite",
                    lambda name: opened(f"sqlite://{tmp}/{name}.db"),
                    args.jobs,
                    args.batches,
                )
            except ImportError as exc:
                print(f"  sqlite: not available ({exc})", file=sys.stderr)
    print_table(results)
    return 0


def print_table(results: list[Result]) -> None:
    print(f"{'store':<10} {'batch':>5} {'jobs':>7} {'seconds':>8} {'jobs/s':>9}")
    for r in results:
        print(f"{r.store:<10} {r.batch:>5} {r.jobs:>7} {r.seconds:>8.2f} {r.rate:>9,.0f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run (default 5000)")
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL allowed to CREATE DATABASE (default: local, as postgres)",
    )
    parser.add_argument(
        "--batches",
        type=lambda s: [int(b) for b in s.split(",")],
        default=[1, 100],
        help="comma-separated claim/finish batch sizes (default 1,100)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args(argv)
    if args.jobs < 1 or any(b < 1 for b in args.batches):
        parser.error("--jobs and --batches must be positive")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
