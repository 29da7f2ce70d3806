"""Requests per second through the HTTP shim: POST /jobs and GET /jobs/{id}, with concurrent
clients, against `jobd run` on PostgreSQL with the shim as its child (as deployed).

    python bench/http.py [--clients 1,4,16] [--requests 400] [--max-seconds 15] [--pg ADMIN_URL]

A fresh database (created and dropped here), `jobd run --migrate` with http.listen on a free
loopback port and one worker.  Each client is a process of its own (so the clients' GIL is not
what is measured) with one keep-alive connection; all start together, each sends `--requests`
requests or stops at `--max-seconds`, whichever comes first.  req/s is every client's requests
divided by the time from the start to the last client's end.  Submitted jobs carry a one-day
delay, so the daemon's workers do not compete with the shim for the CPU: this measures the
HTTP path and the store's insert, not job execution (bench/e2e.py does that).

The same operations through `jobd.Client` on the control socket are measured too, as the
baseline the shim adds its cost to.  Loopback only.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py, and Python puts its folder first on sys.path: `import http.client`
# would find this file instead of the standard library's package.  So the folder goes to the
# end of the path (bench/store.py is still found) before anything imports `http`.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))  # run from a checkout
sys.path.append(str(HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from store import postgres_database  # noqa: E402

from jobd.client import Client  # noqa: E402
from tests.daemon import DaemonProcess, daemon_environment  # noqa: E402

START_TIMEOUT = 60.0
BODY = json.dumps({"type": "echo", "payload": {"n": 1}, "delay": 86400}).encode()


@dataclass
class Outcome:
    requests: int
    errors: int
    ended: float  # time.monotonic(), comparable across processes on Linux
    latencies: list[float]


@dataclass
class Row:
    operation: str
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    def line(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        p50 = statistics.median(self.latencies) * 1000 if self.latencies else 0.0
        p99 = _percentile(self.latencies, 0.99) * 1000
        return (
            f"| {self.operation} | {self.clients} | {self.requests:,} | {self.errors} |"
            f" {self.seconds:.2f} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |"
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the clients ----------------------------------------------------------------------------


def http_client(
    port: int, operation: str, ids: list[int], count: int, deadline: float
) -> Callable[[int], bool]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}

    def one(i: int) -> bool:
        if operation == "POST /jobs":
            conn.request("POST", "/jobs", body=BODY, headers=headers)
            expected = 201
        else:
            conn.request("GET", f"/jobs/{ids[i % len(ids)]}")
            expected = 200
        response = conn.getresponse()
        response.read()
        return response.status == expected

    return one


def socket_client(
    socket_path: str, operation: str, ids: list[int], count: int, deadline: float
) -> Callable[[int], bool]:
    client = Client(socket_path)

    def one(i: int) -> bool:
        if operation == "submit (socket)":
            client.submit("echo", {"n": 1}, delay=86400)
        else:
            client.get(ids[i % len(ids)])
        return True

    return one


def client_process(
    target: str, operation: str, ids: list[int], count: int, max_seconds: float, go, results
) -> None:
    make = socket_client if target.startswith("/") else http_client
    address = target if target.startswith("/") else int(target)
    one = make(address, operation, ids, count, 0.0)
    one(0)  # warm up: connect before the clock starts
    results.put("ready")
    go.wait()
    deadline = time.monotonic() + max_seconds
    latencies, errors, done = [], 0, 0
    while done < count and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            ok = one(done)
        except Exception:
            ok = False
        latencies.append(time.monotonic() - started)
        errors += not ok
        done += 1
    results.put(Outcome(done, errors, time.monotonic(), latencies))


def measure(
    target: str, operation: str, clients: int, ids: list[int], count: int, max_seconds: float
) -> Row:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    processes = [
        context.Process(
            target=client_process,
            args=(target, operation, ids, count, max_seconds, go, results),
        )
        for _ in range(clients)
    ]
    for p in processes:
        p.start()
    for _ in processes:  # every client connected and warmed up: not measured
        assert results.get(timeout=60) == "ready"
    started = time.monotonic()
    go.set()
    outcomes = [results.get(timeout=max_seconds + 60) for _ in processes]
    for p in processes:
        p.join(30)
    return Row(
        operation,
        clients,
        sum(o.requests for o in outcomes),
        sum(o.errors for o in outcomes),
        max(o.ended for o in outcomes) - started,
        [latency for o in outcomes for latency in o.latencies],
    )


# --- the daemon ---------------------------------------------------------------------------------


def start_daemon(url: str, workdir: Path) -> tuple[DaemonProcess, int, Path]:
    """`jobd run` with its HTTP child on a free loopback port; (daemon, port, socket)."""
    socket_path = workdir / "jobd.sock"
    settings = {
        "JOBD_DATABASE_URL": url,
        "JOBD_WORKERS": "1",
        "JOBD_SOCKET": str(socket_path),
        "JOBD_HTTP_LISTEN": "127.0.0.1:0",
        "JOBD_LOGGING_LEVEL": "INFO",
        "JOBD_LOGGING_FORMAT": "json",
    }
    env = daemon_environment(workdir, settings)
    daemon = DaemonProcess.start(
        env, cwd=workdir, log_path=workdir / "jobd.log", args=["--migrate"]
    )
    try:
        port = daemon.wait_until(lambda: _shim_port(daemon.log()), what="jobd run's HTTP shim")
    except AssertionError:
        daemon.kill_all()
        raise
    return daemon, port, socket_path


def _shim_port(log: str) -> int | None:
    """The port of the "http shim listening" line, once it is logged."""
    for line in log.splitlines():
        if '"http shim listening"' in line:
            listen = json.loads(line)["listen"]
            host, port = listen.rsplit(":", 1)
            assert host == "127.0.0.1", f"not loopback: {listen}"
            return int(port)
    return None


def job_ids(port: int, count: int) -> list[int]:
    """Some jobs to read back (submitted before any measurement)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ids = []
    for _ in range(count):
        conn.request("POST", "/jobs", body=BODY, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        ids.append(json.loads(response.read())["id"])
    conn.close()
    return ids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels, comma-separated")
    parser.add_argument("--requests", type=int, default=400, help="requests per client")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="per measurement")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-baseline", action="store_true", help="skip the control socket")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    rows: list[Row] = []
    async with postgres_database(args.pg) as url:
        with tempfile.TemporaryDirectory(prefix="jobd-bench-http", dir="/tmp") as tmp:
            daemon, port, socket_path = start_daemon(url, Path(tmp))
            try:
                ids = job_ids(port, 200)
                targets = [(str(port), "POST /jobs"), (str(port), "GET /jobs/{id}")]
                if not args.no_baseline:
                    sock = str(socket_path)
                    targets += [(sock, "submit (socket)"), (sock, "get (socket)")]
                for target, operation in targets:
                    for clients in levels:
                        row = measure(
                            target, operation, clients, ids, args.requests, args.max_seconds
                        )
                        rows.append(row)
                        print(row.line(), file=sys.stderr, flush=True)
            finally:
                status = daemon.stop(60)
            if status != 0:
                raise RuntimeError(f"jobd run exited {status}")
    print(
        f"\n{os.cpu_count()} CPUs; {args.requests} requests per client at most, "
        f"{args.max_seconds:g} s at most per row\n"
    )
    print("| operation | clients | requests | errors | seconds | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row.line())


if __name__ == "__main__":
    asyncio.run(main())
