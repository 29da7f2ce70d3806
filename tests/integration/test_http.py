"""The HTTP shim as remote clients meet it: `jobd http` as a subprocess in front of a real
`jobd run` on PostgreSQL, every endpoint and every error the issue lists -- and `jobd run`
keeping the shim running as its child.

One daemon and one shim (with a bearer token) serve most of the module; the tests about a
daemon going away, about `jobd run`'s child and about starting refusals make their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from control_harness import ROOT, Daemon, running_daemon, start_daemon

from .conftest import wait_for

pytestmark = pytest.mark.postgres

TOKEN = "integration-" + uuid.uuid4().hex
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 1.0
START_TIMEOUT = 30.0


# --- the shim as a subprocess -------------------------------------------------------------------


@dataclass
class Shim:
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, message: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(self.log()) if e.get("message") == message]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def listening_url(log_text: str) -> str | None:
    """The URL of the latest "http shim listening" line in a log."""
    events = [e for e in json_lines(log_text) if e.get("message") == "http shim listening"]
    return f"http://{events[-1]['listen']}" if events else None


def start_shim(daemon: Daemon, env: Mapping[str, str] | None = None, name: str = "http") -> Shim:
    """`jobd http --listen 127.0.0.1:0` with the daemon's environment; ready when it logs the
    address it listens on."""
    log_path = daemon.home / f"{name}-{uuid.uuid4().hex[:6]}.log"
    full_env = {**daemon.env, "JOBD_LOGGING_FORMAT": "json", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobd.cli", "http", "--listen", "127.0.0.1:0"],
            cwd=daemon.home,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    shim = Shim(process, log_path)
    try:
        shim.url = wait_for(
            lambda: listening_url(shim.log()) or (process.poll() is not None and "exited"),
            timeout=START_TIMEOUT,
            what="jobd http to listen",
        )
    except AssertionError:
        process.kill()
        raise
    assert process.poll() is None, f"jobd http exited {process.returncode}:\n{shim.log()}"
    return shim


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    schema = f"jobd_http_{uuid.uuid4().hex[:8]}"
    with running_daemon(pg_url, schema, workers=2) as d:
        yield d


@pytest.fixture(scope="module")
def shim(daemon: Daemon) -> Iterator[Shim]:
    env = {
        "JOBD_HTTP_TOKENS": f"other-token,{TOKEN}",
        "JOBD_HTTP_MAX_BODY_BYTES": str(MAX_BODY),
        "JOBD_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
    }
    shim = start_shim(daemon, env)
    try:
        yield shim
    finally:
        code = shim.stop()
        log = shim.log()
        print(f"--- jobd http's log (the end) ---\n{log[-5000:]}")
        assert code == 0
        # Nothing secret in the log: neither the token nor a payload (see test_submit_*).
        assert TOKEN not in log
        assert PAYLOAD_MARKER not in log


@pytest.fixture
def http(shim: Shim) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


PAYLOAD_MARKER = "payload-" + uuid.uuid4().hex


def url(shim: Shim, path: str) -> str:
    return shim.url + path


def submit(http: requests.Session, shim: Shim, body: Any, **headers: str) -> requests.Response:
    return http.post(url(shim, "/jobs"), json=body, headers=headers, timeout=30)


def assert_problem(response: requests.Response, status: int, code: str, field: str | None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == "about:blank"
    assert problem["request_id"] == response.headers["X-Request-ID"]
    if field is not None:
        assert problem["field"] == field
        assert problem["detail"].startswith(f"{field}: "), problem["detail"]
    return problem


def new_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


# --- POST /jobs ---------------------------------------------------------------------------------


def test_submit_creates_and_the_location_leads_to_the_job(http, shim) -> None:
    body = {"type": "ctl_greet", "payload": {"name": PAYLOAD_MARKER}}
    response = submit(http, shim, body, **{"X-Request-ID": "req-abc-1"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert response.headers["X-Request-ID"] == "req-abc-1"
    assert job["correlation_id"] == "req-abc-1"
    assert job["state"] == "pending"
    fetched = http.get(url(shim, response.headers["Location"]), timeout=30)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == job["id"]
    done = http.get(url(shim, f"/jobs/{job['id']}/wait"), params={"timeout": 20}, timeout=60)
    assert done.json()["timed_out"] is False
    assert done.json()["job"]["result"] == {"greeting": f"hello {PAYLOAD_MARKER}"}


def test_a_request_id_is_made_when_absent_and_becomes_the_correlation_id(http, shim) -> None:
    response = submit(http, shim, {"type": "echo"})
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert response.json()["correlation_id"] == request_id


def test_idempotency_key_header_repeat_is_200_with_the_same_job(http, shim) -> None:
    key = uuid.uuid4().hex
    first = submit(http, shim, {"type": "echo"}, **{"Idempotency-Key": key})
    again = submit(http, shim, {"type": "echo"}, **{"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == key
    by_field = submit(http, shim, {"type": "echo", "idempotency_key": key})
    assert (by_field.status_code, by_field.json()["id"]) == (200, first.json()["id"])


def test_unknown_type_is_422(http, shim) -> None:
    problem = assert_problem(
        submit(http, shim, {"type": "no_such_type"}), 422, "unknown_type", "type"
    )
    assert "ctl_greet" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "echo", "priority": "high"}, "priority"),
        ({"type": "echo", "payload": [1]}, "payload"),
        ({"type": "echo", "max_attempts": 0}, "max_attempts"),
        ({"type": "echo", "run_at": "tomorrow"}, "run_at"),
        ({"type": "ctl_greet", "payload": {}}, "payload"),  # the handler's own validator
        ({"type": "echo", "priorty": 1}, "priorty"),  # unknown field: a typo
        ({"payload": {}}, "type"),
    ],
)
def test_bad_fields_are_400_naming_them(http, shim, body: dict, field: str) -> None:
    assert_problem(submit(http, shim, body), 400, "invalid_params", field)


def test_wrong_content_type_is_415(http, shim) -> None:
    response = http.post(url(shim, "/jobs"), data="type=echo", timeout=30)
    assert_problem(response, 415, "unsupported_media_type", "Content-Type")
    response = http.post(
        url(shim, "/jobs"), data='{"type": "echo"}', headers={"Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported_media_type", "Content-Type")


def test_malformed_json_is_400(http, shim) -> None:
    response = http.post(
        url(shim, "/jobs"), data=b'{"type": "echo",', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "parse_error", "body")


def test_a_body_over_the_limit_is_413_and_the_connection_closed(http, shim) -> None:
    body = {"type": "echo", "payload": {"x": "a" * MAX_BODY}}
    response = submit(http, shim, body)
    assert_problem(response, 413, "payload_too_large", "body")
    assert response.headers["Connection"] == "close"
    assert submit(http, shim, {"type": "echo"}).status_code == 201  # a new connection: fine


# --- the job endpoints --------------------------------------------------------------------------


def test_get_missing_job_is_404(http, shim) -> None:
    assert_problem(http.get(url(shim, "/jobs/999999999")), 404, "not_found", None)
    assert_problem(http.get(url(shim, "/jobs/abc")), 404, "not_found", "id")


def test_cancel_pending_then_conflict_then_missing(http, shim) -> None:
    job = submit(http, shim, {"type": "echo", "delay": 3600}).json()
    canceled = http.delete(url(shim, f"/jobs/{job['id']}"))
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "canceled"
    assert_problem(http.delete(url(shim, f"/jobs/{job['id']}")), 409, "conflict", None)
    assert_problem(http.delete(url(shim, "/jobs/999999999")), 404, "not_found", None)


def test_cancel_a_running_job(http, shim) -> None:
    job = submit(http, shim, {"type": "sleep", "payload": {"seconds": 60}}).json()
    wait_for(
        lambda: http.get(url(shim, f"/jobs/{job['id']}")).json()["state"] == "running",
        what="the sleep job to run",
    )
    response = http.delete(url(shim, f"/jobs/{job['id']}"))
    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    done = http.get(url(shim, f"/jobs/{job['id']}/wait"), params={"timeout": 30}, timeout=60)
    assert done.json()["job"]["state"] == "canceled"


def test_retry_a_failed_job(http, shim) -> None:
    job = submit(http, shim, {"type": "ctl_fail"}).json()
    done = http.get(url(shim, f"/jobs/{job['id']}/wait"), params={"timeout": 30}, timeout=60)
    assert done.json()["job"]["state"] == "failed"
    retried = http.post(url(shim, f"/jobs/{job['id']}/retry"))
    assert retried.status_code == 200
    assert (retried.json()["state"], retried.json()["attempts"]) == ("pending", 0)
    pending = submit(http, shim, {"type": "echo", "delay": 3600}).json()
    assert_problem(http.post(url(shim, f"/jobs/{pending['id']}/retry")), 409, "conflict", None)
    assert_problem(http.post(url(shim, "/jobs/999999999/retry")), 404, "not_found", None)


def test_wait_times_out_on_an_unfinished_job(http, shim) -> None:
    job = submit(http, shim, {"type": "echo", "delay": 3600}).json()
    started = time.monotonic()
    response = http.get(url(shim, f"/jobs/{job['id']}/wait"), params={"timeout": 0.3})
    assert response.status_code == 200
    assert response.json()["timed_out"] is True
    assert response.json()["job"]["state"] == "pending"
    assert time.monotonic() - started < 10
    assert_problem(http.get(url(shim, "/jobs/999999999/wait?timeout=0")), 404, "not_found", None)
    bad = http.get(url(shim, f"/jobs/{job['id']}/wait"), params={"timeout": "soon"})
    assert_problem(bad, 400, "invalid_params", "timeout")


def test_list_filters_and_pages(http, shim) -> None:
    queue = new_queue()
    ids = [
        submit(http, shim, {"type": "echo", "queue": queue, "delay": 3600}).json()["id"]
        for _ in range(5)
    ]
    seen: list[int] = []
    cursor = None
    while True:
        params = {"queue": queue, "state": "pending", "type": "echo", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = http.get(url(shim, "/jobs"), params=params)
        assert page.status_code == 200
        body = page.json()
        assert len(body["jobs"]) <= 2
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)  # newest first
    none = http.get(url(shim, "/jobs"), params={"queue": queue, "state": ["failed", "canceled"]})
    assert none.json() == {"jobs": [], "next_cursor": None}
    bad = http.get(url(shim, "/jobs"), params={"state": "sleeping"})
    assert_problem(bad, 400, "invalid_params", "state")
    assert_problem(http.get(url(shim, "/jobs?limit=many")), 400, "invalid_params", "limit")
    assert_problem(http.get(url(shim, "/jobs?stat=failed")), 400, "invalid_params", "stat")


@pytest.mark.parametrize("name", ["type", "queue"])
def test_a_nul_in_a_list_filter_is_400(http, shim, name: str) -> None:
    response = http.get(url(shim, "/jobs"), params={name: "a\x00b"})
    assert response.status_code == 400, response.text


def test_method_not_allowed(http, shim) -> None:
    response = http.put(url(shim, "/jobs/1"))
    assert_problem(response, 405, "method_not_allowed", None)
    assert response.headers["Allow"] == "GET, DELETE, HEAD"


# --- operations, the document, tokens ------------------------------------------------------------


def test_healthz_and_readyz(shim) -> None:
    assert requests.get(url(shim, "/healthz")).json() == {"status": "ok"}
    ready = requests.get(url(shim, "/readyz"))
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "store": "ok",
        "draining": False,
        "workers": {"ready": 2, "expected": 2},
    }


def test_metrics_is_prometheus_text(http, shim) -> None:
    response = http.get(url(shim, "/metrics"))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "jobd_" in response.text


def test_openapi_json_is_docs_openapi_yaml(shim) -> None:
    served = requests.get(url(shim, "/openapi.json"))
    assert served.status_code == 200
    with open(ROOT / "docs" / "openapi.yaml", encoding="utf-8") as f:
        assert served.json() == yaml.safe_load(f)


def test_tokens_missing_wrong_right(shim) -> None:
    missing = requests.get(url(shim, "/jobs"))
    assert_problem(missing, 401, "unauthorized", "Authorization")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="jobd"'
    wrong = requests.get(url(shim, "/jobs"), headers={"Authorization": "Bearer not-it"})
    assert_problem(wrong, 401, "unauthorized", "Authorization")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    right = requests.get(url(shim, "/jobs"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    other = requests.get(url(shim, "/jobs"), headers={"Authorization": "Bearer other-token"})
    assert other.status_code == 200
    assert requests.get(url(shim, "/metrics")).status_code == 401
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert requests.get(url(shim, path)).status_code == 200, path


def test_a_slow_client_times_out_while_others_are_served(http, shim) -> None:
    host, port = shim.url.removeprefix("http://").rsplit(":", 1)
    slow = socket.create_connection((host, int(port)), timeout=10)
    slow.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    slow.sendall(f"Authorization: Bearer {TOKEN}\r\n".encode())
    slow.sendall(b"Content-Length: 100\r\n\r\n{")  # ...and the rest of the body never comes
    started = time.monotonic()
    served = 0
    slow.settimeout(0.05)
    closed = False
    answer = b""
    while time.monotonic() - started < 15:
        assert http.get(url(shim, "/healthz")).status_code == 200
        served += 1
        try:
            data = slow.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            closed = True
            break
        answer += data
    slow.close()
    assert closed, "the slow client's connection was never closed"
    assert answer == b"", f"the slow client got an answer: {answer!r}"
    assert REQUEST_TIMEOUT * 0.8 <= time.monotonic() - started < REQUEST_TIMEOUT + 5
    assert served > 1


def test_keep_alive(http, shim) -> None:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        first = session.get(url(shim, "/healthz"))
        second = session.get(url(shim, "/jobs?limit=1"))
        assert "Connection" not in first.headers and second.status_code == 200
        # One connection served both: the pool never had to open a second.
        assert len(session.adapters["http://"].poolmanager.pools) == 1


# --- the daemon going away ----------------------------------------------------------------------


def test_daemon_down_is_503_and_the_shim_recovers_when_it_returns(pg_url: str) -> None:
    schema = f"jobd_http_down_{uuid.uuid4().hex[:8]}"
    daemon = start_daemon(pg_url, schema, workers=1)
    shim = None
    try:
        daemon.wait_ready()
        shim = start_shim(daemon, name="down")
        assert requests.post(url(shim, "/jobs"), json={"type": "echo"}).status_code == 201
        daemon.stop(expect=0)
        down = requests.get(url(shim, "/jobs/1"))
        problem = assert_problem(down, 503, "unavailable", None)
        assert str(daemon.socket) not in problem["detail"]  # the local path stays local
        assert down.headers["Retry-After"] == "1"
        assert_problem(requests.get(url(shim, "/readyz")), 503, "unavailable", None)
        assert_problem(
            requests.post(url(shim, "/jobs"), json={"type": "echo"}), 503, "unavailable", None
        )
        assert requests.get(url(shim, "/healthz")).status_code == 200  # the shim itself is fine
        # The daemon comes back on the same socket: the shim's kept connections are dead,
        # yet the first submit goes through (the pool probes an idle connection first).
        again = start_daemon(pg_url, schema, workers=1, directory=daemon.home)
        daemon = again
        daemon.wait_ready()
        assert requests.post(url(shim, "/jobs"), json={"type": "echo"}).status_code == 201
        assert requests.get(url(shim, "/readyz")).status_code == 200
    finally:
        if shim is not None:
            assert shim.stop() == 0, shim.log()
        daemon.stop(expect=None)
        shutil.rmtree(daemon.home, ignore_errors=True)


# --- started by jobd run ------------------------------------------------------------------------


def shim_pids(daemon: Daemon) -> list[int]:
    started = [e for e in json_lines(daemon.log()) if e.get("message") == "http shim started"]
    return [e["child_pid"] for e in started]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def child_url(daemon: Daemon, after: int = 0) -> str | None:
    """The address the child logged after its `after`-th start."""
    events = [e for e in json_lines(daemon.log()) if e.get("message") == "http shim listening"]
    return f"http://{events[-1]['listen']}" if len(events) > after else None


def test_jobd_run_starts_restarts_and_stops_its_shim(pg_url: str) -> None:
    schema = f"jobd_http_run_{uuid.uuid4().hex[:8]}"
    env = {
        "JOBD_HTTP_LISTEN": "127.0.0.1:0",
        "JOBD_HTTP_TOKENS": TOKEN,
        "JOBD_LOGGING_FORMAT": "json",
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running_daemon(pg_url, schema, workers=1, env=env, keep_dir=True) as daemon:
        base = wait_for(lambda: child_url(daemon), what="the shim to listen")
        job = requests.post(f"{base}/jobs", json={"type": "echo"}, headers=auth).json()
        (first_pid,) = shim_pids(daemon)
        os.kill(first_pid, signal.SIGKILL)  # the shim dies: jobd run starts another
        wait_for(lambda: len(shim_pids(daemon)) == 2, what="the shim to be restarted")
        assert any(
            e.get("message") == "http shim exited; restarting it"
            and e.get("exit") == "killed by SIGKILL"
            for e in json_lines(daemon.log())
        )
        base = wait_for(lambda: child_url(daemon, after=1), what="the new shim to listen")
        got = requests.get(f"{base}/jobs/{job['id']}", headers=auth)
        assert got.status_code == 200
        second_pid = shim_pids(daemon)[-1]
    # running_daemon checked jobd run exited 0 after SIGTERM; its shim is gone with it.
    try:
        assert not alive(second_pid)
        assert any(e.get("message") == "http shim stopped" for e in json_lines(daemon.log()))
        assert TOKEN not in daemon.log()
    finally:
        shutil.rmtree(daemon.home, ignore_errors=True)


def test_the_shim_stops_when_jobd_run_is_killed(pg_url: str) -> None:
    schema = f"jobd_http_kill_{uuid.uuid4().hex[:8]}"
    env = {"JOBD_HTTP_LISTEN": "127.0.0.1:0", "JOBD_LOGGING_FORMAT": "json"}
    daemon = start_daemon(pg_url, schema, workers=1, env=env)
    try:
        daemon.wait_ready()
        wait_for(lambda: child_url(daemon), what="the shim to listen")
        (pid,) = shim_pids(daemon)
        daemon.process.kill()  # SIGKILL: no hook runs; the shim sees its pipe close
        daemon.process.wait()
        wait_for(lambda: not alive(pid), what="the orphaned shim to stop")
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
        shutil.rmtree(daemon.home, ignore_errors=True)


def test_readyz_is_503_while_jobd_run_drains(pg_url: str) -> None:
    schema = f"jobd_http_drain_{uuid.uuid4().hex[:8]}"
    env = {
        "JOBD_HTTP_LISTEN": "127.0.0.1:0",
        "JOBD_LOGGING_FORMAT": "json",
        "JOBD_SHUTDOWN_DRAIN_TIMEOUT": "60",
    }
    with running_daemon(pg_url, schema, workers=1, env=env) as daemon:
        base = wait_for(lambda: child_url(daemon), what="the shim to listen")
        job = requests.post(f"{base}/jobs", json={"type": "sleep", "payload": {"seconds": 60}})
        job_id = job.json()["id"]
        wait_for(
            lambda: requests.get(f"{base}/jobs/{job_id}").json()["state"] == "running",
            what="the job to run",
        )
        daemon.process.send_signal(signal.SIGTERM)  # drain: waits for the running job
        ready = wait_for(
            lambda: (r := requests.get(f"{base}/readyz")).status_code == 503 and r.json(),
            what="readyz to say 503",
        )
        assert ready["draining"] is True
        assert ready["status"] == "degraded"
        assert requests.get(f"{base}/healthz").status_code == 200
        # Still able to act during the drain: cancel the job, and the drain completes.
        assert requests.delete(f"{base}/jobs/{job_id}").status_code == 200


# --- refusing to start --------------------------------------------------------------------------


def test_a_public_address_without_tokens_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "jobd.cli", "http", "--listen", "0.0.0.0:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert "http.tokens" in result.stderr


def test_a_taken_port_is_refused(daemon: Daemon, shim: Shim) -> None:
    taken = shim.url.removeprefix("http://")
    result = subprocess.run(
        [sys.executable, "-m", "jobd.cli", "http", "--listen", taken],
        env={**daemon.env, "JOBD_HTTP_TOKENS": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot listen on {taken}" in result.stderr


def test_concurrent_submits(http, shim) -> None:
    queue = new_queue()
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            for _ in range(10):
                status = session.post(
                    url(shim, "/jobs"), json={"type": "echo", "queue": queue, "delay": 3600}
                ).status_code
                with lock:
                    results.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [201] * 80
    page = http.get(url(shim, "/jobs"), params={"queue": queue, "limit": 1000}).json()
    assert len(page["jobs"]) == 80


def test_schedules_over_http_without_any(http, shim) -> None:
    """This daemon defines no schedule: an empty list, and any name is unknown (404)."""
    response = http.get(url(shim, "/schedules"))
    assert (response.status_code, response.json()) == (200, {"schedules": []})
    for action in ("pause", "resume", "trigger"):
        unknown = http.post(url(shim, f"/schedules/no%2Fsuch/{action}"))
        assert_problem(unknown, 404, "unknown_schedule", "name")
        assert "'no/such'" in unknown.json()["detail"]
    listed = http.get(url(shim, "/jobs"), params={"schedule": "no/such"})
    assert (listed.status_code, listed.json()["jobs"]) == (200, [])
    assert requests.get(url(shim, "/schedules")).status_code == 401


# --- POST /jobs:batch and the workflow filter ----------------------------------------------------


def test_a_batch_is_one_workflow_with_names(http, shim) -> None:
    queue = new_queue()
    body = {
        "jobs": [
            {"name": "fetch", "type": "echo", "queue": queue},
            {"name": "report", "type": "echo", "queue": queue, "after": ["fetch"]},
        ]
    }
    response = http.post(url(shim, "/jobs:batch"), json=body, timeout=30)
    assert response.status_code == 201, response.text
    reply = response.json()
    ids = reply["names"]
    assert [j["id"] for j in reply["jobs"]] == [ids["fetch"], ids["report"]]
    assert reply["jobs"][1]["parents"] == [ids["fetch"]]
    done = http.get(url(shim, f"/jobs/{ids['report']}/wait"), params={"timeout": 20}, timeout=60)
    assert done.json()["job"]["state"] == "completed"
    listed = http.get(url(shim, "/jobs"), params={"workflow": ids["report"]}, timeout=30).json()
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(ids.values())


def test_a_batch_with_a_cycle_is_400_naming_the_field(http, shim) -> None:
    queue = new_queue()
    body = {
        "jobs": [
            {"name": "a", "type": "echo", "queue": queue, "after": ["b"]},
            {"name": "b", "type": "echo", "queue": queue, "after": ["a"]},
        ]
    }
    response = http.post(url(shim, "/jobs:batch"), json=body, timeout=30)
    problem = assert_problem(response, 400, "invalid_params", None)
    assert problem["field"].startswith("jobs[") and "cycle" in problem["detail"]
    bad = http.post(url(shim, "/jobs:batch"), json={"jobs": [{"type": "echo", "x": 1}]}, timeout=30)
    assert_problem(bad, 400, "invalid_params", "jobs[0].x")
    assert http.get(url(shim, "/jobs"), params={"queue": queue}, timeout=30).json()["jobs"] == []
