"""`jobctl status ID --follow` and `jobctl top` in a terminal: each runs in a pseudo-terminal
against a real daemon, and the test reads the screen until what it waits for shows (with a
deadline), so it follows the daemon's events, never a fixed sleep.

A job's start is held back by submitting it an hour ahead: the follower sees it pending, then
the test makes it due (`run_now`) and waits for the lines of the changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator

import pytest
from control_harness import Daemon, run_jobctl, running_daemon, short_dir, start_daemon

from jobd.errors import InvalidParams
from jobd.protocol import parse_subscribe
from jobd.subscriptions import JobChange, Subscriber
from tests.daemon import clean_environment

pytestmark = pytest.mark.postgres

DEADLINE = 20.0
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """`python -m jobctl ARGS` on a pseudo-terminal of `columns` x `rows`."""

    def __init__(self, daemon: Daemon, *args: str, columns: int = 120, rows: int = 50):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = clean_environment()
        env["JOBD_SOCKET"] = str(daemon.socket)
        for name in ("COLUMNS", "LINES"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobctl", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.screen = b""  # all that was written, escape sequences removed
        self.seen = 0  # where the next `expect` starts looking

    def expect(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """Read until `pattern` shows in what came after the previous match."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            match = regex.search(text, self.seen)
            if match:
                self.seen = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {pattern!r} on the screen:\n{text[-3000:]}")

    def _read(self, timeout: float) -> bool:
        readable, _, _ = select.select([self.master], [], [], timeout)
        if not readable:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the program has exited and closed its side
            return False
        self.screen += ANSI.sub(b"", data)
        return bool(data)

    def text(self) -> str:
        return self.screen.decode(errors="replace").replace("\r\n", "\n")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def exit_status(self, timeout: float = DEADLINE) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:  # keep reading: a full pty would block the writer
            if time.monotonic() > deadline:
                raise AssertionError(f"still running:\n{self.text()[-3000:]}")
            self._read(0.05)
        while self._read(0.05):
            pass
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    with running_daemon(pg_url, f"jobd_follow_{uuid.uuid4().hex[:8]}", workers=2) as d:
        yield d


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def held_job(daemon: Daemon, job_type: str, payload: dict[str, object]) -> tuple[int, str]:
    """A job in a queue of its own, due in an hour: it stays pending until `release`."""
    name = f"q{uuid.uuid4().hex[:8]}"
    with daemon.client() as c:
        job = c.submit(job_type, payload, queue=name, delay=3600).job
    return job.id, name


def release(daemon: Daemon, job_id: int) -> None:
    with daemon.client() as c:
        c.call("run_now", {"id": job_id})


# --- status --follow --------------------------------------------------------------------------


def test_follow_shows_the_job_then_each_change_until_it_completes(
    daemon: Daemon, terminals: list[Terminal]
) -> None:
    job_id, _ = held_job(daemon, "sleep", {"seconds": 0.3})
    follow = Terminal(daemon, "status", str(job_id), "--follow")
    terminals.append(follow)
    follow.expect(rf"^id:\s+{job_id}$")
    follow.expect(r"^state:\s+pending")
    release(daemon, job_id)
    follow.expect(r"^\d\d:\d\d:\d\d  running\s+attempt 1 of \d+")
    follow.expect(r"^\d\d:\d\d:\d\d  completed\s+attempt 1 of \d+")
    assert follow.exit_status() == 0, follow.text()
    assert "jobctl:" not in follow.text()


def test_follow_shows_the_progress_the_handler_reports_as_it_comes(
    daemon: Daemon, terminals: list[Terminal]
) -> None:
    job_id, _ = held_job(daemon, "ctl_halfway", {"seconds": 1.0})
    follow = Terminal(daemon, "status", str(job_id), "--follow")
    terminals.append(follow)
    follow.expect(r"^state:\s+pending")
    release(daemon, job_id)
    follow.expect(r"^\d\d:\d\d:\d\d  progress\s+1/2 \(50%\) halfway$")
    follow.expect(r"^\d\d:\d\d:\d\d  completed\s+attempt 1 of \d+")
    assert follow.exit_status() == 0, follow.text()


def test_follow_of_a_failing_job_exits_as_wait_does(
    daemon: Daemon, terminals: list[Terminal]
) -> None:
    job_id, _ = held_job(daemon, "ctl_fail", {"message": "no luck"})
    follow = Terminal(daemon, "status", str(job_id), "-f")
    terminals.append(follow)
    follow.expect(r"^state:\s+pending")
    release(daemon, job_id)
    follow.expect(r"^\d\d:\d\d:\d\d  failed\s+attempt 1 of 1  PermanentError$")
    follow.expect(rf"^jobctl: job {job_id} failed$")
    assert follow.exit_status() == 1
    waited = run_jobctl(daemon.socket, "wait", str(job_id))
    assert waited.returncode == 1


def test_follow_of_an_ended_job_shows_it_and_exits_at_once(daemon: Daemon) -> None:
    with daemon.client() as c:
        job_id = c.submit("echo", {}).job.id
        c.wait(job_id, 20)
    result = run_jobctl(daemon.socket, "status", str(job_id), "--follow")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^state:\s+completed", result.stdout, re.MULTILINE)


def test_follow_of_no_such_job_exits_4(daemon: Daemon) -> None:
    result = run_jobctl(daemon.socket, "status", "999999999", "--follow")
    assert result.returncode == 4, result.stderr


