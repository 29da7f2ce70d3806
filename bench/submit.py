"""Submits per second through the control socket: `submit` one job at a time, from one client
and from several at once, and `submit_many` in batches.

    python bench/submit.py [--jobs N] [--clients 1,8] [--batch 1000] [--pg ADMIN_URL]
    python bench/submit.py --socket /run/jobd/jobd.sock     # a daemon that is already running

Without --socket: a database of its own (created and dropped, as bench/store.py does) and a
`jobd run --migrate` subprocess with 2 workers on it, stopped with SIGTERM at the end.  Every
job is submitted with a delay of a day, so the workers never claim one: this measures the
submit path alone (client, socket, protocol, server, one store transaction per call), not the
running of jobs (bench/e2e.py does that).  Against a daemon given with --socket, the jobs are
canceled afterwards.

Each `submit` is one round trip and one PostgreSQL commit, so one client is bound by the
commit's latency; several clients overlap their commits.  `submit_many` puts a whole batch in
one commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import postgres_database

from jobd.client import Client
from tests.daemon import DaemonProcess, answers, daemon_environment, short_directory

DELAY = 86400.0  # out of the workers' reach for the whole run


@dataclass(frozen=True)
class Result:
    method: str
    clients: int
    batch: int
    jobs: int
    seconds: float
    #: The daemon's CPU time (all its threads) meanwhile; None for a daemon given with --socket.
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else float("inf")

    @property
    def cpu_per_thousand(self) -> str:
        if self.cpu_seconds is None:
            return "—"
        return f"{1000 * self.cpu_seconds / self.jobs * 1000:.1f}"


#: Reads a process's CPU seconds so far (None: not measured).
CpuClock = Callable[[], float] | None


def process_cpu(pid: int) -> Callable[[], float]:
    """The CPU seconds (user + system, all threads) process `pid` has used so far."""

    def read() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return read


def submit_one_at_a_time(
    socket: Path, jobs: int, clients: int, queue: str, cpu: CpuClock = None
) -> Result:
    """`jobs` submits spread over `clients` threads, each with its own connection."""
    shares = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]

    def one_client(count: int) -> int:
        with Client(socket) as client:
            client.hello()  # connected before the clock starts mattering
            for i in range(count):
                client.submit("echo", {"i": i}, queue=queue, delay=DELAY)
        return count

    return _timed("submit", clients, 1, lambda: _in_threads(one_client, shares), cpu)


def submit_in_batches(
    socket: Path, jobs: int, batch: int, queue: str, cpu: CpuClock = None
) -> Result:
    def run() -> int:
        done = 0
        with Client(socket) as client:
            while done < jobs:
                count = min(batch, jobs - done)
                specs = [
                    {"type": "echo", "payload": {"i": done + i}, "queue": queue, "delay": DELAY}
                    for i in range(count)
                ]
                done += len(client.submit_many(specs))
        return done

    return _timed("submit_many", 1, batch, run, cpu)


def _in_threads(fn: Callable[[int], int], shares: list[int]) -> int:
    with ThreadPoolExecutor(len(shares)) as pool:
        return sum(pool.map(fn, shares))


def _timed(
    method: str, clients: int, batch: int, run: Callable[[], int], cpu: CpuClock = None
) -> Result:
    cpu_began = cpu() if cpu else 0.0
    began = time.perf_counter()
    jobs = run()
    seconds = time.perf_counter() - began
    cpu_seconds = cpu() - cpu_began if cpu else None
    rate = jobs / seconds
    print(f"  {method}, {clients} clients, batch {batch}: {rate:,.0f} jobs/s", file=sys.stderr)
    return Result(method, clients, batch, jobs, seconds, cpu_seconds)


def cancel_queue(socket: Path, queue: str) -> None:
    with Client(socket) as client:
        for job in list(client.iter_jobs(queue=queue, state="pending")):
            client.cancel(job.id)


@contextmanager
def daemon(url: str, workers: int = 2) -> Iterator[tuple[Path, int]]:
    """`jobd run --migrate` on `url`, answering on a socket in a directory of its own: the
    socket and the daemon's pid."""
    directory = short_directory()
    socket = directory / "jobd.sock"
    settings = {
        "JOBD_DATABASE_URL": url,
        "JOBD_SOCKET": str(socket),
        "JOBD_WORKERS": str(workers),
        "JOBD_LOGGING_LEVEL": "WARNING",
    }
    env = daemon_environment(directory, settings)
    process = DaemonProcess.start(
        env, cwd=directory, log_path=directory / "jobd.log", args=["--migrate"]
    )
    try:
        process.wait_until(lambda: answers(socket), what="jobd to answer")
        yield socket, process.pid
    finally:
        code = process.stop(60)
        if code != 0:
            print(f"jobd exited {code}; its log is in {directory}", file=sys.stderr)


def run_all(socket: Path, args: argparse.Namespace, cpu: CpuClock = None) -> list[Result]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    results = [
        submit_one_at_a_time(socket, args.jobs, clients, queue, cpu) for clients in args.clients
    ]
    results.append(submit_in_batches(socket, args.batch_jobs, args.batch, queue, cpu))
    if args.socket:
        cancel_queue(socket, queue)
    return results


def print_table(results: list[Result]) -> None:
    print(
        f"{'method':<12} {'clients':>7} {'batch':>6} {'jobs':>7} {'seconds':>8} {'jobs/s':>9}"
        f" {'daemon CPU ms / 1,000 jobs':>27}"
    )
    for r in results:
        print(
            f"{r.method:<12} {r.clients:>7} {r.batch:>6} {r.jobs:>7} {r.seconds:>8.2f}"
            f" {r.rate:>9,.0f} {r.cpu_per_thousand:>27}"
        )


async def main(args: argparse.Namespace) -> int:
    if args.socket:
        results = run_all(Path(args.socket), args)
    else:
        async with postgres_database(args.pg) as url:
            with daemon(url) as (socket, pid):
                results = await asyncio.to_thread(run_all, socket, args, process_cpu(pid))
    print_table(results)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per submit run (2000)")
    parser.add_argument(
        "--clients",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1, 8],
        help="comma-separated numbers of concurrent clients for `submit` (default 1,8)",
    )
    parser.add_argument("--batch", type=int, default=1000, help="submit_many batch (1000)")
    parser.add_argument(
        "--batch-jobs", type=int, default=20000, help="jobs through submit_many (20000)"
    )
    parser.add_argument("--socket", help="use the daemon listening here instead of starting one")
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL allowed to CREATE DATABASE (default: local, as postgres)",
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.batch, args.batch_jobs, *args.clients) < 1 or args.batch > 1000:
        parser.error("every count must be positive, and --batch at most 1000")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
