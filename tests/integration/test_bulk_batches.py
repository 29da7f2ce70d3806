"""A bulk retry over more than one batch commits in batches of at most BULK_BATCH jobs, seen
from the database itself: a statement-level trigger this test installs on `jobs` records, for
every INSERT that moves retried jobs back from finished_jobs, the transaction it ran in
(txid_current()) and how many jobs it moved.  A retry_many done in one transaction, or in
batches larger than the limit, fails it; so does one that skips jobs."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobd import Client
from jobd.limits import BULK_BATCH
from jobd.store import Store

pytestmark = pytest.mark.postgres

FAILED = 2 * BULK_BATCH + BULK_BATCH // 2  # three batches, the last one short

_FILL = """
INSERT INTO finished_jobs (id, type, queue, state, attempts, max_attempts, last_error,
                           created_at, updated_at, started_at, finished_at)
SELECT nextval('jobs_id_seq'), 'noop', 'outage', 'failed', 1, 1,
       '{"type": "Boom", "message": "down", "traceback": null}', now(), now(), now(), now()
  FROM generate_series(1, %s)
"""
_COUNTER = """
CREATE TABLE retried_by_tx (txid bigint NOT NULL, moved integer NOT NULL);
CREATE FUNCTION count_retried() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retried_by_tx
    SELECT txid_current(), count(*) FROM moved_rows WHERE queue = 'outage' HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER count_retried AFTER INSERT ON jobs REFERENCING NEW TABLE AS moved_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_retried();
"""


def test_a_bulk_retry_commits_at_most_bulk_batch_jobs_per_transaction(
    make_daemon, pg_store: Store, raw: psycopg.Connection[Any]
) -> None:
    node = make_daemon().start()  # on the schema pg_store migrated
    with Client(node.env["JOBD_SOCKET"], timeout=60) as client:
        client.call("queue_pause", {"name": "outage"})  # the retried jobs wait: a quiet table
        raw.execute(_FILL, (FAILED,))
        raw.execute(_COUNTER)
        answer = client.call("retry_many", {"queue": "outage", "state": "failed"})
    assert answer["changed"] == FAILED and answer["next_cursor"] is None
    per_tx = raw.execute("SELECT sum(moved) FROM retried_by_tx GROUP BY txid").fetchall()
    sizes = sorted((int(n) for (n,) in per_tx), reverse=True)
    assert sum(sizes) == FAILED
    assert max(sizes) <= BULK_BATCH, sizes
    assert sizes == [BULK_BATCH, BULK_BATCH, BULK_BATCH // 2]
    pending = raw.execute("SELECT count(*) FROM jobs WHERE queue = 'outage' AND state = 'pending'")
    assert pending.fetchone() == (FAILED,)
    assert node.stop() == 0
