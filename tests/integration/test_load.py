"""Many control-protocol clients at once against a real `jobd run` on PostgreSQL
(docs/guarantees.md, "Load"): 200 connections, all open before anyone speaks, each submitting
and reading -- get, list, stats, wait -- in turn.  Every request gets its own answer, none is an
error, and every submit is stored exactly once and runs.  (tests/integration/test_control.py has
200 clients submitting, with garbage in between; here they read while others write.)"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from control_harness import Daemon, running_daemon

pytestmark = pytest.mark.postgres

CLIENTS = 200
JOBS_EACH = 5


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    schema = f"jobd_load_{uuid.uuid4().hex[:8]}"
    with running_daemon(pg_url, schema, workers=2) as d:
        yield d


class Conversation:
    """One client's connection, in raw bytes: a request, then its answer."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.buffer = b""
        self.ids = iter(range(1, 1_000_000))

    def call(self, method: str, params: dict | None = None) -> dict:
        call_id = next(self.ids)
        message = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or {}}
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"{method}: connection closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply = json.loads(line)
        assert reply.get("id") == call_id, (method, reply)
        assert "error" not in reply, (method, params, reply)
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


def test_200_clients_submitting_and_reading_at_once(daemon: Daemon) -> None:
    queue = f"load-{uuid.uuid4().hex[:8]}"
    everyone_connected = threading.Barrier(CLIENTS, timeout=60)

    def client(n: int) -> list[int]:
        talk = Conversation(str(daemon.socket))
        try:
            everyone_connected.wait()
            ids = []
            for i in range(JOBS_EACH):
                params = {"type": "echo", "queue": queue, "payload": {"n": n, "i": i}}
                params["idempotency_key"] = f"{queue}-{n}-{i}"
                job = talk.call("submit", params)["job"]
                ids.append(job["id"])
                assert talk.call("get", {"id": job["id"]})["job"]["payload"] == {"n": n, "i": i}
                page = talk.call("list", {"queue": queue, "limit": 5})
                assert 1 <= len(page["jobs"]) <= 5
                if i % 2:
                    assert talk.call("stats")["jobs"]["by_state"]
            done = talk.call("wait", {"id": ids[-1], "timeout": 60})
            assert done["job"]["state"] == "completed", done
            return ids
        finally:
            talk.close()

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = [i for result in pool.map(client, range(CLIENTS)) for i in result]
    took = time.monotonic() - started

    assert len(ids) == len(set(ids)) == CLIENTS * JOBS_EACH  # none lost, none doubled
    with daemon.client() as c:
        stored = list(c.iter_jobs(queue=queue))
        assert sorted(j.id for j in stored) == sorted(ids)
        assert {(j.payload["n"], j.payload["i"]) for j in stored} == {
            (n, i) for n in range(CLIENTS) for i in range(JOBS_EACH)
        }
        deadline = time.monotonic() + 60
        for job_id in ids:
            result = c.wait(job_id, timeout=max(deadline - time.monotonic(), 0))
            assert result.job.state.value == "completed", result.job
    print(f"{CLIENTS} clients, {CLIENTS * JOBS_EACH} submits and their reads in {took:.1f} s")
