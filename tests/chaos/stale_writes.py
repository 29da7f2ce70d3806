"""The stale_write fault: a node's write-back whose answer was lost, retried after the job has
been claimed again.

What it imitates.  A supervisor writes an attempt's outcome (finish, or finish_retry for a
retry or a release); the statement commits but the answer is lost (a terminated connection, a
network cut), so the write-back keeps the outcome and sends it again later.  By then the job
may have been claimed again (its retry claimed, its lease recovered, its release claimed by
another node), and the repeated write must change nothing: the store fences every write-back
on (job id, attempt, lease owner).  The harness cannot make a node lose an answer at the right
moment, so it sends the repeat itself, as the node would: the store's own write-back statements
(its QUERIES, with the parameters its `outcome_params` builds), on a connection of its own,
straight to the database.

Which stale claim.  For a job running now under (attempt A, owner O), an earlier claim was
(A - 1, O) -- this node's previous attempt, retried or recovered -- or (A, P) for another owner
P -- P's claim, released and then claimed by O -- or (A - 1, P).  `replay` locks the job's row,
checks it still runs under (A, O), and sends one such claim's outcome in the same transaction.
A `Replay` that changed a row is a stale write that ended a newer claim: a violation.

Proving the check: with `fenced=False` the statement is sent with its fence conditions
stripped from the WHERE clause (only here, in the harness; nothing in jobd can turn the fence
off), and the run must fail.

Not covered yet: a release repeated after the *same* node claimed the job again.  A release
gives its attempt back, so the new claim is (A, O) like the old one and only the claim's lease
token tells them apart (ADR 0023); the repeats sent here carry no token, so they never send
(A, O).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import psycopg

from jobd.clock import utcnow
from jobd.domain import ErrorInfo
from jobd.store.base import Outcome, OutcomeKind
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import outcome_params

# The fence of a write-back, one condition a line in the store's statements: the lease owner,
# the attempt, and any claim token the store adds to them.
FENCE_LINE = re.compile(r"^\s*AND jobs\.(lease_owner|attempts|claim\w*)\s*=.*\n?", re.MULTILINE)
REPLAYED_KINDS = (OutcomeKind.COMPLETED, OutcomeKind.FAILED, OutcomeKind.RELEASED)


@dataclass(frozen=True)
class Claim:
    """One claim of a job: what a write-back is fenced on."""

    job_id: int
    attempt: int
    owner: str


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


def running_claims(conn: psycopg.Connection[Any], job_id: int | None = None) -> list[Claim]:
    """The claims of the running jobs (of one job, locked, when `job_id` is given)."""
    sql = "SELECT id, attempts, lease_owner FROM jobs WHERE state = 'running'"
    if job_id is not None:
        sql += " AND id = %(id)s FOR UPDATE"
    rows = conn.execute(sql, {"id": job_id}).fetchall()
    return [Claim(*row) for row in rows if row[2] is not None]


def earlier_claims(current: Claim, owners: set[str]) -> list[Claim]:
    """Claims of the job before `current` that the fence tells apart from it (see above)."""
    others = sorted(owners - {current.owner})
    earlier = [Claim(current.job_id, current.attempt, other) for other in others]
    if current.attempt >= 2:
        for owner in (current.owner, *others):
            earlier.append(Claim(current.job_id, current.attempt - 1, owner))
    return earlier


def replay_one(
    conn: psycopg.Connection[Any],
    owners: set[str],
    rng: random.Random,
    *,
    fenced: bool = True,
) -> Replay | None:
    """Send a stale write-back for a random running job (None if no job runs now).  `owners`
    gathers the lease owners seen, so that other nodes' claims, and earlier boots', can be
    replayed."""
    running = running_claims(conn)
    owners.update(claim.owner for claim in running)
    rng.shuffle(running)
    for current in running:
        earlier = earlier_claims(current, owners)
        if earlier:
            sent = replay(conn, current, rng.choice(earlier), rng.choice(REPLAYED_KINDS), fenced)
            if sent is not None:
                return sent
    return None


def replay(
    conn: psycopg.Connection[Any], current: Claim, stale: Claim, kind: OutcomeKind, fenced: bool
) -> Replay | None:
    """Send `stale`'s outcome if its job still runs under `current` (None otherwise:
    nothing was sent)."""
    with conn.transaction():
        now = running_claims(conn, stale.job_id)  # the row stays locked until the end
        if now != [current]:
            return None
        rows = _write_back(conn, stale, kind, fenced)
    return Replay(stale, current, kind, applied=bool(rows))


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
