"""The chaos harness: N jobs, 1-3 `jobd run` nodes on one PostgreSQL, faults injected at random
times from a seed, and at the end the invariants jobd promises, checked from the database, the
handlers' append-only run log and the nodes' logs.

    python -m tests.chaos --jobs 5000 --seed 1 --daemons 3
    python tests/chaos/run.py --jobs 300 --seed 7 --daemons 2 --faults worker_kill,cancel
    python -m tests.chaos --jobs 5000 --seed 1 --workflows 0.3   # a share in workflows

What happens (docs/guarantees.md has the promises this checks):

1. A fresh database (or, inside pytest, a fresh schema) and `--daemons` nodes, each a real
   `jobd run --migrate` subprocess with short leases (jobs.lease_seconds 3).
2. A submitter thread sends the N jobs in `submit_many` chunks to random nodes over the first
   seconds of the run, each with an idempotency key, and sends a chunk again (to another node)
   whenever the answer is lost, so no submit is lost or doubled whatever dies meanwhile.  The
   jobs are a seeded mix of the kinds in chaos_handlers.py: instant, slow, flaky, crash_once
   (its first attempt kills its worker), timeout_once (its first attempt overruns its timeout),
   permanent (fails for good) and poison (kills its worker every time).  With --workflows,
   a share of them wait for earlier jobs (`after`; workflows.py checks what that promises).
3. Meanwhile faults come at exponentially distributed intervals, their kinds drawn from the
   seed, each enabled kind at least once:
      worker_kill      SIGKILL of a random (preferably busy) worker of a random node
      supervisor_kill  SIGKILL of a node's `jobd run`, then a restart (its leases expire)
      drain_restart    SIGTERM of a node (drain; it must exit 0), then a restart
      pg_terminate     pg_terminate_backend() of every jobd connection to the database
      db_outage        the database unreachable from every node (an outage) or from one (a
                       partition) for 0.3 s to twice the lease: each node reaches it through a
                       TCP proxy of its own (tests/tcp_proxy.py), which is cut -- connections
                       dropped, new ones refused -- then restored
      db_blackhole     the database hangs for one node or for all, in turn, for 10-60 s:
                       the node's proxy keeps its connections open and lets nothing through,
                       then delivers what it held; the held nodes are probed meanwhile
                       (probe.py) and what they said is a note of the report
      stale_write      a write-back whose answer was lost, sent again once its job runs
                       under a newer claim (stale_writes.py): it must change nothing
      cancel           cancel of 1-4 random jobs, running ones preferred
      pg_restart       `pg_ctlcluster --skip-systemctl-redirect <ver> <cluster> restart`, only
                       with --pg-restart: it restarts a whole PostgreSQL server.  Never in the
                       suite (other things use the machine's server).  By hand, point the
                       harness at a cluster of its own:
                           pg_createcluster 15 chaos -p 5433 -- --auth-host=trust
                           pg_ctlcluster 15 chaos start
                           python -m tests.chaos --pg-restart --pg-cluster 15/chaos \
                               --admin-url postgresql://postgres@127.0.0.1:5433/postgres
                           pg_dropcluster --stop 15 chaos
4. Once everything is submitted and most jobs are finished, the faults stop, every node is up,
   and the harness waits (with a deadline) for every job to be terminal, reads each node's
   counters (retrying for a few seconds if the node's store is unavailable: a client may retry
   a read), stops the nodes with SIGTERM (each must exit 0) and checks.

The harness's own look-ups (progress, running jobs, the final rows, the stale write-backs) go
straight to the database, never through the nodes' proxies.

The invariants (each a line of `Report.violations` when broken):
- lost: every acknowledged job is in the database; every job of a kind that succeeds and that
  nobody tried to cancel ended `completed` with its own result.  (Such jobs get 8 attempts more
  than they need, and workers.max_crashes is 8, so the faults cannot use their attempts up.)
- stuck: no job is `waiting`, `pending` or `running` at the end, and none still holds a lease.
- outcomes: permanent and poison jobs ended `failed`; a `canceled` job had a cancel sent.
- attempts: no job's attempts exceed its max_attempts, in the database or in the run log.
- duplicates: a job's *effect* line (`done`, or `perm` for a permanent job) appears once.  A
  job whose effect appears again ran more than once; that is allowed only where jobd could
  not have known the first run finished:
    * its lease was lost: a node logged "recovered a job whose lease expired" or "result
      discarded: the job's lease was lost" for it (each such line explains one duplicate), or
      the first effect ran under a supervisor the harness SIGKILLed (its outcome died with it);
    * the worker that wrote the first effect was SIGKILLed by the harness after writing it
      (the result never left the worker).
  Anything else is an unexplained duplicate.  Two runs of one job at the same time are
  checked the same way.
- finished once: each terminal job was finished ("job completed/failed/canceled", or recovered
  to a terminal state) by exactly one node's log entry: never two.  None is allowed only when
  a supervisor was SIGKILLed (it may die between the write and the log line).
- metrics: each node alive at the end reports counters equal to its own log's job events; and
  the database's count of each terminal state equals the sum over every boot of every node
  (counters for the last boots, log events for earlier ones) -- exactly when no supervisor was
  SIGKILLed (a killed node's counters are gone), as an upper bound otherwise.
- processes: no node dies unasked; every drain exits 0; no node logs a bug ("control method
  failed", "side task died", ...).
- fencing: no stale write-back sent by the stale_write fault changed a row (with
  --strip-fence the harness sends them without their fence, and the run must fail).

Summary line: jobs, faults by kind, lost, stuck, duplicates (and how many unexplained), time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from jobd.client import Client
from jobd.errors import Conflict, JobdError, Unavailable
from tests.daemon import DaemonProcess, DaemonStuck, answers, daemon_environment, short_directory
from tests.tcp_proxy import TcpProxy

from . import workflows
from .probe import probe
from .stale_writes import Replay, replay_one

HERE = Path(__file__).resolve().parent

DEFAULT_ADMIN_URL = os.environ.get(
    "JOBD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

FAULTS: tuple[str, ...] = (
    "worker_kill",
    "supervisor_kill",
    "drain_restart",
    "pg_terminate",
    "db_outage",
    "cancel",
    "stale_write",
    "db_blackhole",
)
OPTIONAL_FAULTS = ("pg_restart",)
FAULT_WEIGHTS = {
    "cancel": 30,
    "worker_kill": 25,
    "stale_write": 15,
    "pg_terminate": 10,
    "db_outage": 6,
    "db_blackhole": 2,
    "drain_restart": 13,
    "supervisor_kill": 12,
    "pg_restart": 5,
}

# kind -> (weight, expected final state, extra attempts it needs)
KINDS: dict[str, tuple[float, str]] = {
    "instant": (56.0, "completed"),
    "slow": (10.0, "completed"),
    "flaky": (15.0, "completed"),
    "crash_once": (6.0, "completed"),
    "timeout_once": (4.0, "completed"),
    "permanent": (8.5, "failed"),
    "poison": (0.5, "failed"),
}
SPARE_ATTEMPTS = 8  # attempts beyond what a succeeding job needs: faults may spend them
MAX_CRASHES = 8  # workers.max_crashes on the nodes (a poison job runs this many times)
TIMEOUT_SECONDS = 0.4  # the timeout_once kind's timeout
# A run whose effect came at most this long before its supervisor was SIGKILLed may have had
# its outcome die with the supervisor (outcomes are written within milliseconds, or retried
# for as long as the database is away: a few seconds in these runs).
KILL_WINDOW = 10.0
# db_outage faults, in turn: (longer than the lease?, one node only?)
DB_OUTAGES = ((True, True), (False, False), (True, False), (False, True))

# db_blackhole faults: how long the database hangs, and whether for one node only (in turn)
BLACKHOLE_SECONDS = (10.0, 60.0)
BLACKHOLE_ALONE = (True, False)
STALE_WRITE_WAIT = 10.0  # how long a stale_write fault waits for a running job
FINAL_STATS_SECONDS = 10.0  # the final `stats` is retried this long (a client may retry a read)

# Events in the nodes' logs (logging.job_events on) and the counter each moves.
JOB_EVENTS = {f"job {e}": e for e in ("submitted", "started", "completed", "failed", "canceled")}
JOB_EVENTS |= {f"job {e}": e for e in ("retried", "released", "requeued")}
RECOVERED = "recovered a job whose lease expired"
DISCARDED = "result discarded: the job's lease was lost"
COUNTED: tuple[str, ...] = ("submitted", "started", "completed", "failed", "canceled")
COUNTED += ("retried", "released", "recovered")
TERMINAL = ("completed", "failed", "canceled")
BUG_MESSAGES = (
    "control method failed",
    "control connection failed",
    "control reply is not JSON",
    "side task died; draining",
    "error while serving a connection",
)


@dataclass
class Settings:
    jobs: int = 150
    seed: int = 1
    daemons: int = 2
    workers: int = 2
    faults: tuple[str, ...] = FAULTS
    fault_interval: float = 1.0  # mean seconds between faults
    lease: float = 3.0
    submit_seconds: float | None = None  # spread the submits over this long
    stop_faults_at: float = 0.9  # stop injecting once this share of jobs is finished
    max_fault_seconds: float = 600.0
    settle_timeout: float = 120.0
    admin_url: str = DEFAULT_ADMIN_URL
    pg_cluster: str | None = None  # VERSION/NAME for pg_restart (None: the newest's "main")
    db_url: str | None = None  # None: create a database of our own, dropped afterwards
    schema: str = "jobd"
    workdir: Path | None = None
    keep: bool = False
    verbose: bool = False
    # False only to prove the stale_write check: the harness's replays are sent with the
    # fence stripped, and the run must fail (stale_writes.py).  Nothing in jobd reads it.
    fenced: bool = True
    workflows: float = 0.0  # the share of jobs submitted `after` earlier ones (workflows.py)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Incarnation:
    """One boot of a node: one `jobd run` process."""

    tag: str
    daemon: DaemonProcess
    started: float
    ended: str | None = None  # "killed" | "drained" | "stopped" | "died"
    ended_at: float | None = None
    exit_code: int | None = None
    counters: dict[str, int] | None = None  # the final stats counters (last boots only)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.daemon.process

    @property
    def log(self) -> Path:
        return self.daemon.log_path


@dataclass
class Node:
    name: str
    socket: Path
    env: dict[str, str]
    home: Path
    proxy: TcpProxy  # the node's way to the database, cut by db_outage
    boots: list[Incarnation] = field(default_factory=list)

    @property
    def current(self) -> Incarnation:
        return self.boots[-1]

    def alive(self) -> bool:
        return bool(self.boots) and self.current.proc.poll() is None

    def client(self, timeout: float = 20.0) -> Client:
        return Client(self.socket, timeout=timeout)


def _proc_title(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = _parent(pid)
        if pid == ancestor:
            return True
    return False


def worker_pids(supervisor_pid: int) -> list[tuple[int, bool]]:
    """(pid, busy) of each worker under a supervisor, from the process titles."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        title = _proc_title(pid)
        if title.startswith("jobd: worker ") and _descends_from(pid, supervisor_pid):
            out.append((pid, " running " in title))
    return out


