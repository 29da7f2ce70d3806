"""The PostgreSQL store's `finish_and_claim`: the supervisor's write-back and its next claim in
one pipeline, so one round trip and one transaction (one commit) where there were two of
each (docs/adr/0029).

The statements are finish's and claim's own.  A pipeline outside an explicit transaction runs
as one implicit transaction up to its sync: both statements commit together or neither does,
so an error raises with no outcome applied, as `finish` would.  The outcomes `finish` writes
in a transaction of several statements (starts to mark, outcomes that send a job back to
pending) take the default path: finish, then claim."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from psycopg.rows import tuple_row

from jobd.domain import State
from jobd.store.base import Exchanged, Outcome, Start, Store, ordering_key, storable_outcome
from jobd.store.postgres import workflows as workflow_rows
from jobd.store.postgres.queries import QUERIES
from jobd.store.postgres.rows import claim_params, finish_params, jobs_from_tuples, wants_pending

if TYPE_CHECKING:
    from jobd.store.postgres.store import PostgresStore


async def finish_and_claim(
    store: PostgresStore,
    node: str,
    outcomes: Sequence[Outcome],
    starts: Sequence[Start],
    *,
    limit: int,
    lease: float,
    types: Sequence[str] | None = None,
    exclude_queues: Sequence[str] | None = None,
) -> Exchanged:
    ending = [storable_outcome(o) for o in outcomes]
    if starts or limit <= 0 or any(wants_pending(o) for o in ending):
        return await Store.finish_and_claim(
            store,
            node,
            outcomes,
            starts,
            limit=limit,
            lease=lease,
            types=types,
            exclude_queues=exclude_queues,
        )
    async with store.pool.connection() as conn:
        async with conn.pipeline():  # leaving it syncs: both results are in, committed
            finishing = None
            if ending:
                params = finish_params(node, ending)
                finishing = await conn.execute(QUERIES["finish"], params, prepare=True)
            params = claim_params(node, limit, lease, types=types, exclude_queues=exclude_queues)
            claiming = conn.cursor(row_factory=tuple_row)
            await claiming.execute(QUERIES["claim"], params, prepare=True)
        rows = await finishing.fetchall() if finishing is not None else []
        jobs = jobs_from_tuples(claiming.description, await claiming.fetchall())
    applied = {row["id"]: State(row["state"]) for row in rows}
    store._notify_finished(applied)
    workflow_rows.announce_released(store, rows)  # as finish does: the dependents it released
    return Exchanged(applied, sorted(jobs, key=ordering_key))
