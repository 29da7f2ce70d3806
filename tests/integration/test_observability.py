"""What an operator sees: JSON logs that follow a job, and systemd notifications."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobd import Client
from jobd.domain import NewJob, State
from jobd.store import Store

from .conftest import wait_for
from .test_supervisor import until_state

pytestmark = pytest.mark.postgres


async def test_logs_follow_a_job_by_its_correlation_id(make_daemon, pg_store: Store) -> None:
    d = make_daemon(JOBD_LOGGING_JOB_EVENTS="true").start()
    with Client(d.env["JOBD_SOCKET"]) as client:
        job = client.submit("chatty", {}, correlation_id="req-42").job
    await until_state(pg_store, job.id, State.COMPLETED)
    wait_for(lambda: any(e.get("message") == "job completed" for e in d.events()))
    assert d.stop() == 0
    lines = d.stderr().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    mine = [e for e in events if e.get("correlation_id") == "req-42"]
    story = [(e["message"], e.get("attempt")) for e in mine if e["logger"] == "jobd.jobs"]
    assert story == [
        ("job submitted", 0),
        ("job started", 1),
        ("job retried", 1),
        ("job started", 2),
        ("job completed", 2),
    ]
    retried = next(e for e in mine if e["message"] == "job retried")
    assert (retried["from"], retried["to"]) == ("running", "pending")
    assert retried["error_type"] == "ValueError" and retried["error"] == "first attempt fails"
    for e in mine:
        assert e["job_id"] == job.id and e["job_type"] == "chatty" and e["queue"] == "default"
        assert e["ts"].endswith("Z") and e["level"] and e["node"] and e["pid"]
    handler_lines = [e for e in mine if e["message"].startswith("hello from")]
    assert {e["message"] for e in handler_lines} == {
        "hello from ctx.logger",
        "hello from plain logging",
    }
    assert {e["attempt"] for e in handler_lines} == {1, 2}
    assert d.proc.pid not in {e["pid"] for e in handler_lines}  # written by the workers


async def test_job_events_are_quiet_by_default(make_daemon, pg_store: Store) -> None:
    d = make_daemon().start()
    job = (await pg_store.submit(NewJob("noop", {}))).job
    await until_state(pg_store, job.id, State.COMPLETED)
    assert d.stop() == 0
    assert not [e for e in d.events() if e.get("job_id") == job.id]


def test_sigusr1_prints_every_threads_stack_and_the_node_runs_on(make_daemon, pg_store) -> None:
    """What an operator (or a test that found a node stuck) sends to see where it is."""
    d = make_daemon().start()
    assert d.running is not None
    stacks = d.running.stacks()
    assert "Current thread 0x" in stacks and stacks.count("Thread 0x") >= 1  # the control thread's
    assert "jobd/daemon.py" in stacks  # the main thread, in its event loop
    with Client(d.env["JOBD_SOCKET"]) as client:
        assert client.call("hello", {})["node"]
    assert d.stop() == 0


async def test_a_failed_job_logs_its_traceback_as_one_field(make_daemon, pg_store) -> None:
    d = make_daemon().start()
    job = (await pg_store.submit(NewJob("flaky", {"fail_times": 9}, max_attempts=1))).job
    await until_state(pg_store, job.id, State.FAILED)
    line = wait_for(lambda: next((e for e in d.events() if e.get("message") == "job failed"), None))
    assert line["level"] == "WARNING" and line["job_id"] == job.id
    assert line["traceback"].startswith("Traceback") and "flaky failure" in line["traceback"]


async def test_metrics_count_a_known_mix_of_jobs(make_daemon, pg_store: Store) -> None:
    token = "metrics-test-token"
    d = make_daemon(JOBD_HTTP_LISTEN="127.0.0.1:0", JOBD_HTTP_TOKENS=token).start()
    listen = wait_for(lambda: d.event("http shim listening"), what="the shim")["listen"]
    with Client(d.env["JOBD_SOCKET"]) as client:
        ids = [client.submit("noop", {}).job.id for _ in range(3)]
        ids.append(client.submit("flaky", {"fail_times": 1}).job.id)
        ids.append(client.submit("permanent", {}).job.id)
        later = client.submit("noop", {}, delay=3600).job.id
        client.cancel(later)
        for job_id in ids:
            client.wait(job_id, timeout=20)
    request = urllib.request.Request(
        f"http://{listen}/metrics", headers={"Authorization": f"Bearer {token}"}
    )

    def scrape() -> dict[tuple[str, tuple], float]:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def count(event: str, job_type: str) -> float:
        return samples.get(
            (f"jobd_jobs_{event}_total", (("queue", "default"), ("type", job_type))), 0.0
        )

    def settled() -> dict | None:
        # The counters move once the outcomes are written, just after `wait` may answer.
        nonlocal samples
        samples = scrape()
        return samples if count("completed", "flaky") and count("failed", "permanent") else None

    samples: dict = {}
    wait_for(settled, what="the last outcomes to be counted")
    assert count("submitted", "noop") == 4 and count("submitted", "flaky") == 1
    assert count("completed", "noop") == 3 and count("completed", "flaky") == 1
    assert count("started", "noop") == 3 and count("started", "flaky") == 2
    assert count("retried", "flaky") == 1 and count("failed", "permanent") == 1
    assert count("canceled", "noop") == 1 and count("failed", "noop") == 0
    assert samples[("jobd_job_run_duration_seconds_count", (("type", "flaky"),))] == 2
    by_state = {labels: v for (name, labels), v in samples.items() if name == "jobd_jobs"}
    assert by_state[(("queue", "default"), ("state", "completed"))] == 4
    assert by_state[(("queue", "default"), ("state", "failed"))] == 1
    assert by_state[(("queue", "default"), ("state", "canceled"))] == 1
    assert ("jobd_workers", (("state", "idle"),)) in samples
    assert token not in d.stderr()


def test_sd_notify_ready_watchdog_stopping(make_daemon, tmp_path: Path) -> None:
    path = f"/tmp/jobd-notify-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(path)
        sock.settimeout(20)
        try:
            d = make_daemon(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
            d.start("--migrate")
            received: list[str] = []

            def saw(key: str) -> bool:
                while not any(m.startswith(key) for m in received):
                    received.extend(sock.recv(4096).decode().splitlines())
                return True

            assert saw("READY=1") and saw("WATCHDOG=1")
            assert any(m.startswith("STATUS=running") for m in received)
            d.signal(signal.SIGTERM)
            assert saw("STOPPING=1")
            assert d.proc.wait(20) == 0
            order = [
                m.split("=")[0]
                for m in received
                if m.split("=")[0] in ("READY", "WATCHDOG", "STOPPING")
            ]
            assert order.index("READY") < order.index("WATCHDOG") < order.index("STOPPING")
        finally:
            os.unlink(path)
