"""The machine's own hops, timed before the scenarios: what jobd's figures are made of.

A job crosses a pipe between processes (supervisor and worker), a wake-up between threads (the
control server's, the supervisor's loop and its I/O thread) and PostgreSQL round trips and
commits.  Two machines that print the same CPU model spent 2.5 times apart in CPU per job on
the same code (docs/benchmarks.md, "The same code on a faster machine, and the machine's
hops"): a figure from one machine is read against these medians, not another machine's.
"""

from __future__ import annotations

import os
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

ROUND_TRIPS = 2000  # per hop: the median of this many, a fraction of a second each
ECHO_TIMEOUT = 5.0  # seconds one round trip may take before the probe gives up


@dataclass(frozen=True)
class Hops:
    # A one-byte pipe round trip between two processes, and a queue round trip between two
    # threads, each with both ends on one CPU and with each end on a CPU of its own: on a
    # virtual machine the wake-up of another CPU can cost ten to thirty times a switch on one.
    process_one_cpu_us: float
    process_two_cpus_us: float | None  # None: one CPU only
    thread_one_cpu_us: float
    thread_two_cpus_us: float | None
    select_ms: float | None  # `SELECT 1` on a fresh connection (None: no PostgreSQL run)
    commit_ms: float | None  # a transaction that wrote WAL committed (None: not allowed)

    def text(self) -> str:
        line = (
            f"hops, medians of {ROUND_TRIPS:,} round trips, on one CPU / across two:"
            f" a pipe between processes {_us(self.process_one_cpu_us)} /"
            f" {_us(self.process_two_cpus_us)}, a queue between threads"
            f" {_us(self.thread_one_cpu_us)} / {_us(self.thread_two_cpus_us)}"
        )
        if self.select_ms is not None:
            commit = "—" if self.commit_ms is None else f"{self.commit_ms:.3f} ms"
            line += f"; PostgreSQL `SELECT 1` {self.select_ms:.3f} ms, a commit flushed {commit}"
        return line


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} µs"


def measure(admin_url: str | None) -> Hops:
    """Each hop's median round trip; the database's on `admin_url` when given."""
    cpus = sorted(os.sched_getaffinity(0))
    two = (cpus[0], cpus[1]) if len(cpus) > 1 else None
    select_ms = commit_ms = None
    if admin_url is not None:
        select_ms, commit_ms = _postgres(admin_url)
    return Hops(
        _process_round_trip_us((cpus[0], cpus[0])),
        _process_round_trip_us(two) if two else None,
        _thread_round_trip_us((cpus[0], cpus[0])),
        _thread_round_trip_us(two) if two else None,
        select_ms,
        commit_ms,
    )


@contextmanager
def _pinned(cpu: int) -> Iterator[None]:
    """The calling thread on `cpu` alone for the block (Linux sets affinity per thread)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _process_round_trip_us(cpus: tuple[int, int]) -> float:
    ping_r, ping_w = os.pipe()
    pong_r, pong_w = os.pipe()
    child = os.fork()
    if child == 0:  # echo every byte back until the parent closes its end
        status = 1  # the parent then reads the end of the pipe, and says so
        try:
            os.close(ping_w)  # else the child holds the pipe open and never reads its end
            os.close(pong_r)
            os.sched_setaffinity(0, {cpus[1]})
            while os.read(ping_r, 1):
                os.write(pong_w, b".")
            status = 0
        finally:
            os._exit(status)
    os.close(ping_r)
    os.close(pong_w)
    try:
        with _pinned(cpus[0]):
            times = []
            for _ in range(ROUND_TRIPS):
                began = time.perf_counter()
                os.write(ping_w, b".")
                if not os.read(pong_r, 1):
                    raise RuntimeError("hops: the echoing process ended early")
                times.append(time.perf_counter() - began)
    finally:
        os.close(ping_w)
        os.close(pong_r)
        os.waitpid(child, 0)
    return statistics.median(times) * 1e6


def _thread_round_trip_us(cpus: tuple[int, int]) -> float:
    ping: queue.SimpleQueue[bool] = queue.SimpleQueue()
    pong: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def echo() -> None:
        try:
            with _pinned(cpus[1]):
                while ping.get():
                    pong.put(True)
        finally:
            pong.put(False)  # a failure here ends the timing instead of hanging it

    thread = threading.Thread(target=echo, name="hops-echo", daemon=True)
    thread.start()
    try:
        with _pinned(cpus[0]):
            times = []
            for _ in range(ROUND_TRIPS):
                began = time.perf_counter()
                ping.put(True)
                if not pong.get(timeout=ECHO_TIMEOUT):
                    raise RuntimeError("hops: the echoing thread ended early")
                times.append(time.perf_counter() - began)
    finally:
        ping.put(False)
        thread.join(ECHO_TIMEOUT)
    return statistics.median(times) * 1e6


def _postgres(admin_url: str) -> tuple[float, float | None]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        selects, commits = [], []
        for _ in range(ROUND_TRIPS):
            began = time.perf_counter()
            conn.execute("SELECT 1")
            selects.append(time.perf_counter() - began)
        # A transactional WAL message makes the commit wait for its flush, as a job's write
        # does, and leaves no table behind in the admin database (txid_current() alone
        # would not: a commit that wrote no WAL before its record is not flushed).
        try:
            for _ in range(ROUND_TRIPS):
                began = time.perf_counter()
                conn.execute("SELECT pg_logical_emit_message(true, 'jobd-bench-hops', '')")
                commits.append(time.perf_counter() - began)
        except psycopg.errors.InsufficientPrivilege:  # revoked here: not timed, not fatal
            return statistics.median(selects) * 1e3, None
    return statistics.median(selects) * 1e3, statistics.median(commits) * 1e3