# --- the run ----------------------------------------------------------------------------------


@dataclass
class PlannedJob:
    index: int
    kind: str
    key: str
    params: dict[str, Any]
    id: int | None = None
    parents: list[int] = field(default_factory=list)  # plan indexes (workflows.py)
    policy: str = "cancel"  # its on_parent_failure


@dataclass
class Report:
    settings: Settings
    jobs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    stuck: int = 0
    duplicates: int = 0
    unexplained_duplicates: int = 0
    duplicate_reasons: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    dependents: int = 0  # jobs submitted `after` others (--workflows)
    states: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors_logged: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        faults = ",".join(f"{k}={self.faults[k]}" for k in sorted(self.faults)) or "none"
        reasons = ",".join(f"{k}={v}" for k, v in sorted(self.duplicate_reasons.items()))
        dups = f"duplicates={self.duplicates}"
        if self.duplicates:
            dups += f" (lease lost: {reasons}; unexplained={self.unexplained_duplicates})"
        verdict = "OK" if self.ok else f"FAILED ({len(self.violations)} violations)"
        return (
            f"chaos seed={self.settings.seed} jobs={self.jobs} daemons={self.settings.daemons}"
            f" faults[{faults}] lost={self.lost} stuck={self.stuck} {dups}"
            f"{f' dependents={self.dependents}' if self.dependents else ''}"
            f" wall={self.wall:.1f}s {verdict}"
        )


