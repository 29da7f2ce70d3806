"""Guarantees that the chaos harness can only hit by chance, each made to happen on purpose here
against a real `jobd run` on PostgreSQL (docs/guarantees.md names the test of each promise)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from jobd.client import Client
from jobd.domain import NewJob, State
from jobd.store import Store

from .conftest import RunLog, eventually, wait_for

pytestmark = pytest.mark.postgres

RECOVERED = "recovered a job whose lease expired"


async def until_state(store: Store, job_id: int, *states: State, timeout: float = 20.0):
    async def check():
        job = await store.get(job_id)
        return job if job.state in states else None

    return await eventually(check, timeout, f"job {job_id} to be {'/'.join(states)}")


def node_of(daemon) -> str:
    with Client(daemon.env["JOBD_SOCKET"], timeout=10) as client:
        return client.hello().node


async def test_a_claim_whose_answer_was_lost_is_not_stuck(
    make_daemon, pg_url: str, pg_schema: str, pg_store: Store, runlog: RunLog
) -> None:
    """The database committed a claim but the node never got the answer (the connection broke
    on the way back): the job is `running` under the node's lease, and the node does not know
    it.  Its heartbeat must not keep that lease alive: the job expires, is recovered and runs.
    (Before the fix, the heartbeat renewed every running row of the node, for ever.)"""
    d = make_daemon(JOBD_JOBS_LEASE_SECONDS="2", JOBD_JOBS_HEARTBEAT_SECONDS="0.3").start()
    node = node_of(d)
    later = datetime.now(UTC) + timedelta(hours=1)  # not claimable: only our UPDATE claims it
    job_id = (await pg_store.submit(NewJob("noop", {}, run_at=later))).job.id
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f"UPDATE \"{pg_schema}\".jobs SET state = 'running', attempts = attempts + 1,"
            " lease_owner = %s, lease_expires_at = now() + interval '2 seconds',"
            " started_at = now(), updated_at = now(), run_at = now() WHERE id = %s",
            (node, job_id),
        )
    job = await until_state(pg_store, job_id, State.COMPLETED, timeout=20)
    assert job.attempts == 2  # the lost attempt was spent, as for any expired lease
    assert runlog.runs()[job_id] == 1
    recovered = wait_for(
        lambda: [e for e in d.events() if e.get("message") == RECOVERED],
        what="the recovery to be logged",
    )
    assert recovered[0]["job_id"] == job_id


async def test_jobs_recovered_into_a_final_state_are_counted_there(
    make_daemon, pg_store: Store, runlog: RunLog
) -> None:
    """A job whose lease expired with no attempt left ends `failed`, one with a cancel waiting
    ends `canceled`: the recovering node counts each in jobd_jobs_failed / _canceled as well as
    in jobd_jobs_recovered, so those counters agree with the store (before the fix they were
    counted as recovered only, and an alert on failed jobs missed them)."""
    d = make_daemon(JOBD_JOBS_LEASE_SECONDS="2", JOBD_WORKERS="2").start()
    last = (await pg_store.submit(NewJob("napper", {"seconds": 60}, max_attempts=1))).job.id
    cancel = (await pg_store.submit(NewJob("napper", {"seconds": 60}))).job.id
    wait_for(lambda: runlog.of(last) and runlog.of(cancel), what="both jobs to start")
    d.kill()
    await pg_store.request_cancel(cancel)
    d.start()
    assert (await until_state(pg_store, last, State.FAILED)).last_error.type == "LeaseExpired"
    await until_state(pg_store, cancel, State.CANCELED)
    with Client(d.env["JOBD_SOCKET"], timeout=10) as client:
        counters = client.stats().counters
    assert counters["recovered"] == 2
    assert counters["failed"] == 1 and counters["canceled"] == 1
    metrics = Client(d.env["JOBD_SOCKET"], timeout=10).metrics()
    assert 'jobd_jobs_failed_total{queue="default",type="napper"} 1.0' in metrics
