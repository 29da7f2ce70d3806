"""`subscribe` against a real daemon on PostgreSQL: a subscriber sees each change of its jobs'
states as the daemon makes it; a subscriber that stops reading is dropped, never waited for,
and the daemon goes on running jobs; a subscribe inside a batch is refused."""

from __future__ import annotations

import json
import queue
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from control_harness import Daemon, running_daemon

from jobd.subscriptions import JobChange, SubscriptionLost, follow
from tests.eventually import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    with running_daemon(pg_url, f"jobd_sub_{uuid.uuid4().hex[:8]}", workers=2) as d:
        yield d


def _collect(daemon: Daemon) -> tuple[queue.Queue[JobChange | str], threading.Thread]:
    changes: queue.Queue[JobChange | str] = queue.Queue()

    def run() -> None:
        try:
            for change in follow(daemon.socket):
                changes.put(change)
        except SubscriptionLost as exc:
            changes.put(f"lost: {exc}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return changes, thread


def _until(changes: queue.Queue[JobChange | str], job_id: int, state: str) -> list[JobChange]:
    seen: list[JobChange] = []
    while True:
        change = changes.get(timeout=30)
        assert isinstance(change, JobChange), change
        if change.id == job_id:
            seen.append(change)
            if change.state == state:
                return seen


def test_a_subscriber_sees_a_jobs_changes_in_order(daemon: Daemon) -> None:
    changes, _ = _collect(daemon)
    with daemon.client() as client:
        wait_for(lambda: "subscribe" in client.hello().methods, 10, "hello")
        # The subscription is registered once its answer is read; a first job proves it.
        wait_for(lambda: client.submit("echo", {}) and not changes.empty(), 10, "a first change")
        job = client.submit("echo", {"n": 1}).job
        seen = _until(changes, job.id, "completed")
        failed = client.submit("ctl_fail", {"message": "<b>no</b>"}).job
        seen_failed = _until(changes, failed.id, "failed")
        client.retry(failed.id)
        retried = _until(changes, failed.id, "failed")
    assert [c.event for c in seen] == ["submitted", "started", "completed"]
    assert [c.state for c in seen] == ["pending", "running", "completed"]
    assert {(c.type, c.queue) for c in seen} == {("echo", "default")}
    assert seen[1].queue_wait is not None and seen[1].queue_wait >= 0
    assert seen_failed[-1].event == "failed"
    assert retried[0].event == "requeued"


def test_a_subscriber_that_does_not_read_is_dropped_and_jobs_go_on(daemon: Daemon) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(daemon.socket))
    sock.sendall(b'{"jsonrpc":"2.0","id":7,"method":"subscribe","params":{"topics":["jobs"]}}\n')
    first = sock.makefile("rb").readline()
    assert json.loads(first)["result"]["topics"] == ["jobs"]
    # Never read again: thousands of changes later the daemon has dropped it, not stalled.
    with daemon.client() as client:
        for _ in range(4):
            results = client.submit_many([{"type": "echo", "payload": {"pad": "x" * 200}}] * 1000)
        last = results[-1].job.id
        done = client.wait(last, timeout=60).job
    assert done.state.value == "completed"
    wait_for(lambda: "subscription ended" in daemon.log(), 30, "the slow subscriber dropped")
    sock.close()


def test_subscribe_in_a_batch_is_refused(daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(b'[{"jsonrpc":"2.0","id":1,"method":"subscribe"}]\n')
        reply = json.loads(sock.makefile("rb").readline())
    assert reply[0]["error"]["data"]["code"] == "invalid_request"
    assert "subscribe" in reply[0]["error"]["message"]
