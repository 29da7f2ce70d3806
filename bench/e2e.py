"""End-to-end throughput of `jobd run`: no-op jobs per second through the real daemon.

    python bench/e2e.py [--jobs N] [--workers 2] [--stores postgres,sqlite] [--pg ADMIN_URL]

For each store: a fresh database (PostgreSQL: one this script creates and drops; SQLite: a
temporary file) gets N `echo` jobs with submit_many, then `jobd run` starts as a subprocess with
`--workers` workers and drains them.  The rate is N divided by the time from the first job's
start to the last job's finish, as the store recorded them, so the daemon's start-up is not
counted.  The daemon is then stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import postgres_database

from jobd.domain import NewJob
from jobd.store import create_store
from tests.daemon import DaemonProcess, daemon_environment

SUBMIT_CHUNK = 1000


async def fill(url: str, jobs: int) -> None:
    store = create_store(url)
    await store.open()
    try:
        await store.migrate()
        for start in range(0, jobs, SUBMIT_CHUNK):
            count = min(SUBMIT_CHUNK, jobs - start)
            await store.submit_many([NewJob("echo", {}) for _ in range(count)])
    finally:
        await store.close()


async def span(store) -> tuple:
    """(earliest started_at, latest finished_at) over every job in the store."""
    first = last = None
    cursor = None
    while True:
        page = await store.list(limit=1000, cursor=cursor)
        for job in page.jobs:
            first = job.started_at if first is None else min(first, job.started_at)
            last = job.finished_at if last is None else max(last, job.finished_at)
        if not page.next_cursor:
            return first, last
        cursor = page.next_cursor


async def drained(url: str, jobs: int, timeout: float) -> float:
    """Wait until every job completed; return first start → last finish, in seconds."""
    store = create_store(url)
    await store.open()
    try:
        deadline = time.monotonic() + timeout
        while (await store.counts()).by_state()["completed"] < jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not drained within {timeout}s")
            await asyncio.sleep(0.1)
        first, last = await span(store)
        return (last - first).total_seconds()
    finally:
        await store.close()


def run_daemon(url: str, workers: int, workdir: Path) -> DaemonProcess:
    settings = {
        "JOBD_DATABASE_URL": url,
        "JOBD_WORKERS": str(workers),
        "JOBD_SOCKET": str(workdir / "jobd.sock"),
        "JOBD_LOGGING_LEVEL": "WARNING",
    }
    env = daemon_environment(workdir, settings)
    return DaemonProcess.start(env, cwd=workdir, log_path=workdir / "jobd.log", args=["--migrate"])


async def measure(url: str, jobs: int, workers: int) -> float:
    await fill(url, jobs)
    with tempfile.TemporaryDirectory(prefix="jobd-bench") as tmp:
        daemon = run_daemon(url, workers, Path(tmp))
        try:
            seconds = await drained(url, jobs, timeout=600)
        finally:
            status = daemon.stop(60)
        if status != 0:
            raise RuntimeError(f"jobd exited {status}:\n{daemon.log_tail(2000)}")
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"{'store':<10} {'workers':>7} {'jobs':>8} {'seconds':>8} {'jobs/s':>8}")
    for kind in args.stores.split(","):
        if kind == "postgres":
            async with postgres_database(args.pg) as url:
                seconds = await measure(url, args.jobs, args.workers)
        else:
            with tempfile.TemporaryDirectory(prefix="jobd-bench") as tmp:
                seconds = await measure(f"sqlite://{tmp}/jobd.db", args.jobs, args.workers)
        rate = args.jobs / seconds
        print(f"{kind:<10} {args.workers:>7} {args.jobs:>8} {seconds:>8.2f} {rate:>8.0f}")


if __name__ == "__main__":
    asyncio.run(main())
