"""An idle node claims a job in its submit's own round trip and transaction (ADR 0042), seen
from the database: triggers this test installs on `jobs` record the transaction
(txid_current()) of each insert and of each claim (pending → running)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobd import Client
from jobd.store import Store

pytestmark = pytest.mark.postgres

_RECORDER = """
CREATE TABLE seen (op text NOT NULL, txid bigint NOT NULL, job bigint NOT NULL);
CREATE FUNCTION note_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen VALUES (TG_OP, txid_current(), NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER note_insert AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION note_change();
CREATE TRIGGER note_claim AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.state = 'pending' AND NEW.state = 'running') EXECUTE FUNCTION note_change();
"""
JOBS = 20


def test_an_idle_node_claims_a_submitted_job_in_the_submits_transaction(
    make_daemon, pg_store: Store, raw: psycopg.Connection[Any]
) -> None:
    raw.execute(_RECORDER)
    # A long poll interval: the node's own periodic claims (a few milliseconds in flight, when
    # the submit leaves the claim to them) come seldom.
    node = make_daemon(JOBD_JOBS_POLL_INTERVAL="1").start(until_answering=True)
    with Client(node.env["JOBD_SOCKET"], timeout=60) as client:
        jobs = []
        for n in range(JOBS):
            job = client.submit("echo", {"n": n}).job
            assert job.state_name == "pending"  # the answer is the job as inserted
            assert not client.wait(job.id, timeout=30).timed_out
            jobs.append(job.id)
    seen = raw.execute("SELECT job, op, txid FROM seen ORDER BY job, op").fetchall()
    by_job: dict[int, dict[str, int]] = {}
    for job_id, op, txid in seen:
        assert op not in by_job.setdefault(job_id, {}), f"job {job_id} {op} twice"
        by_job[job_id][op] = txid
    assert sorted(by_job) == sorted(jobs)
    together = [j for j, ops in by_job.items() if ops["INSERT"] == ops["UPDATE"]]
    # Each submit went to an idle node; one whose claim was left to the supervisor (its own
    # claim in flight at that moment) is a rare race, not the rule.
    assert len(together) >= JOBS - 2, by_job
    assert node.stop() == 0