class Chaos:
    def __init__(self, settings: Settings):
        self.s = settings
        self.plan_rng = random.Random(settings.seed)
        self.fault_rng = random.Random(settings.seed * 7919 + 1)
        self.report = Report(settings)
        self.lock = threading.Lock()
        self.nodes: list[Node] = []
        self.plan: list[PlannedJob] = []
        self.submitted_all = threading.Event()
        self.stop = threading.Event()
        self.worker_kills: list[tuple[float, int, str]] = []  # (time, pid, incarnation)
        self.cancels: dict[int, str] = {}  # job id -> accepted | conflict | unknown
        self.db_partitions = 0  # db_outage faults that cut one node only
        self.replays: list[Replay] = []  # stale write-backs sent (stale_write)
        self.owners: set[str] = set()  # the lease owners the stale_write fault has seen
        self.started_at = 0.0
        self._own_db: str | None = None
        self._tmp: Path | None = None
        self.db_port = 0

    # --- set-up ---------------------------------------------------------------------------

    def run(self) -> Report:
        self.started_at = time.monotonic()
        self._tmp = self.s.workdir or Path(tempfile.mkdtemp(prefix="jobd-chaos-"))
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.runlog = self._tmp / "runs.log"
        self.runlog.touch()
        try:
            self._prepare_database()
            self.db_port = int(self.db_url.rpartition(":")[2].split("/")[0])
            self._plan()
            for i in range(self.s.daemons):
                self.nodes.append(self._node(f"n{i + 1}"))
            for node in self.nodes:
                self._boot(node)
            self._chaos()
            self._settle()
            self._stop_nodes()
            self._check()
        finally:
            self.stop.set()
            self._kill_leftovers()
            for node in self.nodes:
                node.proxy.close()
            self.report.wall = time.monotonic() - self.started_at
            self._clean_up()
        return self.report

    def _prepare_database(self) -> None:
        if self.s.db_url is None:
            name = f"jobd_chaos_{self.s.seed}_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(self.s.admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self._own_db = name
            base, _, _ = self.s.admin_url.rpartition("/")
            self.s.db_url = f"{base}/{name}"

    @property
    def db_url(self) -> str:
        """The jobs' database (the harness's own look-ups; the nodes reach it by proxy)."""
        if self.s.db_url is None:
            raise RuntimeError("the database is not prepared yet")
        return self.s.db_url

    def _db(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.db_url, autocommit=True, application_name="jobd-chaos", connect_timeout=5
        )
        conn.execute(f'SET search_path TO "{self.s.schema}"')
        return conn

    def _plan(self) -> None:
        kinds = list(KINDS)
        weights = [KINDS[k][0] for k in kinds]
        tag = uuid.uuid4().hex[:6]
        for i in range(self.s.jobs):
            # The first jobs are one of each kind, so every kind runs even in a small run.
            kind = kinds[i] if i < len(kinds) else self.plan_rng.choices(kinds, weights)[0]
            payload: dict[str, Any] = {"n": i}
            needed = 1
            params: dict[str, Any] = {"type": f"chaos_{kind}"}
            if kind == "slow":
                payload["seconds"] = round(self.plan_rng.uniform(0.05, 0.5), 3)
            elif kind == "flaky":
                payload["fail_times"] = self.plan_rng.choice((1, 2))
                needed += payload["fail_times"]
            elif kind == "crash_once":
                payload["how"] = self.plan_rng.choice(("exit", "sigkill"))
                needed += 1
            elif kind == "timeout_once":
                params["timeout"] = TIMEOUT_SECONDS
                needed += 1
            if kind == "permanent":
                params["max_attempts"] = 3
            elif kind == "poison":
                params["max_attempts"] = MAX_CRASHES + SPARE_ATTEMPTS
            else:
                params["max_attempts"] = needed + SPARE_ATTEMPTS
            key = f"chaos-{self.s.seed}-{tag}-{i}"
            params |= {"payload": payload, "idempotency_key": key, "correlation_id": key}
            parents, policy = workflows.plan_parents(self.plan_rng, i, self.s.workflows)
            self.plan.append(PlannedJob(i, kind, key, params, None, parents, policy))
        self.report.jobs = len(self.plan)

    def _node(self, name: str) -> Node:
        home = short_directory(f"jobd-chaos-{name}-")
        proxy = TcpProxy(("127.0.0.1", self.db_port)).start()
        settings = {
            "JOBD_DATABASE_URL": proxy.url(self.db_url),
            "JOBD_DATABASE_SCHEMA": self.s.schema,
            "JOBD_SOCKET": str(home / "jobd.sock"),
            "JOBD_WORKERS": str(self.s.workers),
            "JOBD_HANDLER_MODULES": "chaos_handlers",
            "JOBD_WORKERS_MAX_CRASHES": str(MAX_CRASHES),
            "JOBD_JOBS_LEASE_SECONDS": str(self.s.lease),
            "JOBD_JOBS_HEARTBEAT_SECONDS": str(self.s.lease / 6),
            "JOBD_JOBS_POLL_INTERVAL": "0.2",
            "JOBD_JOBS_BACKOFF_BASE": "0.05",
            "JOBD_JOBS_BACKOFF_MAX": "0.5",
            "JOBD_SHUTDOWN_KILL_GRACE": "0.3",
            "JOBD_SHUTDOWN_DRAIN_TIMEOUT": "2",
            "JOBD_LOGGING_FORMAT": "json",
            "JOBD_LOGGING_JOB_EVENTS": "true",
            "CHAOS_LOG": str(self.runlog),
        }
        env = daemon_environment(home, settings, python_path=[HERE])
        return Node(name, home / "jobd.sock", env, home, proxy)

    def _boot(self, node: Node) -> None:
        """Start a new incarnation of `node` and wait until it answers.  A start can fail while
        the database is being disturbed (exit 3): try again, a few times."""
        for _ in range(5):
            tag = f"{node.name}.{len(node.boots) + 1}"
            log = self.runlog.parent / f"{tag}.log"
            env = {**node.env, "CHAOS_INCARNATION": tag}
            daemon = DaemonProcess.start(env, cwd=node.home, log_path=log, args=["--migrate"])
            boot = Incarnation(tag, daemon, time.time())
            node.boots.append(boot)
            if self._wait_ready(node, boot):
                return
            boot.ended, boot.exit_code = "failed to start", daemon.exit_code()
            boot.ended_at = time.time()
            self.report.notes.append(f"{tag} did not start (exit {boot.exit_code}); again")
            daemon.kill_all()
            time.sleep(0.5)  # a pause before the next try, while the database is disturbed
        raise RuntimeError(f"node {node.name} does not start; see {node.current.log}")

    def _wait_ready(self, node: Node, boot: Incarnation, timeout: float = 40.0) -> bool:
        """Whether the boot answers within `timeout` (not: it exited or stayed silent)."""
        try:
            boot.daemon.wait_until(lambda: answers(node.socket), what="hello", timeout=timeout)
        except AssertionError:
            return False
        return True

    # --- submitting ---------------------------------------------------------------------------

    def _submitter(self) -> None:
        try:
            n = len(self.plan)
            chunk = max(10, min(250, n // 20 or 1))
            spread = self.s.submit_seconds
            if spread is None:
                spread = min(30.0, max(3.0, n / 250))
            pause = spread / max(1, -(-n // chunk))
            rng = random.Random(self.s.seed * 31 + 7)
            for start in range(0, n, chunk):
                batch = self.plan[start : start + chunk]
                self._submit_batch(batch, rng)
                if self.stop.wait(pause):
                    return
        finally:
            self.submitted_all.set()

    def _submit_batch(self, batch: list[PlannedJob], rng: random.Random) -> None:
        tries = 0
        while not self.stop.is_set():
            tries += 1
            node = rng.choice(self.nodes)
            try:
                with node.client(timeout=30.0) as c:
                    results = c.submit_many(workflows.batch_params(batch, self.plan))
            except JobdError as exc:  # the node or the database is down: again, elsewhere
                if tries % 20 == 0:
                    self.report.notes.append(f"submit retried {tries} times: {exc.message}")
                time.sleep(0.2)
                continue
            for job, result in zip(batch, results, strict=True):
                job.id = result.job.id
            return

    # --- faults -------------------------------------------------------------------------------

    def _chaos(self) -> None:
        submitter = threading.Thread(target=self._submitter, name="chaos-submit", daemon=True)
        submitter.start()
        enabled = [f for f in self.s.faults if f in FAULT_WEIGHTS]
        weights = [FAULT_WEIGHTS[f] for f in enabled]
        deadline = time.monotonic() + self.s.max_fault_seconds
        next_at = time.monotonic() + self.fault_rng.expovariate(1 / self.s.fault_interval)
        while enabled and time.monotonic() < deadline:
            self._watch_nodes()
            if self._faults_done(enabled):
                break
            if time.monotonic() < next_at:
                time.sleep(min(0.05, max(next_at - time.monotonic(), 0)))
                continue
            kind = self._next_fault(enabled, weights)
            if getattr(self, f"_fault_{kind}")():
                self.report.faults[kind] += 1
            next_at = time.monotonic() + self.fault_rng.expovariate(1 / self.s.fault_interval)
        submitter.join()
        missing = [f for f in enabled if not self.report.faults[f]]
        if missing:
            self.report.violations.append(f"fault kinds never injected: {', '.join(missing)}")

    def _next_fault(self, enabled: list[str], weights: Sequence[float]) -> str:
        """A kind drawn from the seed, except: a stale_write first, while jobs still run (it
        needs a running job, and late in a run there may be none left), and once everything
        is submitted the kinds not seen yet, so that every kind happens."""
        missing = [f for f in enabled if not self.report.faults[f]]
        if "stale_write" in missing and not any(self.report.faults.values()):
            return "stale_write"
        if self.submitted_all.is_set() and missing:
            return missing[0]
        return self.fault_rng.choices(enabled, weights)[0]

    def _faults_done(self, enabled: list[str]) -> bool:
        if not self.submitted_all.is_set() or any(not self.report.faults[f] for f in enabled):
            return False
        try:
            with self._db() as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE state IN ('completed', 'failed', 'canceled')),"
                    " count(*) FROM all_jobs"
                ).fetchone()
        except psycopg.OperationalError:  # the server is restarting (pg_restart)
            return False
        return row is not None and row[1] > 0 and row[0] >= self.s.stop_faults_at * len(self.plan)

    def _watch_nodes(self) -> None:
        """A node that died without our doing is a violation; it is restarted."""
        for node in self.nodes:
            boot = node.current
            if boot.ended is None and boot.proc.poll() is not None:
                boot.ended, boot.exit_code = "died", boot.proc.returncode
                boot.ended_at = time.time()
                self.report.violations.append(
                    f"{boot.tag} exited by itself with {boot.exit_code} (see {boot.log})"
                )
                self._boot(node)

    def _pick_node(self) -> Node:
        return self.fault_rng.choice(self.nodes)

    def _fault_worker_kill(self) -> bool:
        for node in self.fault_rng.sample(self.nodes, len(self.nodes)):
            workers = sorted(worker_pids(node.current.proc.pid))
            if not workers:
                continue
            busy = [pid for pid, running in workers if running]
            pid = self.fault_rng.choice(busy or [pid for pid, _ in workers])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.worker_kills.append((time.time(), pid, node.current.tag))
            return True
        return False

    def _fault_supervisor_kill(self) -> bool:
        node = self._pick_node()
        boot = node.current
        code = boot.daemon.kill()
        boot.ended, boot.exit_code, boot.ended_at = "killed", code, time.time()
        self._boot(node)
        return True

    def _fault_drain_restart(self) -> bool:
        node = self._pick_node()
        boot = node.current
        boot.proc.send_signal(signal.SIGTERM)
        self._await_end(boot, "drained", "finish its drain")
        self._boot(node)
        return True

    def _await_end(self, boot: Incarnation, how: str, doing: str, timeout: float = 60) -> None:
        """Wait for a signalled boot to exit (killing it past `timeout`); a boot that does
        not, or exits non-zero, is a violation."""
        code: int | None
        try:
            code = boot.daemon.wait_exit(timeout)
        except DaemonStuck as stuck:
            code = boot.daemon.exit_code()
            self.report.violations.append(f"{boot.tag} did not {doing} within {timeout:g} s")
            if stuck.stacks:
                note = f"{boot.tag}'s threads when it was killed:\n{stuck.stacks}"
                self.report.notes.append(note)
        boot.ended, boot.exit_code, boot.ended_at = how, code, time.time()
        if code != 0:
            self.report.violations.append(f"{boot.tag} {how} with exit status {code}")

    def _fault_pg_terminate(self) -> bool:
        dbname = self.db_url.rpartition("/")[2].split("?")[0]
        try:
            with psycopg.connect(self.s.admin_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = 'jobd'",
                    (dbname,),
                ).fetchone()
        except psycopg.OperationalError:  # the server is restarting (pg_restart)
            return False
        return bool(row and row[0])

    def _fault_db_outage(self) -> bool:
        """The database away from one node (a partition: the others go on, take its jobs
        over when its leases run out, and its late results must be refused) or from all (an
        outage), for longer or shorter than the lease, in turn -- the first one a long
        partition, so lease recovery, the fenced writes and the refusal of stale results are
        exercised in every run, not only by chance."""
        lease = self.s.lease
        long, alone = DB_OUTAGES[self.report.faults["db_outage"] % len(DB_OUTAGES)]
        if long:
            seconds = self.fault_rng.uniform(lease + 0.5, 2 * lease)
        else:
            seconds = self.fault_rng.uniform(0.3, lease - 0.5)
        cut = [self._pick_node()] if alone and len(self.nodes) > 1 else self.nodes
        self.db_partitions += len(cut) < len(self.nodes)
        for node in cut:
            node.proxy.cut()
        try:
            time.sleep(seconds)
        finally:
            for node in cut:
                node.proxy.restore()
        return True

    def _fault_db_blackhole(self) -> bool:
        """The database hangs for one node or for all, in turn, for 10-60 s: the proxy keeps
        every connection open and lets nothing through, then delivers what it held (a
        partition that heals, a failover, a stalled server).  Meanwhile the held nodes are
        probed (probe.py) and what they said is noted."""
        turn = self.report.faults["db_blackhole"]
        alone = BLACKHOLE_ALONE[turn % len(BLACKHOLE_ALONE)] and len(self.nodes) > 1
        seconds = self.fault_rng.uniform(*BLACKHOLE_SECONDS)
        held = [self._pick_node()] if alone else self.nodes
        for node in held:
            node.proxy.blackhole()
        try:
            hearings = probe({n.current.tag: n.socket for n in held}, seconds, self.stop)
        finally:
            for node in held:
                node.proxy.restore()
        heard = "; ".join(f"{tag}: {hearing.describe()}" for tag, hearing in hearings.items())
        self.report.notes.append(f"db_blackhole of {seconds:.1f} s: {heard}")
        return True

    def _fault_stale_write(self) -> bool:
        """A write-back whose answer was lost, sent again once its job runs under a newer
        claim (stale_writes.py): it must change nothing."""
        deadline = time.monotonic() + STALE_WRITE_WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error), self._db() as conn:
                sent = replay_one(conn, self.owners, self.fault_rng, fenced=self.s.fenced)
                if sent is not None:
                    self.replays.append(sent)
                    return True
            self.stop.wait(0.1)
        return False

    def _fault_pg_restart(self) -> bool:
        if self.s.pg_cluster:
            version, _, name = self.s.pg_cluster.partition("/")
        else:
            versions = os.listdir("/etc/postgresql")
            version = max(versions, key=lambda v: [int(p) for p in v.split(".")])
            name = "main"
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name or "main", "restart"],
            check=True,
            timeout=120,
        )
        return True

    def _fault_cancel(self) -> bool:
        try:
            with self._db() as conn:
                cur = conn.execute("SELECT id FROM jobs WHERE state = 'running'")
                running = [r[0] for r in cur]
        except psycopg.Error:
            running = []
        known = [job.id for job in self.plan if job.id is not None]
        if not known:
            return False
        targets = set()
        for _ in range(self.fault_rng.randint(1, 4)):
            pool = sorted(running) if running and self.fault_rng.random() < 0.6 else known
            targets.add(self.fault_rng.choice(pool))
        node = self._pick_node()
        for job_id in sorted(targets):
            try:
                with node.client(timeout=15.0) as c:
                    job = c.cancel(job_id)
                accepted = job.state.value == "canceled" or job.cancel_requested
                outcome = "accepted" if accepted else "?"
            except Conflict:
                outcome = "conflict"
            except JobdError:
                outcome = "unknown"  # lost on the way: it may or may not have been applied
            previous = self.cancels.get(job_id)
            if previous in ("accepted", "unknown") and outcome == "conflict":
                outcome = previous
            self.cancels[job_id] = outcome
        return True

    # --- the end ------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Every node up, the database reachable, then wait for every job to be terminal."""
        for node in self.nodes:
            node.proxy.restore()
        for node in self.nodes:
            if not node.alive():
                self._watch_nodes()
        deadline = time.monotonic() + self.s.settle_timeout
        while time.monotonic() < deadline:
            self._watch_nodes()
            with contextlib.suppress(psycopg.Error), self._db() as conn:
                left = conn.execute(
                    "SELECT count(*) FROM jobs WHERE state IN ('waiting', 'pending', 'running')"
                ).fetchone()
                if left is not None and left[0] == 0:
                    return
            time.sleep(0.25)

    def _stop_nodes(self) -> None:
        for node in self.nodes:
            boot = node.current
            if boot.ended is not None:
                continue
            try:
                boot.counters = self._final_counters(node)
            except JobdError as exc:
                self.report.violations.append(f"{boot.tag}: stats failed at the end: {exc}")
            boot.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            boot = node.current
            if boot.ended is None:
                self._await_end(boot, "stopped", "stop")

    def _final_counters(self, node: Node) -> dict[str, int]:
        """A node's counters, read with `stats`.  A read may be retried, as any client would:
        a pg_terminate shortly before can make the call fail once ("store unavailable:
        terminating connection due to administrator command") on a pooled connection the
        server closed.  Only a node that keeps failing for FINAL_STATS_SECONDS is a
        violation."""
        deadline = time.monotonic() + FINAL_STATS_SECONDS
        while True:
            try:
                with node.client(timeout=10.0) as c:
                    return dict(c.stats().counters)
            except Unavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                self.report.notes.append(f"{node.current.tag}: final stats retried: {exc}")
                self.stop.wait(0.2)

    def _kill_leftovers(self) -> None:
        for node in self.nodes:
            for boot in node.boots:
                if boot.daemon.exit_code() is None:
                    boot.daemon.kill_all()

    def _clean_up(self) -> None:
        keep = self.s.keep or (self.s.verbose and not self.report.ok)
        for node in self.nodes:
            if not keep:
                shutil.rmtree(node.home, ignore_errors=True)
        if self._own_db and not keep:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self.s.admin_url, autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{self._own_db}" WITH (FORCE)')
        if self.s.workdir is None and not keep and self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif keep:
            self.report.notes.append(f"kept: {self._tmp} and database {self.s.db_url}")

    # --- the checks ---------------------------------------------------------------------------

    def _check(self) -> None:
        v = self.report.violations
        with self._db() as conn:
            cur = conn.execute(
                "SELECT id, type, state, attempts, max_attempts, crashes, cancel_requested,"
                " lease_owner, result, last_error, idempotency_key, finished_at FROM all_jobs"
            )
            names = [d.name for d in cur.description or ()]
            rows = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
        runs = read_runlog(self.runlog)
        logs = {boot.tag: read_log(boot.log) for node in self.nodes for boot in node.boots}
        self.report.states = Counter(r["state"] for r in rows.values())

        # lost, stuck, outcomes, attempts
        should_complete_missing = 0
        for job in self.plan:
            row = rows.get(job.id) if job.id is not None else None
            if job.id is None or row is None:
                self.report.lost += 1
                v.append(f"job #{job.index} ({job.kind}, id {job.id}) is not in the database")
                continue
            state = row["state"]
            if state in ("waiting", "pending", "running"):
                self.report.stuck += 1
                v.append(f"job {job.id} ({job.kind}) is stuck {state}")
                continue
            if row["lease_owner"] is not None:
                v.append(f"job {job.id} is {state} but still leased to {row['lease_owner']}")
            if row["attempts"] > row["max_attempts"]:
                v.append(f"job {job.id}: attempts {row['attempts']} > {row['max_attempts']}")
            cancel = self.cancels.get(job.id)
            if workflows.canceled_by_parent(row):
                continue  # workflows.check: a parent of it failed or was canceled
            if state == "canceled" and cancel not in ("accepted", "unknown"):
                v.append(f"job {job.id} ({job.kind}) is canceled but no cancel was sent for it")
            if cancel in ("accepted", "unknown"):
                continue  # any terminal state is right for a job someone tried to cancel
            expected = KINDS[job.kind][1]
            if state != expected:
                if expected == "completed":
                    self.report.lost += 1
                    should_complete_missing += 1
                err = row["last_error"] or {}
                v.append(
                    f"job {job.id} ({job.kind}) ended {state}, expected {expected}:"
                    f" {err.get('type')}: {err.get('message')} (attempts {row['attempts']},"
                    f" crashes {row['crashes']})"
                )
            elif state == "completed" and (row["result"] or {}).get("n") != job.index:
                v.append(f"job {job.id}: result {row['result']} is not its own")
            if state == "completed" and (row["result"] or {}).get("attempt") != row["attempts"]:
                # Fencing: only the attempt that holds the lease may finish the job, so the
                # result must come from the attempt the row counts.
                v.append(
                    f"job {job.id} completed with the result of attempt"
                    f" {(row['result'] or {}).get('attempt')} while at attempt {row['attempts']}:"
                    " a stale node's write was not fenced off"
                )
        for job_id, lines in runs.items():
            row = rows.get(job_id)
            if row is not None and max(line.attempt for line in lines) > row["max_attempts"]:
                v.append(f"job {job_id}: the run log shows an attempt above max_attempts")

        starts = {
            job_id: min(line.ts for line in lines if line.event == "start")
            for job_id, lines in runs.items()
            if any(line.event == "start" for line in lines)
        }
        self.report.dependents = workflows.check(self.plan, rows, starts, v)
        self._check_duplicates(runs, rows, logs)
        self._check_logs(rows, logs)
        self._check_replays()

    def _check_replays(self) -> None:
        """No stale write-back (stale_write) may have changed a job under a newer claim."""
        applied = [sent for sent in self.replays if sent.applied]
        self.report.violations.extend(sent.describe() for sent in applied)
        if self.replays:
            kinds = Counter(sent.kind.value for sent in self.replays)
            self.report.notes.append(
                f"stale write-backs sent {len(self.replays)} ({dict(kinds)}),"
                f" refused by the fence {len(self.replays) - len(applied)}"
                + ("" if self.s.fenced else " (sent with the fence stripped)")
            )

    def _lease_losses(self, logs: dict[str, list[dict[str, Any]]]) -> Counter[int]:
        """For each job, how many times its lease was lost, by the nodes' logs: each recovery
        is one ("recovered a job whose lease expired"), and so is each stale result refused
        ("result discarded"); the two usually tell of the same loss, so the larger count."""
        recovered: Counter[int] = Counter()
        discarded: Counter[int] = Counter()
        for events in logs.values():
            for e in events:
                if e.get("job_id") is None:
                    continue
                if e.get("message") == RECOVERED:
                    recovered[int(e["job_id"])] += 1
                elif e.get("message") == DISCARDED:
                    discarded[int(e["job_id"])] += 1
        return recovered | discarded  # the larger of the two, per job

    def _check_duplicates(
        self,
        runs: dict[int, list[RunLine]],
        rows: dict[int, dict[str, Any]],
        logs: dict[str, list[dict[str, Any]]],
    ) -> None:
        """Each effect followed by another effect of the same job was a run whose outcome
        never counted; each needs a cause of its own (see the module docstring): a lease loss
        the logs tell of (each explains one), its supervisor SIGKILLed, or its worker SIGKILLed
        after the effect.  Two runs of a job at the same time need one too."""
        losses = self._lease_losses(logs)
        killed = {
            boot.tag: boot.ended_at
            for node in self.nodes
            for boot in node.boots
            if boot.ended == "killed" and boot.ended_at is not None
        }
        worker_killed = {pid: when for when, pid, _ in self.worker_kills}

        def cause(job_id: int, run: RunLine) -> str | None:
            if run.incarnation in killed and killed[run.incarnation] - KILL_WINDOW <= run.ts:
                # its outcome died with its supervisor, or an orphaned worker finished it
                return "supervisor_killed"
            if run.pid in worker_killed and worker_killed[run.pid] >= run.ts - 0.001:
                return "worker_killed_after_effect"
            if losses[job_id] > 0:
                losses[job_id] -= 1
                return "lease_recovered"
            return None

        for job_id, lines in sorted(runs.items()):
            effects = [line for line in lines if line.event in ("done", "perm")]
            lost_effects = effects[:-1]
            overlap = _overlapping([line for line in lines if line.event == "start"], lines)
            for run in lost_effects:
                reason = cause(job_id, run)
                self.report.duplicates += 1
                self.report.duplicate_reasons[reason or "unexplained"] += 1
                if reason is None:
                    self.report.unexplained_duplicates += 1
                    self.report.violations.append(
                        f"job {job_id} did its work again though no lease was lost:"
                        f" {[dataclasses.astuple(line) for line in lines]}"
                    )
            overlap_effect = next(
                (
                    x
                    for x in effects
                    if overlap and (x.pid, x.attempt) == (overlap.pid, overlap.attempt)
                ),
                None,
            )
            if (
                overlap is not None
                and overlap_effect not in lost_effects
                and not cause(job_id, overlap)
            ):
                self.report.violations.append(
                    f"job {job_id} ran twice at once though no lease was lost:"
                    f" {[dataclasses.astuple(line) for line in lines]}"
                )

    def _check_logs(
        self, rows: dict[int, dict[str, Any]], logs: dict[str, list[dict[str, Any]]]
    ) -> None:
        v = self.report.violations
        any_killed = any(b.ended == "killed" for n in self.nodes for b in n.boots)
        finishes: Counter[int] = Counter()
        totals: Counter[str] = Counter()
        for node in self.nodes:
            for boot in node.boots:
                tally: Counter[str] = Counter()
                for e in logs[boot.tag]:
                    message = e.get("message", "")
                    if e.get("level") in ("ERROR", "CRITICAL"):
                        self.report.errors_logged[message] += 1
                    if message in BUG_MESSAGES:
                        v.append(f"{boot.tag} logged a bug: {message}: {e}")
                    event = JOB_EVENTS.get(message)
                    if message == RECOVERED:
                        event = "recovered"
                        if e.get("to") in TERMINAL:
                            tally[e["to"]] += 1  # counted as failed/canceled too
                            finishes[int(e["job_id"])] += 1
                    if event is None:
                        continue
                    tally[event] += 1
                    if event in TERMINAL:
                        finishes[int(e["job_id"])] += 1
                if boot.counters is not None:
                    for name in COUNTED:
                        if boot.counters.get(name, 0) != tally[name]:
                            v.append(
                                f"{boot.tag}: metrics say {name}={boot.counters.get(name, 0)},"
                                f" its log {tally[name]}"
                            )
                source = boot.counters if boot.counters is not None else tally
                for name in (*TERMINAL, "submitted"):
                    totals[name] += source.get(name, 0)
        for job_id, count in finishes.items():
            if count > 1:
                v.append(f"job {job_id} was finished {count} times (logged by several nodes)")
        # A job canceled because its parent failed is canceled inside the parent's end: no node
        # logs it or counts it.
        by_parent = {j for j, r in rows.items() if workflows.canceled_by_parent(r)}
        terminal_rows = [
            j for j, r in rows.items() if r["state"] in TERMINAL and j not in by_parent
        ]
        unlogged = [j for j in terminal_rows if not finishes[j]]
        if unlogged and not any_killed:
            v.append(f"{len(unlogged)} jobs were finished by no node's log: {unlogged[:10]}")
        elif unlogged:
            self.report.notes.append(
                f"{len(unlogged)} jobs finished by a supervisor killed before logging it"
            )
        db = Counter(r["state"] for j, r in rows.items() if j not in by_parent)
        db["submitted"] = len(rows)
        for name in (*TERMINAL, "submitted"):
            if totals[name] > db[name] or (not any_killed and totals[name] != db[name]):
                v.append(
                    f"metrics: the nodes counted {name}={totals[name]}, the database has {db[name]}"
                )


