"""A submit and a claim for the submitting node, in one round trip (docs/adr/0042).

The submit statement and the claim statement go in one pipeline with no sync between them:
one round trip and one implicit transaction.  The claim sees the new job, and both commit with
the submit's flush: the answer still comes only once the job is stored, and a job claimed
here was never visible as pending to another node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import tuple_row

from jobd.domain import NewJob
from jobd.store.base import (
    ClaimRequest,
    Notification,
    NotificationKind,
    Store,
    SubmittedAndClaimed,
    ordering_key,
)
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import (
    batch_refused,
    claim_params,
    inserts_alone,
    jobs_from_tuples,
    submit_params,
    submitted_from_row,
)

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore


async def submit_claiming(
    store: PostgresStore, spec: NewJob, claim: ClaimRequest
) -> SubmittedAndClaimed:
    """Store.submit_claiming in one round trip.  A job with an idempotency key or parents takes
    more statements after its insert (PostgresStore.submit_many), and the claim follows."""
    if not inserts_alone(spec):
        return await Store.submit_claiming(store, spec, claim)
    c = claim
    inserting = submit_params([spec], store.submit_channel)
    claiming = claim_params(c.node, c.limit, c.lease, None, c.types, c.exclude_queues)
    try:
        async with store.pool.connection() as conn:
            inserted = conn.cursor(row_factory=tuple_row)
            claimed = conn.cursor(row_factory=tuple_row)
            async with conn.pipeline():
                await inserted.execute(QUERIES["submit"], inserting)
                await claimed.execute(QUERIES["claim"], claiming, prepare=True)
            row = await inserted.fetchone()
            jobs = jobs_from_tuples(claimed.description, await claimed.fetchall())
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise batch_refused(exc) from exc
    submitted = submitted_from_row(spec, row) if row is not None else None
    assert submitted is not None  # one job and no key: it was inserted
    if all(job.id != submitted.job.id for job in jobs):  # pending: its claimer must hear of it
        store._notify(Notification(NotificationKind.SUBMITTED, queue=spec.queue))
    return SubmittedAndClaimed(submitted, sorted(jobs, key=ordering_key))
