"""The bulk-retry scenario: a bulk retry of --bulk-failed failed jobs (100,000) while the
workers run, against the same burn-down without it (PostgreSQL only).

One daemon with 2 workers.  The failed jobs (a no-op type, queue `bulk`) are written straight
into finished_jobs with INSERT ... SELECT generate_series.  Each round times two burn-downs of
--bulk-jobs no-op jobs (50,000) in queue `default`, submitted while the queue is paused and
released by its resume: one alone, one with `retry_many --state failed --queue bulk` (the
protocol's call, followed by its continuation, what `jobctl retry --yes` does) started at the
same moment; the rounds alternate which goes first, and the failed jobs are written again
before each burn-down, so both see the same table.  The burn-down compared is the `default`
queue's, first claim to last completion; the retried jobs then run too.

The rows one transaction changed are counted by a statement-level AFTER INSERT trigger on
`jobs` that this scenario installs (and nothing else has): a retry moves each job back from
finished_jobs to jobs with an INSERT, so the trigger sees every retried row of every
transaction, with txid_current() telling the transactions apart.  Target: the burn-down with
the retry at least half its rate alone (it slows by less than half), and no transaction over
jobd.limits.BULK_BATCH rows."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness import BenchStore, Daemon, fill, max_id, migrate, progress, running, wait_drained
from scenarios import Figure, MakeStore, Run, Target, drain_timeout, profiled

from jobd.limits import BULK_BATCH

QUEUE = "default"
BULK = "bulk"

_FAILED = """
INSERT INTO finished_jobs (id, type, queue, state, attempts, max_attempts, last_error,
                           created_at, updated_at, started_at, finished_at)
SELECT nextval('jobs_id_seq'), 'bench_noop', 'bulk', 'failed', 3, 3,
       '{"type": "Boom", "message": "failed before the benchmark", "traceback": null}',
       now(), now(), now(), now()
  FROM generate_series(1, %s)
"""
# The measuring trigger: one row per INSERT statement into jobs that moved jobs of `bulk`.
_COUNTER = """
CREATE TABLE bench_bulk_tx (txid bigint NOT NULL, moved integer NOT NULL);
CREATE FUNCTION bench_bulk_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_bulk_tx
    SELECT txid_current(), count(*) FROM moved_rows WHERE queue = 'bulk' HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_bulk_count AFTER INSERT ON jobs REFERENCING NEW TABLE AS moved_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_bulk_count();
"""
_PER_TRANSACTION = """
SELECT count(*), coalesce(max(moved), 0), coalesce(sum(moved), 0)
  FROM (SELECT txid, sum(moved) AS moved FROM bench_bulk_tx GROUP BY txid) AS t
