"""The stale_write fault: a node's write-back whose answer was lost, retried after the job has
been claimed again.

What it imitates.  A supervisor writes an attempt's outcome (finish, or finish_retry for a
retry or a release); the statement commits but the answer is lost (a terminated connection, a
network cut), so the write-back keeps the outcome and sends it again later.  By then the job
may have been claimed again (its lease recovered, its retry claimed, by this node or another),
and the repeated write must change nothing: the store fences every write-back on (job id,
attempt, lease owner).  The harness cannot make a node lose an answer at the right moment, so
it sends the repeat itself, as the node would: the store's own write-back statements (its
QUERIES, with the parameters its `outcome_params` builds) for a claim the harness saw earlier,
on a connection of its own, once the job runs under a newer claim.

`ClaimRecorder` watches the running jobs (a thread, every 0.1 s, straight to the database:
the harness's look-ups never go through the nodes' proxies) and remembers, for each job seen
under a new claim, the claim before it.  `replay` locks such a job's row, checks that it is
still running under a claim the fence tells apart from the old one, and sends the old claim's
outcome in the same transaction.  A `Replay` that changed a row is a stale write that ended a
newer claim: a violation.

Proving the check: with `fenced=False` the statement is sent with its fence conditions
stripped from the WHERE clause (only here, in the harness; nothing in jobd can turn the fence
off), and the run must fail.

Not covered yet: a release repeated after the *same* node claimed the job again.  A release
gives its attempt back, so the new claim has the old one's attempt and owner and only a claim
token tells them apart (docs/guarantees.md, "A release written twice"); `replay` skips such
claims until the store's write-back carries one.
"""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from jobd.clock import utcnow
from jobd.domain import ErrorInfo
from jobd.store.base import Outcome, OutcomeKind
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import outcome_params

SAMPLE_SECONDS = 0.1  # how often the recorder reads the running jobs
CANDIDATES_KEPT = 500  # superseded claims remembered (the newest are replayed first)
# The fence of a write-back, one condition a line in the store's statements: the lease owner,
# the attempt, and any claim token the store adds to them.
FENCE_LINE = re.compile(r"^\s*AND jobs\.(lease_owner|attempts|claim\w*)\s*=.*\n?", re.MULTILINE)
REPLAYED_KINDS = (OutcomeKind.COMPLETED, OutcomeKind.FAILED, OutcomeKind.RELEASED)


@dataclass(frozen=True)
class Claim:
    """One claim of a job, as the database showed it: a claim sets the attempt, the owner and
    started_at, so a new claim differs in one of them at least."""

    job_id: int
    attempt: int
    owner: str
    started_at: datetime

    def fenced_apart(self, other: Claim) -> bool:
        """Whether the fence (attempt, lease owner) tells the two claims apart."""
        return (self.attempt, self.owner) != (other.attempt, other.owner)


@dataclass(frozen=True)
class Superseded:
    old: Claim
    new: Claim


@dataclass(frozen=True)
class Replay:
    """A stale write-back sent: the claim it was for, the claim the job ran under meanwhile,
    and whether it changed the row (it must not)."""

    stale: Claim
    current: Claim
    kind: OutcomeKind
    applied: bool

    def describe(self) -> str:
        return (
            f"job {self.stale.job_id}: a stale {self.kind.value} write-back of attempt"
            f" {self.stale.attempt} by {self.stale.owner} ended its newer claim (attempt"
            f" {self.current.attempt} by {self.current.owner}): the write was not fenced off"
        )


class ClaimRecorder:
    """Remembers the claims the running jobs were under, and which of them were superseded."""

    def __init__(self, connect: Any):
        self._connect = connect  # () -> a psycopg connection on the jobs' schema
        self._latest: dict[int, Claim] = {}
        self._superseded: deque[Superseded] = deque(maxlen=CANDIDATES_KEPT)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-claims", daemon=True)

    def start(self) -> ClaimRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def candidates(self) -> list[Superseded]:
        """The superseded claims, newest first."""
        with self._lock:
            return list(reversed(self._superseded))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                with self._connect() as conn:
                    while not self._stop.wait(SAMPLE_SECONDS):
                        self._sample(conn)
            except psycopg.Error:
                continue  # the server restarted (pg_restart): connect again

    def _sample(self, conn: psycopg.Connection[Any]) -> None:
        for claim in running_claims(conn):
            with self._lock:
                old = self._latest.get(claim.job_id)
                self._latest[claim.job_id] = claim
                if old is not None and old != claim:
                    self._superseded.append(Superseded(old, claim))