# --- reading the logs -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLine:
    job_id: int
    attempt: int
    pid: int
    event: str
    ts: float
    incarnation: str


def read_runlog(path: Path) -> dict[int, list[RunLine]]:
    out: dict[int, list[RunLine]] = defaultdict(list)
    for raw in path.read_text().splitlines():
        job_id, attempt, pid, event, ts, incarnation = raw.split()
        line = RunLine(int(job_id), int(attempt), int(pid), event, float(ts), incarnation)
        out[line.job_id].append(line)
    for lines in out.values():
        lines.sort(key=lambda line: line.ts)
    return out


def read_log(path: Path) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
    return out


def _overlapping(starts: list[RunLine], lines: list[RunLine]) -> RunLine | None:
    """The first run of a job that wrote its effect after another run of the same job had
    started in another process: the two ran at once.  None if that never happened.  (A run is
    known by its process and attempt; one that died before its effect never overlaps.)"""
    for a in starts:
        effects = [
            x.ts
            for x in lines
            if (x.pid, x.attempt) == (a.pid, a.attempt) and x.event in ("done", "perm")
        ]
        if not effects:
            continue
        for b in starts:
            if b.pid != a.pid and a.ts < b.ts < effects[0]:
                return a
    return None


# --- the command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="Run jobs on 1-3 jobd nodes while injecting faults; check the guarantees.",
    )
    p.add_argument("--jobs", type=int, default=150, help="jobs to submit (default 150)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--daemons", type=int, default=2, choices=(1, 2, 3), help="nodes (default 2)")
    p.add_argument("--workers", type=int, default=2, help="workers per node (default 2)")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated fault kinds (default: all of {', '.join(FAULTS)})",
    )
    p.add_argument(
        "--pg-restart",
        action="store_true",
        help="also restart the PostgreSQL server (pg_ctlcluster ... restart): only a server"
        " nothing else uses (see --pg-cluster)",
    )
    p.add_argument(
        "--pg-cluster",
        metavar="VERSION/NAME",
        help="the cluster --pg-restart restarts, e.g. 15/chaos (default: the newest's main);"
        " give --admin-url to match",
    )
    p.add_argument("--fault-interval", type=float, default=1.0, help="mean seconds between faults")
    p.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL URL to create a DB")
    p.add_argument(
        "--strip-fence",
        action="store_true",
        help="prove the stale_write check: send its stale write-backs with the fence"
        " conditions stripped; the run must fail (changes nothing in jobd)",
    )
    p.add_argument(
        "--workflows",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="submit this share of the jobs after earlier ones (0 to 1; default 0)",
    )
    p.add_argument("--keep", action="store_true", help="keep the database, logs and run log")
    p.add_argument("-v", "--verbose", action="store_true", help="print every violation and note")
    a = p.parse_args(argv)
    faults = tuple(f for f in a.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS) - set(OPTIONAL_FAULTS)
    if unknown:
        p.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if a.pg_restart and "pg_restart" not in faults:
        faults += ("pg_restart",)
    return Settings(
        jobs=a.jobs,
        seed=a.seed,
        daemons=a.daemons,
        workers=a.workers,
        faults=faults,
        fault_interval=a.fault_interval,
        admin_url=a.admin_url,
        pg_cluster=a.pg_cluster,
        keep=a.keep,
        verbose=a.verbose,
        fenced=not a.strip_fence,
        workflows=a.workflows,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    report = Chaos(settings).run()
    if settings.verbose or not report.ok:
        for line in report.violations[:50]:
            print(f"VIOLATION: {line}")
        for line in report.notes:
            print(f"note: {line}")
        if report.errors_logged:
            print(f"errors logged: {dict(report.errors_logged)}")
        print(f"final states: {dict(report.states)}")
    print(report.summary(), flush=True)
    return 0 if report.ok else 1
