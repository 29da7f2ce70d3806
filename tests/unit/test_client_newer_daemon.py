"""jobd.client and jobctl against a newer daemon: the protocol promises that replies only gain
members, so a state and a job member this version does not know are carried through and shown
as they are -- not refused as a malformed reply.

And `Client.submit_ids` against an older daemon, which answers with the jobs.

The newer daemon is a stand-in: a thread answering the control protocol on a Unix socket with
canned replies, the way a daemon with a `held` state would.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from control_harness import run_jobctl, short_dir

from jobd.client import Client
from jobd.domain import State

WAITING_JOB = {
    "id": 7, "type": "report", "queue": "default", "priority": 0, "payload": {"n": 1},
    "state": "held", "attempts": 0, "max_attempts": 3, "crashes": 0,
    "run_at": "2030-01-01T00:00:00Z", "timeout": None, "last_error": None, "result": None,
    "idempotency_key": None, "correlation_id": None, "cancel_requested": False,
    "lease_owner": None, "lease_expires_at": None, "created_at": "2030-01-01T00:00:00Z",
    "updated_at": "2030-01-01T00:00:00Z", "started_at": None, "finished_at": None,
    "waits_for": [5, 6],
}  # fmt: skip


@dataclass
class NewerDaemon:
    """Answers each request with `answer(method, params)`, and records the requests."""

    socket: Path
    answer: Callable[[str, dict[str, Any]], Any]
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                message = json.loads(line)
                params = message.get("params", {})
                self.requests.append((message["method"], params))
                result = self.answer(message["method"], params)
                reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()


def _waiting_then(final: dict[str, Any], waits: int) -> Callable[[str, dict[str, Any]], Any]:
    """A daemon whose job 7 is `held` (not finished: timed_out) for `waits` waits, then is
    `final`; get and list show it waiting."""
    calls = iter(range(waits + 1))

    def answer(method: str, params: dict[str, Any]) -> Any:
        if method == "wait":
            if next(calls, waits) < waits:
                return {"job": WAITING_JOB, "timed_out": True}
            return {"job": final, "timed_out": False}
        if method == "list":
            return {"jobs": [WAITING_JOB], "next_cursor": None}
        return {"job": WAITING_JOB}

    return answer


@pytest.fixture
def newer_daemon() -> Iterator[Callable[[Callable[[str, dict[str, Any]], Any]], NewerDaemon]]:
    directory = short_dir()
    listeners: list[socket.socket] = []

    def start(answer: Callable[[str, dict[str, Any]], Any]) -> NewerDaemon:
        daemon = NewerDaemon(directory / "jobd.sock", answer)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(daemon.socket))
        listener.listen()
        listeners.append(listener)
        threading.Thread(target=daemon.serve, args=(listener,), daemon=True).start()
        return daemon

    yield start
    for listener in listeners:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    shutil.rmtree(directory)


# --- the Python client ---------------------------------------------------------------------------


def test_get_and_list_carry_an_unknown_state_and_member(newer_daemon: Any) -> None:
    daemon = newer_daemon(_waiting_then(WAITING_JOB, 0))
    with Client(daemon.socket) as client:
        job = client.get(7)
        page = client.list(state="pending")
    assert job.state == "held" and job.state_name == "held"
    assert job.extra == {"waits_for": [5, 6]} and job.to_dict() == WAITING_JOB
    assert [j.to_dict() for j in page.jobs] == [WAITING_JOB]


def test_wait_goes_on_through_an_unknown_state_until_the_reply_says_finished(
    newer_daemon: Any,
) -> None:
    done = WAITING_JOB | {"state": "completed", "result": {"ok": True}}
    daemon = newer_daemon(_waiting_then(done, 2))
    with Client(daemon.socket) as client:
        result = client.wait(7)
    assert not result.timed_out and result.job.state is State.COMPLETED
    assert [m for m, _ in daemon.requests] == ["wait", "wait", "wait"]


def test_wait_returns_an_unknown_state_the_daemon_calls_final(newer_daemon: Any) -> None:
    daemon = newer_daemon(_waiting_then(WAITING_JOB | {"state": "skipped"}, 0))
    with Client(daemon.socket) as client:
        result = client.wait(7)
    assert not result.timed_out and result.job.state == "skipped"


def test_submit_ids_reads_the_ids_out_of_an_older_daemons_jobs(newer_daemon: Any) -> None:
    """The other way round: a daemon from before submit_many's `reply` ignores it, as the
    protocol says of unknown members, and answers with the jobs."""
    pending = WAITING_JOB | {"state": "pending"}
    results = [{"job": pending, "created": False}, {"job": pending | {"id": 8}, "created": True}]
    daemon = newer_daemon(lambda method, params: {"results": results, "names": {}})
    with Client(daemon.socket) as client:
        batch = client.submit_ids([{"type": "report"}, {"type": "report"}])
    assert (batch.ids, batch.created, batch.names) == ([7, 8], [False, True], {})
    assert daemon.requests[0][1]["reply"] == "ids"


# --- jobctl ---------------------------------------------------------------------------------------


def test_jobctl_status_shows_an_unknown_state_and_member(newer_daemon: Any) -> None:
    daemon = newer_daemon(_waiting_then(WAITING_JOB, 0))
    shown = run_jobctl(daemon.socket, "status", "7")
    assert shown.returncode == 0, shown.stderr
    assert "state:            held" in shown.stdout
    assert "waits_for:        [5, 6]" in shown.stdout
    as_json = run_jobctl(daemon.socket, "--json", "status", "7")
    assert json.loads(as_json.stdout) == WAITING_JOB


def test_jobctl_list_shows_an_unknown_state(newer_daemon: Any) -> None:
    daemon = newer_daemon(_waiting_then(WAITING_JOB, 0))
    listed = run_jobctl(daemon.socket, "list")
    assert listed.returncode == 0, listed.stderr
    _, row = listed.stdout.splitlines()
    assert row.split()[:3] == ["7", "held", "report"]
    as_json = run_jobctl(daemon.socket, "--json", "list")
    assert json.loads(as_json.stdout) == {"jobs": [WAITING_JOB], "next_cursor": None}


def test_jobctl_wait_waits_through_an_unknown_state(newer_daemon: Any) -> None:
    done = WAITING_JOB | {"state": "completed", "result": {"ok": True}}
    daemon = newer_daemon(_waiting_then(done, 2))
    waited = run_jobctl(daemon.socket, "wait", "7")
    assert waited.returncode == 0, waited.stderr
    assert "state:            completed" in waited.stdout


def test_jobctl_wait_on_an_unknown_final_state_is_exit_1(newer_daemon: Any) -> None:
    daemon = newer_daemon(_waiting_then(WAITING_JOB | {"state": "skipped"}, 0))
    waited = run_jobctl(daemon.socket, "wait", "7")
    assert waited.returncode == 1
    assert "state:            skipped" in waited.stdout
    assert waited.stderr == "jobctl: job 7 skipped\n"


def test_jobctl_wait_timing_out_in_an_unknown_state_is_exit_1(newer_daemon: Any) -> None:
    daemon = newer_daemon(_waiting_then(WAITING_JOB, 10**6))
    waited = run_jobctl(daemon.socket, "wait", "7", "--timeout", "0")
    assert waited.returncode == 1 and "timed out waiting for job 7" in waited.stderr
    assert "state:            held" in waited.stdout