def test_follow_json_is_a_job_object_per_line(daemon: Daemon, terminals: list[Terminal]) -> None:
    job_id, _ = held_job(daemon, "echo", {})
    follow = Terminal(daemon, "--json", "status", str(job_id), "--follow")
    terminals.append(follow)
    follow.expect(rf'^{{"id": {job_id}, .*"state": "pending"')
    release(daemon, job_id)
    follow.expect(rf'^{{"id": {job_id}, .*"state": "completed"')
    assert follow.exit_status() == 0


def test_ctrl_c_leaves_follow_quietly_with_130(daemon: Daemon, terminals: list[Terminal]) -> None:
    job_id, _ = held_job(daemon, "echo", {})
    follow = Terminal(daemon, "status", str(job_id), "--follow")
    terminals.append(follow)
    follow.expect(r"^state:\s+pending")
    follow.process.send_signal(signal.SIGINT)
    assert follow.exit_status() == 130
    assert "Traceback" not in follow.text() and "Aborted" not in follow.text()
    with daemon.client() as c:
        c.cancel(job_id)


def test_follow_goes_on_across_a_restart_of_the_daemon(
    pg_url: str, terminals: list[Terminal]
) -> None:
    schema, home = f"jobd_follow_{uuid.uuid4().hex[:8]}", short_dir()
    first = start_daemon(pg_url, schema, directory=home)
    second: Daemon | None = None
    try:
        first.wait_ready()
        job_id, _ = held_job(first, "echo", {})
        follow = Terminal(first, "status", str(job_id), "--follow")
        terminals.append(follow)
        follow.expect(r"^state:\s+pending")
        first.stop()
        follow.expect(r"^jobctl: subscription lost \(the daemon is stopping\); subscribing again")
        follow.expect(r"^jobctl: cannot reach jobd.*; trying again for 60s$")
        second = start_daemon(pg_url, schema, directory=home)
        second.wait_ready()
        release(second, job_id)
        follow.expect(r"^\d\d:\d\d:\d\d  completed\s+attempt 1 of \d+")
        assert follow.exit_status() == 0, follow.text()
        second.stop()
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.running.exit_code() is None:
                daemon.running.kill_all()


# --- top ------------------------------------------------------------------------------------------


def test_top_shows_queues_running_jobs_and_changes_and_quits_on_q(
    daemon: Daemon, terminals: list[Terminal]
) -> None:
    job_id, queue = held_job(daemon, "sleep", {"seconds": 30})
    top = Terminal(daemon, "top")
    terminals.append(top)
    top.expect(rf"^{queue}\s+1\s+0\s+-")  # the queue, read at start
    top.expect(r"^NODE\s+STATE\s+BUSY\s+WORKER:JOB")
    release(daemon, job_id)
    top.expect(rf"^\s*{job_id}\s+sleep\s+{queue}\s")  # running: drawn on the start's event
    top.expect(rf"^\d\d:\d\d:\d\d\s+{job_id}\s+running\s+sleep")
    with daemon.client() as c:
        c.cancel(job_id)
    top.expect(rf"^\d\d:\d\d:\d\d\s+{job_id}\s+canceled")  # redrawn on the change
    top.type(b"q")
    assert top.exit_status() == 0, top.text()


def test_top_once_prints_one_frame_cut_to_a_narrow_terminal(
    daemon: Daemon, terminals: list[Terminal]
) -> None:
    job_id, queue = held_job(daemon, "echo", {})
    top = Terminal(daemon, "top", "--once", columns=30)
    terminals.append(top)
    assert top.exit_status() == 0, top.text()
    lines = top.text().splitlines()
    assert any(line.startswith(queue) for line in lines), top.text()
    assert max(len(line) for line in lines) <= 30, top.text()
    with daemon.client() as c:
        c.cancel(job_id)


def test_top_once_json(daemon: Daemon) -> None:
    result = run_jobctl(daemon.socket, "--json", "top", "--once")
    assert result.returncode == 0, result.stderr
    assert {"node", "queues", "nodes", "running"} <= set(json.loads(result.stdout))


def test_top_without_a_daemon_exits_3() -> None:
    result = run_jobctl(None, "--socket", "/nonexistent/jobd.sock", "top", "--once")
    assert result.returncode == 3, result.stderr


# --- subscribe's ids filter (no daemon) ----------------------------------------------------------


def test_subscribe_ids_are_checked() -> None:
    assert parse_subscribe({"ids": [3, 1, 3]}).ids == frozenset({1, 3})
    assert parse_subscribe({}).ids is None
    for bad in ([], [0], ["1"], [True], 5, list(range(1, 1002))):
        with pytest.raises(InvalidParams) as refused:
            parse_subscribe({"ids": bad})
        assert refused.value.field == "ids"


def test_a_subscriber_with_ids_is_offered_only_those_jobs() -> None:
    def change(job_id: int) -> JobChange:
        return JobChange(job_id, "running", "echo", "default", "started", 0.0)

    subscriber = Subscriber(limit=2, ids=frozenset({7}))
    for _ in range(5):  # others' changes neither fill its buffer nor wake it
        subscriber.offer([change(1), change(2)])
    assert subscriber.lost is None and not subscriber.ready.is_set()
    subscriber.offer([change(1), change(7)])
    assert subscriber.take() == [change(7)]


@pytest.mark.parametrize("command", ["top", "status"])
def test_the_help_shows_examples(command: str) -> None:
    result = run_jobctl(None, command, "--help")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"Examples?:\n\s+jobctl {command}\b", result.stdout), result.stdout
