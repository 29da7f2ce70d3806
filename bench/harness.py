"""What bench/run.py's scenarios share: a store of the scenario's own (a schema in the run's
PostgreSQL database, or a SQLite file in the run's temporary directory), `jobd run` as a real
subprocess on it, and the queries that read what happened back from the jobs' own timestamps.

Every rate here comes from the jobs' own times: `started_at` is when a worker started the job
(the supervisor's clock, written with the next write-back batch) and `finished_at` is set by the
statement that writes the result, one clock reading per statement (PostgreSQL's now(), the
SQLite store's clock per call).  So "first start to last completion" needs nothing from the
benchmark's side, and the number of distinct `finished_at` values is the number of finish
statements: the batch size the daemon really used.  (Claim statements no longer leave a mark of
their own on the jobs, since a claimed job is not started: the claim size is not measured.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import psycopg

from jobd.client import Client
from jobd.domain import NewJob
from jobd.errors import Unavailable
from jobd.store import Store, create_store
from tests.daemon import DaemonProcess, daemon_environment, short_directory

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SUBMIT_CHUNK = 1000  # the most jobs one submit_many takes
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


_BEGAN = time.monotonic()


def progress(message: str) -> None:
    """A line on stderr, stamped with the seconds since the run began."""
    print(f"[{time.monotonic() - _BEGAN:7.1f}s]   {message}", file=sys.stderr, flush=True)


# --- a store of the scenario's own --------------------------------------------------------------


class BenchStore:
    """One scenario's jobd store, and a plain connection (autocommit) to look inside it.

    PostgreSQL: a schema of the run's database (jobd's `database.schema`), created by jobd's
    own migrations and dropped afterwards.  SQLite: a file in the run's temporary directory."""

    def __init__(self, kind: str, url: str, schema: str | None = None):
        self.kind = kind
        self.url = url
        self.schema = schema
        self._conn: Any = None

    @classmethod
    def postgres(cls, database_url: str, schema: str) -> BenchStore:
        return cls("postgres", database_url, schema)

    @classmethod
    def sqlite(cls, directory: Path, name: str) -> BenchStore:
        return cls("sqlite", f"sqlite://{directory / name}.db")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return Path(self.url.removeprefix("sqlite://"))

    def daemon_env(self) -> dict[str, str]:
        env = {"JOBD_DATABASE_URL": self.url}
        if self.schema:
            env["JOBD_DATABASE_SCHEMA"] = self.schema
        return env

    def jobd_store(self) -> Store:
        if self.kind == "postgres":
            return create_store(self.url, schema=self.schema)
        return create_store(self.url)

    # --- looking inside ------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement, written with %s placeholders for both databases."""
        conn = self._connection()
        if self.kind == "postgres":
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []
        return conn.execute(sql.replace("%s", "?"), params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.query(sql, params)[0][0]

    @property
    def all_jobs(self) -> str:
        """Where every job is: PostgreSQL moves finished jobs out of the hot `jobs` table
        (the view all_jobs has both); SQLite keeps them in place."""
        return "all_jobs" if self.kind == "postgres" else "jobs"

    def epoch(self, column: str) -> str:
        """SQL for a timestamp column as float seconds since the epoch."""
        return f"extract(epoch FROM {column})::float8" if self.kind == "postgres" else column

    def _connection(self) -> Any:
        if self._conn is None:
            if self.kind == "postgres":
                self._conn = psycopg.connect(self.url, autocommit=True)
                self._conn.execute(f'SET search_path TO "{self.schema}"; SET jit = off')
            else:
                self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        return self._conn

    def checkpoint(self) -> None:
        """Write dirty pages out before a timed phase, so a checkpoint does not land in it."""
        if self.kind == "postgres":
            self.query("CHECKPOINT")
        else:
            self.query("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def drop(self) -> None:
        """Give the space back (with autovacuum off, nothing else would)."""
        if self.kind == "postgres":
            self.query(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            self.close()
        else:
            self.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)


async def migrate(store: BenchStore) -> None:
    """jobd's own migrations: the schema the daemon runs on, exactly."""
    jobd_store = store.jobd_store()
    await jobd_store.open()
    try:
        await jobd_store.migrate()
    finally:
        await jobd_store.close()


async def fill(
    store: BenchStore,
    jobs: int,
    job_type: str = "bench_noop",
    payload: dict[str, Any] | None = None,
) -> None:
    """`jobs` pending jobs, through the store's own submit_many (what the control server's
    submit_many calls), in batches of the largest size a client may send."""
    jobd_store = store.jobd_store()
    await jobd_store.open()
    try:
        await jobd_store.migrate()
        for start in range(0, jobs, SUBMIT_CHUNK):
            count = min(SUBMIT_CHUNK, jobs - start)
            await jobd_store.submit_many([NewJob(job_type, payload or {}) for _ in range(count)])
    finally:
        await jobd_store.close()


# --- what happened, from the jobs' timestamps -------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Completed jobs: first claim to last completion, and how many statements did it."""

    jobs: int
    first_start: float
    last_finish: float
    finishes: int  # distinct finished_at values: finish statements

    @property
    def seconds(self) -> float:
        return self.last_finish - self.first_start

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("nan")

    @property
    def finish_batch(self) -> float:
        return self.jobs / self.finishes if self.finishes else float("nan")


# The jobs a benchmark submitted, not those of the schedules a daemon may run beside them.
SUBMITTED = "schedule IS NULL"


def span(store: BenchStore, after_id: int = 0) -> Span:
    """The completed jobs whose id is above `after_id`."""
    row = store.query(
        f"SELECT count(*), min({store.epoch('started_at')}), max({store.epoch('finished_at')}),"
        "       count(DISTINCT finished_at)"
        f"  FROM {store.all_jobs} WHERE id > %s AND state = 'completed' AND {SUBMITTED}",
        (after_id,),
    )[0]
    if not row[0]:
        raise RuntimeError("no completed job found")
    return Span(row[0], row[1], row[2], row[3])


def max_id(store: BenchStore) -> int:
    return int(store.scalar(f"SELECT coalesce(max(id), 0) FROM {store.all_jobs}"))


def unfinished(store: BenchStore) -> bool:
    """Any job pending or running?  Two EXISTS, so each stops at the first live entry of its
    partial index instead of counting a backlog (this is polled while the daemon works)."""
    return bool(
        store.scalar(
            f"SELECT (EXISTS (SELECT 1 FROM jobs WHERE state = 'pending' AND {SUBMITTED}))"
            f"    OR (EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND {SUBMITTED}))"
        )
    )


def completed(store: BenchStore, after_id: int = 0) -> int:
    return int(
        store.scalar(
            f"SELECT count(*) FROM {store.all_jobs}"
            f" WHERE id > %s AND state = 'completed' AND {SUBMITTED}",
            (after_id,),
        )
    )


def scheduled(store: BenchStore) -> int:
    """How many jobs the daemon's schedules created."""
    return int(store.scalar(f"SELECT count(*) FROM {store.all_jobs} WHERE schedule IS NOT NULL"))


def wait_drained(
    store: BenchStore, timeout: float, alive: Callable[[], None] = lambda: None, poll: float = 0.2
) -> None:
    """Until no job is pending or running; `alive` raises if the daemon has died meanwhile."""
    deadline = time.monotonic() + timeout
    while unfinished(store):
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still pending or running after {timeout:.0f} s")
        time.sleep(poll)


def expect_completed(found: Span, expected: int, what: str) -> None:
    """Every job must have completed: a benchmark that loses jobs measures nothing."""
    if found.jobs != expected:
        raise RuntimeError(f"{what}: {found.jobs} of {expected} jobs completed")


@dataclass(frozen=True)
class TableSize:
    dead_tuples: int | None  # PostgreSQL's pg_stat_user_tables.n_dead_tup for jobs
    live_tuples: int | None
    jobs_bytes: int  # the (hot) jobs table with its indexes and TOAST (SQLite: the whole file)
    all_bytes: int  # every table of jobd's schema (SQLite: the file and its WAL)
    vacuums: int | None = None  # VACUUMs of jobs so far, jobd's own and autovacuum's
    finished_bytes: int | None = None  # PostgreSQL's finished_jobs, with its indexes


def table_size(store: BenchStore) -> TableSize:
    """Cheap to read while the daemon works: statistics and file sizes, no scan of the table
    (a scan would also prune pages for the daemon and change what is measured)."""
    if store.kind == "postgres":
        rows = store.query(
            "SELECT relname, n_dead_tup, n_live_tup, pg_total_relation_size(relid),"
            "       vacuum_count + autovacuum_count"
            "  FROM pg_stat_user_tables WHERE schemaname = %s",
            (store.schema,),
        )
        jobs = next((r for r in rows if r[0] == "jobs"), ("jobs", None, None, 0, None))
        done = next((r[3] for r in rows if r[0] == "finished_jobs"), None)
        return TableSize(jobs[1], jobs[2], jobs[3], sum(r[3] for r in rows), jobs[4], done)
    main = _file_size(store.path)
    return TableSize(None, None, main, main + _file_size(Path(f"{store.path}-wal")))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- processes -------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size, from /proc/<pid>/statm (its second field, in pages)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent not idle since boot (/proc/stat): with
    cpu_seconds of our own processes, it tells how much of the machine other work took."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle, iowait = values[3], values[4]
    return (sum(values) - idle - iowait) / TICK


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds between two readings, by whom."""

    supervisor: float
    workers: float
    database: float | None  # jobd's PostgreSQL backends (SQLite runs inside the supervisor)
    benchmark: float  # this process: its polling of the store
    machine: float  # every CPU of the machine, busy
    others: dict[str, float]  # the rest of the machine's processes, by what they are

    @property
    def elsewhere(self) -> float:
        """CPU seconds the machine was busy with anything but this jobd and this benchmark."""
        ours = self.supervisor + self.workers + (self.database or 0.0) + self.benchmark
        return max(self.machine - ours, 0.0)


class CpuMeter:
    """Reads the CPU time of a running daemon's processes, of its PostgreSQL backends (by
    application_name, in the store's database) and of the whole machine."""

    def __init__(self, daemon: Daemon, store: BenchStore):
        self._daemon = daemon
        self._store = store
        self._workers: list[int] = []
        self._before: dict[int, float] = {}
        self._everyone: dict[int, tuple[str, float]] = {}
        self._busy = 0.0

    def start(self) -> None:
        self._workers = self._daemon.worker_pids()
        self._everyone = every_process()
        self._before = {pid: _cpu_or_zero(pid) for pid in [*self._pids(), os.getpid()]}
        self._busy = machine_busy_seconds()

    def stop(self) -> CpuUse:
        busy = machine_busy_seconds() - self._busy
        pids = [*self._pids(), os.getpid()]
        used = {pid: _cpu_or_zero(pid) - self._before.get(pid, 0.0) for pid in pids}
        backends = self._backends()
        others: dict[str, float] = {}
        for pid, (what, cpu) in every_process().items():
            if pid not in used:
                start = self._everyone.get(pid, (what, 0.0))[1]
                others[what] = others.get(what, 0.0) + cpu - start
        return CpuUse(
            supervisor=used[self._daemon.pid],
            workers=sum(used[pid] for pid in self._workers),
            database=sum(used[pid] for pid in backends) if self._store.kind == "postgres" else None,
            benchmark=used[os.getpid()],
            machine=busy,
            others=others,
        )

    def _pids(self) -> list[int]:
        return [self._daemon.pid, *self._workers, *self._backends()]

    def _backends(self) -> list[int]:
        if self._store.kind != "postgres":
            return []
        rows = self._store.query(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'jobd' AND datname = current_database()"
        )
        return [row[0] for row in rows]


def every_process() -> dict[int, tuple[str, float]]:
    """pid → (what it is, CPU seconds so far) for every process on the machine.  PostgreSQL's
    processes are told apart by their titles (checkpointer, WAL writer, a backend)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                found[int(entry)] = (_what(int(entry)), cpu_seconds(int(entry)))
    return found


def _what(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        name = f.read().strip()
    if name != "postgres":
        return name
    with open(f"/proc/{pid}/cmdline") as f:
        title = f.read().replace("\0", " ").strip()
    role = title.split(": ", 2)[-1]  # postgres: 15/main: checkpointer
    if role.startswith("postgres "):  # a backend: user database host state
        return "postgres: a backend (other than jobd's)"
    return f"postgres: {role}"


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # a backend that has gone: its time is lost, a small error


def wait_first_claim(store: BenchStore, timeout: float, alive: Callable[[], None]) -> None:
    """Until some job is running (the partial index on running jobs makes this cheap)."""
    deadline = time.monotonic() + timeout
    while not store.scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'running')"):
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no job claimed within {timeout:.0f} s")
        time.sleep(0.005)


class Daemon:
    """`jobd run --migrate` as a real subprocess (tests/daemon.py), answering on a socket in a
    directory of its own (short enough for sun_path), its log kept there; with `schedules`,
    a configuration file there declares that many (schedule_config)."""

    def __init__(
        self,
        store: BenchStore,
        workers: int,
        env: Mapping[str, str],
        schedules: int = 0,
        queues: Mapping[str, Mapping[str, object]] | None = None,
    ):
        self.directory = short_directory("jobd-bench-")
        self.socket = self.directory / "jobd.sock"
        self.log = self.directory / "jobd.log"
        self.workers = workers
        self._env = _daemon_env(store, workers, self.directory, env)
        if schedules or queues:
            config = self.directory / "jobd.yaml"
            settings = json.loads(schedule_config(schedules)) if schedules else {}
            if queues:
                settings["queues"] = queues
            config.write_text(json.dumps(settings, indent=2))
            self._env["JOBD_CONFIG"] = str(config)
        self.process: DaemonProcess | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.process = DaemonProcess.start(
            self._env, cwd=self.directory, log_path=self.log, args=["--migrate"]
        )

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the control socket answers and every worker is up."""
        assert self.process is not None
        self.process.wait_until(self._every_worker_up, what="jobd to be ready", timeout=timeout)

    def _every_worker_up(self) -> bool:
        try:
            with self.client(timeout=5) as client:
                health = client.health()
        except (Unavailable, OSError):
            return False
        return health.workers_ready >= health.workers_expected

    def worker_pids(self) -> list[int]:
        with self.client() as client:
            return [w.pid for w in client.workers() if w.pid is not None]

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, which drains; jobd must exit 0.  The directory goes only if it did."""
        if self.process is None:
            return
        code = self.process.stop(timeout)
        if code != 0:
            raise RuntimeError(f"jobd exited {code}; log in {self.log}:\n{self.log_tail()}")
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """After a failure: make sure nothing of ours is left running."""
        if self.process is not None and self.process.exit_code() is None:
            self.process.kill_all()

    def log_tail(self, chars: int = 3000) -> str:
        return self.process.log_tail(chars) if self.process else ""

    def check_alive(self) -> None:
        code = self.process.exit_code() if self.process else None
        if code is not None:
            raise RuntimeError(f"jobd exited {code}:\n{self.log_tail()}")


def _daemon_env(
    store: BenchStore, workers: int, home: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """A clean environment (tests/daemon.py), then --daemon-env, then what the scenario
    needs (which wins: a scenario with 1 worker must get 1 worker)."""
    settings = {
        **extra,
        **store.daemon_env(),
        "JOBD_SOCKET": str(home / "jobd.sock"),
        "JOBD_WORKERS": str(workers),
        # bench/ itself must not go on the path: bench/http.py would shadow the stdlib's http.
        "JOBD_HANDLER_MODULES": "bench.bench_handlers",
    }
    return daemon_environment(home, settings)


#: What each of --schedules' schedules submits: a type no scenario submits, every second.
SCHEDULE_EVERY = "1s"
SCHEDULE_TYPE = "bench_tick"


def schedule_config(count: int) -> str:
    """A configuration file declaring `count` schedules of SCHEDULE_TYPE (JSON is YAML)."""
    schedules = {
        f"bench-{n}": {"every": SCHEDULE_EVERY, "type": SCHEDULE_TYPE} for n in range(count)
    }
    return json.dumps({"schedules": schedules}, indent=2)


@contextmanager
def running(
    store: BenchStore,
    workers: int,
    env: Mapping[str, str],
    *,
    ready: bool = True,
    schedules: int = 0,
    queues: Mapping[str, Mapping[str, object]] | None = None,
) -> Iterator[Daemon]:
    """A started daemon (every worker up, unless ready=False), stopped afterwards."""
    daemon = Daemon(store, workers, env, schedules, queues)
    daemon.start()
    try:
        if ready:
            daemon.wait_ready()
        yield daemon
    except BaseException:
        daemon.kill()
        print(f"  jobd's log is in {daemon.log}", file=sys.stderr)
        raise
    daemon.stop()


# --- profiles ----------------------------------------------------------------------------------


class Profiler:
    """py-spy sampling one process (the supervisor) into a collapsed-stacks file, without
    pausing it (--nonblocking), active samples only: where its CPU goes, not where it waits."""

    def __init__(self, pid: int, path: Path, rate: int = 100):
        self._command = ["py-spy", "record", "--nonblocking", "-r", str(rate), "-f", "raw"]
        self._command += ["-o", str(path), "-p", str(pid)]
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if shutil.which("py-spy") is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(0.2)  # attached before the work starts in earnest
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self._process.wait(60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# The frames every stack of the main thread starts with: no news.
_ENTRY = {"<module> (jobd/cli.py)", "run (jobd/cli.py)", "run (jobd/daemon.py)"}


def profile_summary(path: Path, top: int = 12) -> list[str]:
    """Markdown: the share of samples by package of the innermost frame, and the jobd
    functions with the most samples under them."""
    by_package: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        package = _package(frames[-1])
        by_package[package] = by_package.get(package, 0) + n
        for name in {f.rpartition(":")[0] + ")" for f in frames if "(jobd/" in f} - _ENTRY:
            under[name] = under.get(name, 0) + n
    if not total:
        return ["(no samples)"]
    lines = ["| innermost frame in | share |", "|---|---:|"]
    for package, n in sorted(by_package.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {package} | {100 * n / total:.0f}% |")
    lines += ["", "| jobd function (samples in it or below) | share |", "|---|---:|"]
    for name, n in sorted(under.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| `{name}` | {100 * n / total:.0f}% |")
    return [f"{total:,} samples (100 a second while on CPU)", "", *lines]


def _package(frame: str) -> str:
    """`func (psycopg/cursor.py:12)` → psycopg; the standard library's by module."""
    where = frame.rpartition("(")[2].rstrip(")").rpartition(":")[0]
    top = where.split("/")[0] if "/" in where else where.removesuffix(".py")
    return top or "?"


# --- small statistics ------------------------------------------------------------------------


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> list[float]:
    """Linear-interpolated percentiles (statistics.quantiles, inclusive)."""
    if len(values) < 2:
        return [values[0] if values else float("nan")] * len(points)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in points]


def timed(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began