def running_claims(conn: psycopg.Connection[Any], job_id: int | None = None) -> list[Claim]:
    """The claims of the running jobs (of one job, locked, when `job_id` is given)."""
    sql = "SELECT id, attempts, lease_owner, started_at FROM jobs WHERE state = 'running'"
    if job_id is not None:
        sql += " AND id = %(id)s FOR UPDATE"
    rows = conn.execute(sql, {"id": job_id}).fetchall()
    return [Claim(*row) for row in rows if row[2] is not None]


def replay_one(
    conn: psycopg.Connection[Any],
    candidates: list[Superseded],
    kind: OutcomeKind,
    *,
    fenced: bool = True,
) -> Replay | None:
    """Replay the first of `candidates` whose job runs under a claim the fence tells apart
    from the superseded one (None if there is none now)."""
    running = {claim.job_id: claim for claim in running_claims(conn)}
    for candidate in candidates:
        now = running.get(candidate.old.job_id)
        if now is not None and now.fenced_apart(candidate.old):
            sent = replay(conn, candidate, kind, fenced=fenced)
            if sent is not None:
                return sent
    return None


def replay(
    conn: psycopg.Connection[Any],
    candidate: Superseded,
    kind: OutcomeKind,
    *,
    fenced: bool = True,
) -> Replay | None:
    """Send `candidate.old`'s outcome again, if its job still runs under a claim the fence
    tells apart from it (None otherwise: nothing was sent)."""
    stale = candidate.old
    with conn.transaction():
        current = running_claims(conn, stale.job_id)  # the row stays locked until the end
        if not current or not current[0].fenced_apart(stale):
            return None
        rows = _write_back(conn, stale, kind, fenced)
    return Replay(stale, current[0], kind, applied=bool(rows))


def stale_outcome(claim: Claim, kind: OutcomeKind) -> Outcome:
    """What the node would have written for that attempt: a result marked as replayed, a
    retryable failure, or a release."""
    if kind is OutcomeKind.COMPLETED:
        result = {"attempt": claim.attempt, "replayed": True}
        return Outcome(claim.job_id, claim.attempt, kind, result=result)
    if kind is OutcomeKind.FAILED:
        error = ErrorInfo("ReplayedWrite", "a stale write-back sent again")
        return Outcome(claim.job_id, claim.attempt, kind, error=error, retry_at=utcnow())
    return Outcome(claim.job_id, claim.attempt, kind)


def _write_back(
    conn: psycopg.Connection[Any], claim: Claim, kind: OutcomeKind, fenced: bool
) -> list[Any]:
    """The store's write-back of one outcome (finish, or finish_retry and the move of what it
    ended), with or without its fence; the rows it changed."""
    params: dict[str, Any] = {"node": claim.owner, **outcome_params([stale_outcome(claim, kind)])}
    if kind is OutcomeKind.COMPLETED:
        del params["retry_ats"]
        return conn.execute(statement("finish", fenced=fenced), params).fetchall()
    del params["results"]
    rows = conn.execute(statement("finish_retry", fenced=fenced), params).fetchall()
    ended = [row[0] for row in rows if row[1] in ("completed", "failed", "canceled")]
    if ended:
        conn.execute(QUERIES["move_finished"], {"ids": ended})
    return rows


def statement(name: str, *, fenced: bool) -> str:
    """The store's write-back statement `name`, with its fence or without."""
    sql = QUERIES[name]
    if fenced:
        return sql
    stripped, removed = FENCE_LINE.subn("", sql)
    if removed < 2:  # the owner and the attempt at least: else the check proves nothing
        raise RuntimeError(f"the fence of {name} is not where the harness looks for it")
    return stripped


def pick_kind(rng: random.Random) -> OutcomeKind:
    return rng.choice(REPLAYED_KINDS)