"""


@dataclass(frozen=True)
class Phase:
    rate: float  # the default queue's burn-down, jobs/s
    seconds: float
    retry_seconds: float | None = None  # the retry_many calls, first to last
    retried: int = 0
    transactions: int = 0
    largest: int = 0  # rows moved back by the busiest transaction


@dataclass
class Rounds:
    alone: list[Phase] = field(default_factory=list)
    retried: list[Phase] = field(default_factory=list)


async def bulk_retry(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    if kind != "postgres":
        return [Figure("bulk-retry", kind, "bulk retry", None, "", text="— (PostgreSQL only)")]
    sizes = run.sizes
    rounds = Rounds()
    with make("bulk_retry") as store:
        await migrate(store)
        store.query(_COUNTER)
        with running(store, sizes.workers, run.env) as daemon:
            for index in range(sizes.bulk_rounds):
                order = (False, True) if index % 2 == 0 else (True, False)
                for with_retry in order:
                    name = f"bulk-retry-{index + 1}-{'with' if with_retry else 'alone'}"
                    phase = await _phase(run, store, daemon, with_retry, name)
                    (rounds.retried if with_retry else rounds.alone).append(phase)
                    what = "with the retry" if with_retry else "alone"
                    progress(f"bulk-retry round {index + 1}, {what}: {phase.rate:,.0f} jobs/s")
    run.details.append(_rounds_table(run, rounds))
    return _figures(run, rounds)


async def _phase(run: Run, store: BenchStore, daemon: Daemon, with_retry: bool, name: str) -> Phase:
    """One burn-down of the default queue, with the bulk retry started at its release or not
    (--profile: py-spy on the supervisor until the queue is empty); then everything drained,
    the retried jobs included."""
    sizes = run.sizes
    store.query("DELETE FROM finished_jobs WHERE queue = 'bulk'")
    store.query(_FAILED, (sizes.bulk_failed,))
    store.query("TRUNCATE bench_bulk_tx")
    store.query("VACUUM ANALYZE jobs, finished_jobs")
    with daemon.client() as client:
        client.call("queue_pause", {"name": QUEUE})
        after = max_id(store)
        await fill(store, sizes.bulk_jobs)
        store.checkpoint()
        retry = _Retry(daemon) if with_retry else None
        with profiled(run, daemon, name):
            client.call("queue_resume", {"name": QUEUE})
            if retry is not None:
                retry.start()
            _wait_queue_empty(store, daemon, after, drain_timeout(sizes.bulk_jobs))
    wait_drained(store, drain_timeout(sizes.bulk_jobs + sizes.bulk_failed), daemon.check_alive)
    count, first, last = store.query(
        f"SELECT count(*), min({store.epoch('started_at')}), max({store.epoch('finished_at')})"
        "  FROM all_jobs WHERE id > %s AND queue = %s AND state = 'completed'",
        (after, QUEUE),
    )[0]
    if count != sizes.bulk_jobs:
        raise RuntimeError(f"bulk-retry: {count} of {sizes.bulk_jobs} jobs completed")
    seconds = last - first
    if retry is None:
        return Phase(count / seconds, seconds)
    retry.join()
    transactions, largest, moved = store.query(_PER_TRANSACTION)[0]
    if retry.retried != sizes.bulk_failed or moved != sizes.bulk_failed:
        raise RuntimeError(
            f"bulk-retry: {retry.retried} retried, {moved} counted of {sizes.bulk_failed}"
        )
    return Phase(count / seconds, seconds, retry.seconds, retry.retried, transactions, largest)


def _wait_queue_empty(store: BenchStore, daemon: Daemon, after: int, timeout: float) -> None:
    """Until no job of the burn-down (ids above `after`: the failed jobs are older) is left
    in the hot table; the primary key finds the first one left."""
    deadline = time.monotonic() + timeout
    while store.scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id > %s)", (after,)):
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"bulk-retry: `{QUEUE}` not drained within {timeout:.0f} s")
        time.sleep(0.2)


class _Retry(threading.Thread):
    """retry_many over the control socket, followed by its continuation to the end."""

    def __init__(self, daemon: Daemon):
        super().__init__(name="bench-bulk-retry", daemon=True)
        self._daemon = daemon
        self.retried = 0
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        params: dict[str, Any] = {"state": "failed", "queue": BULK}
        began = time.monotonic()
        try:
            with self._daemon.client(timeout=300.0) as client:
                while True:
                    answer = client.call("retry_many", params)
                    self.retried += answer["changed"]
                    if answer["next_cursor"] is None:
                        break
                    params["cursor"] = answer["next_cursor"]
        except BaseException as exc:  # reported by join()
            self.error = exc
        self.seconds = time.monotonic() - began

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise RuntimeError(f"bulk-retry: retry_many failed: {self.error}") from self.error


def _rounds_table(run: Run, rounds: Rounds) -> str:
    sizes = run.sizes
    lines = [
        f"### bulk retry under load, postgres: {sizes.bulk_jobs:,} no-op jobs in `default`,"
        f" {sizes.bulk_failed:,} failed in `bulk`, {sizes.workers} workers",
        "",
        "Rows per transaction: counted by a statement-level AFTER INSERT trigger on `jobs`"
        " installed by this benchmark only (each retried job moves back from finished_jobs"
        " with an INSERT), grouped by txid_current().",
        "",
        "| round | alone: jobs/s | with the retry: jobs/s | ratio | retry took | transactions"
        " | largest |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for index, (alone, busy) in enumerate(zip(rounds.alone, rounds.retried, strict=True)):
        lines.append(
            f"| {index + 1} | {alone.rate:,.0f} | {busy.rate:,.0f} | {busy.rate / alone.rate:.2f}"
            f" | {busy.retry_seconds or 0:.1f} s ({busy.seconds:.1f} s burn-down)"
            f" | {busy.transactions} | {busy.largest:,} |"
        )
    return "\n".join(lines)


def _figures(run: Run, rounds: Rounds) -> list[Figure]:
    sizes = run.sizes
    alone = statistics.median(p.rate for p in rounds.alone)
    busy = statistics.median(p.rate for p in rounds.retried)
    # Each round's pair, run back to back, is the comparison: the machine's load drifts
    # between rounds more than within one.
    ratio = statistics.median(
        b.rate / a.rate for a, b in zip(rounds.alone, rounds.retried, strict=True)
    )
    largest = max(p.largest for p in rounds.retried)
    took = statistics.median(p.retry_seconds or 0.0 for p in rounds.retried)
    burn = f"{sizes.bulk_jobs:,} no-op jobs in `default`, {sizes.workers} workers"
    return [
        Figure("bulk-retry", "postgres", f"{burn}, alone (median)", alone, "jobs/s"),
        Figure(
            "bulk-retry",
            "postgres",
            f"{burn}, while {sizes.bulk_failed:,} failed jobs are retried (median)",
            busy,
            "jobs/s",
        ),
        Figure(
            "bulk-retry",
            "postgres",
            "with the retry ÷ alone, the median of the rounds' ratios",
            ratio,
            "ratio",
            Target(">=", 0.5),
        ),
        Figure(
            "bulk-retry",
            "postgres",
            f"the retry of {sizes.bulk_failed:,} jobs took (median), s",
            took,
            "",
            text=f"{took:.1f} s",
        ),
        Figure(
            "bulk-retry",
            "postgres",
            "most rows one transaction moved back (trigger on jobs)",
            largest,
            "n",
            Target("<=", BULK_BATCH),
        ),
    ]
