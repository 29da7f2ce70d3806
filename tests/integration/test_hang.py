"""The database hangs: connections stay open and nothing comes back (docs/guarantees.md, "A
database that hangs"; docs/adr/0022-supervision-apart-from-io.md).

The daemon reaches PostgreSQL through the TCP proxy of tests/tcp_proxy.py in its black-hole
mode: connections are accepted and read, nothing is forwarded, nothing is closed -- what a
network partition, a failover or a saturated server looks like.  Being a userspace proxy it
keeps ACKing, so TCP keepalives and tcp_user_timeout never fire: only the daemon's own deadlines
can end its waits.  While it hangs: a job past its timeout is killed on time, `health` answers
within 2 s that the store is unavailable, and a SIGTERM starts the drain at once and the daemon
exits in bounded time.  Afterwards nothing is lost, and nothing ran twice except what a lost
lease allows.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tcp_proxy import TcpProxy

from jobd.client import Client
from jobd.domain import State
from jobd.store import Store

from .conftest import Daemon, RunLog, wait_for
from .test_outage import _until_state as until_state
from .test_outage import submit

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HANG = float(os.environ.get("JOBD_TEST_HANG_SECONDS", "12"))  # the brief: 10 to 60 s
HEALTH_BOUND = 2.0  # `health` answers within this long, hang or not
DRAIN_TIMEOUT = 4.0
KILL_GRACE = 0.5
EXIT_BOUND = DRAIN_TIMEOUT + KILL_GRACE + 5.0  # SIGTERM to exit while the database hangs
SETTINGS = {
    "JOBD_WORKERS": "2",
    "JOBD_DATABASE_STATEMENT_TIMEOUT": "2",
    "JOBD_JOBS_HEARTBEAT_SECONDS": "1",
    "JOBD_SHUTDOWN_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
    "JOBD_SHUTDOWN_KILL_GRACE": str(KILL_GRACE),
}


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    port = urlsplit(pg_url).port or 5432
    proxy = TcpProxy(("127.0.0.1", port)).start()
    yield proxy
    proxy.close()


def health_within_bound(socket: str) -> tuple[str, str]:
    """(status, store) of `health`, which must have answered within HEALTH_BOUND."""
    started = time.monotonic()
    with Client(socket, timeout=10) as client:
        health = client.health()
    took = time.monotonic() - started
    assert took < HEALTH_BOUND, f"health took {took:.1f}s"
    return health.status, health.store


def events_named(d: Daemon, message: str, **fields: object) -> list[dict]:
    return [
        e
        for e in d.events()
        if e.get("message") == message and all(e.get(k) == v for k, v in fields.items())
    ]


async def test_a_hang_stalls_no_timeout_health_or_result(
    make_daemon, pg_url: str, proxy: TcpProxy, pg_store: Store, runlog: RunLog
) -> None:
    d = make_daemon(
        JOBD_DATABASE_URL=proxy.url(pg_url),
        # Leases longer than the hang: the node's own jobs stay its own throughout.
        JOBD_JOBS_LEASE_SECONDS=str(HANG + 30),
        **SETTINGS,
    ).start()
    socket = d.env["JOBD_SOCKET"]
    assert health_within_bound(socket) == ("ok", "ok")
    napper = await submit(pg_store, "napper", {"seconds": 2.0})
    busy = await submit(pg_store, "busy", timeout=3.0, max_attempts=1)
    wait_for(lambda: runlog.of(napper) and runlog.of(busy), what="the jobs to start")
    busy_started = runlog.of(busy)[0][4]

    proxy.blackhole()
    hung_at = time.monotonic()

    # health: within its bound every time, and soon saying the store is unavailable.
    wait_for(
        lambda: health_within_bound(socket) == ("degraded", "unavailable"),
        timeout=HEALTH_BOUND + 5,
        what="health to say the store is unavailable",
    )
    # The busy loop is killed at its timeout, the database hanging or not.
    stopping = wait_for(
        lambda: events_named(d, "stopping job", job_id=busy),
        timeout=10,
        what="the busy job to be stopped",
    )
    assert stopping[0]["reason"] == "timeout"
    stopped_after = datetime.fromisoformat(stopping[0]["ts"]).timestamp() - busy_started
    assert stopped_after < 3.0 + 1.0, f"stopped {stopped_after:.1f}s after it started"
    # The napper finished meanwhile: its result waits in the daemon.
    wait_for(lambda: runlog.of(napper, "done"), what="the napper to finish")

    while time.monotonic() - hung_at < HANG:
        assert d.proc.poll() is None, d.stderr()
        assert health_within_bound(socket)[1] == "unavailable"
        time.sleep(0.5)
    for job_id in (napper, busy):  # nothing could be written: still running in the database
        assert (await pg_store.get(job_id)).state is State.RUNNING
    proxy.restore()

    # Back: the results kept are written, each job having run once, and work goes on.
    job = await until_state(pg_store, napper, State.COMPLETED)
    assert job.attempts == 1 and runlog.runs()[napper] == 1
    job = await until_state(pg_store, busy, State.FAILED)
    assert job.last_error.type == "Timeout" and runlog.runs()[busy] == 1
    after = await submit(pg_store, "noop")
    await until_state(pg_store, after, State.COMPLETED)
    wait_for(lambda: health_within_bound(socket) == ("ok", "ok"), what="health to be ok again")
    assert d.proc.poll() is None


async def test_a_drain_during_a_hang_begins_at_once_and_ends_in_bounded_time(
    make_daemon, pg_url: str, proxy: TcpProxy, pg_store: Store, runlog: RunLog
) -> None:
    lease = 4.0
    d = make_daemon(
        JOBD_DATABASE_URL=proxy.url(pg_url), JOBD_JOBS_LEASE_SECONDS=str(lease), **SETTINGS
    ).start()
    short = await submit(pg_store, "napper", {"seconds": 0.5})
    long = await submit(pg_store, "napper", {"seconds": 60})
    wait_for(lambda: runlog.of(short, "done") and runlog.of(long), what="the jobs to start")
    await until_state(pg_store, short, State.COMPLETED)
    queued = [await submit(pg_store, "noop") for _ in range(3)]  # pending, claimed or not

    proxy.blackhole()
    time.sleep(1.0)  # the hang has begun: calls are now stuck on it
    d.signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_for(lambda: d.event("draining"), timeout=5, what="the drain to begin")
    assert time.monotonic() - signalled < 1.0
    code = d.running.wait_exit(EXIT_BOUND + 5)
    took = time.monotonic() - signalled
    assert code == 0, d.stderr()
    assert took < EXIT_BOUND, f"exited {took:.1f}s after SIGTERM"
    proxy.restore()

    # Nothing lost: the long job (stopped by the drain, its release unwritten) and whatever
    # the node held come back when their leases expire, and a new node finishes them all.
    # Nothing ran twice but what a lost lease allows: the short job, finished before the
    # hang, ran once.
    d.start()
    for job_id in (long, *queued):
        await until_state(pg_store, job_id, State.COMPLETED, timeout=90)
    assert runlog.runs()[short] == 1
    assert all(runlog.runs()[job_id] <= 2 for job_id in queued)


def test_the_proxy_black_holes(proxy: TcpProxy, tmp_path: Path) -> None:
    """The black hole keeps connections open and forwards nothing (what the tests rely on)."""
    import socket as sockets

    proxy.blackhole()
    conn = sockets.create_connection(("127.0.0.1", proxy.port), timeout=2)
    try:
        conn.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # an SSLRequest: the server answers
        conn.settimeout(1.0)
        with pytest.raises(TimeoutError):
            conn.recv(1)
    finally:
        conn.close()
    proxy.restore()
