"""The sample handlers end to end: `jobd run` on PostgreSQL with handlers.samples enabling them,
jobs submitted through the store and with `jobctl submit`, a real SMTP server (aiosmtpd), real
files under files.allowed_dirs, and a cancel in the middle of a large file."""

from __future__ import annotations

import email
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from jobd.domain import Job, NewJob, State
from jobd.samples.files import PROGRESS_EVERY
from jobd.samples.paths import TEMP_SUFFIX
from jobd.store import Store

from .conftest import Daemon, eventually

pytestmark = pytest.mark.postgres

SENDER = "Jobs <jobs@example.com>"


# --- an SMTP server -------------------------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        wire = envelope.content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(wire, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class EphemeralController(Controller):
    """aiosmtpd on the port the kernel picks."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = EphemeralController(box, hostname="127.0.0.1", port=0, server_hostname="smtp.test")
    controller.start()
    yield box, controller.port
    controller.stop()


# --- the daemon -----------------------------------------------------------------------------


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    path = Path(os.path.realpath(tmp_path)) / "files"
    path.mkdir()
    (path.parent / "outside").mkdir()
    return path


@pytest.fixture
def sample_daemon(make_daemon, mailbox, files_dir: Path) -> Daemon:
    _, port = mailbox
    return make_daemon(
        JOBD_HANDLERS_SAMPLES="send_email,generate_report,process_file",
        JOBD_SMTP_HOST="127.0.0.1",
        JOBD_SMTP_PORT=str(port),
        JOBD_SMTP_FROM=SENDER,
        JOBD_FILES_ALLOWED_DIRS=str(files_dir),
        JOBD_LOGGING_LEVEL="DEBUG",  # the job events the tests read
    ).start("--migrate")


async def submit(store: Store, type_: str, payload: dict[str, Any], **kw: Any) -> int:
    return (await store.submit(NewJob(type_, payload, **kw))).job.id


async def finished(store: Store, job_id: int, timeout: float = 30.0) -> Job:
    async def check() -> Job | None:
        job = await store.get(job_id)
        return job if job.state.terminal else None

    return await eventually(check, timeout, f"job {job_id} to finish")


@dataclass
class Ran:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def jobctl(daemon: Daemon, *args: str, timeout: float = 60.0) -> Ran:
    done = subprocess.run(
        [sys.executable, "-m", "jobctl", "--socket", daemon.env["JOBD_SOCKET"], *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def submit_and_wait(daemon: Daemon, type_: str, payload: dict[str, Any]) -> Ran:
    return jobctl(daemon, "--json", "submit", type_, "--payload", json.dumps(payload), "--wait")


# --- send_email -----------------------------------------------------------------------------


async def test_send_email_through_the_store_and_jobctl(
    sample_daemon: Daemon, pg_store: Store, mailbox
) -> None:
    box, _ = mailbox
    job_id = await submit(
        pg_store,
        "send_email",
        {
            "to": "Ann <ann@example.com>",
            "cc": "carl@example.com",
            "subject": "Invoice 42",
            "body": "Attached.\n",
            "html": "<p>Attached.</p>",
        },
    )
    job = await finished(pg_store, job_id)
    assert job.state is State.COMPLETED, job.last_error
    assert job.result["recipients"] == 2
    rcpt_tos, message = box.messages[0]
    assert rcpt_tos == ["ann@example.com", "carl@example.com"]
    assert message["From"] == SENDER and message["To"] == "Ann <ann@example.com>"
    assert message["Subject"] == "Invoice 42" and message["Message-ID"] == job.result["message_id"]
    assert message.get_body(preferencelist=("html",)).get_content() == "<p>Attached.</p>\n"

    ran = submit_and_wait(
        sample_daemon, "send_email", {"to": "bob@example.com", "subject": "Hi", "body": "Yo"}
    )
    assert ran.status == 0, ran.stderr
    assert ran.json()["state"] == "completed" and ran.json()["result"]["recipients"] == 1
    assert box.messages[1][1]["To"] == "bob@example.com"


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({}, "to: is required"),
        ({"to": "ann@example.com", "body": "b"}, "subject: is required"),
        ({"to": "not-an-address", "subject": "s", "body": "b"}, "to: 'not-an-address' is not"),
        (
            {"to": "ann@example.com", "subject": "Hi\r\nBcc: all@example.com", "body": "b"},
            "subject: must not contain line breaks",
        ),
    ],
)
def test_send_email_bad_payloads_are_refused_by_jobctl(
    sample_daemon: Daemon, mailbox, payload: dict[str, Any], named: str
) -> None:
    ran = jobctl(sample_daemon, "submit", "send_email", "--payload", json.dumps(payload))
    assert ran.status == 2, (ran.status, ran.stdout, ran.stderr)
    assert named in ran.stderr
    assert mailbox[0].messages == []


async def test_send_email_refused_for_good_is_not_retried(
    sample_daemon: Daemon, pg_store: Store, mailbox
) -> None:
    mailbox[0].rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    job_id = await submit(
        pg_store,
        "send_email",
        {"to": "gone@example.com", "subject": "s", "body": "b"},
        max_attempts=4,
    )
    job = await finished(pg_store, job_id)
    assert job.state is State.FAILED and job.attempts == 1
    assert job.last_error.type == "PermanentError" and "550 5.1.1" in job.last_error.message


async def test_send_email_temporary_refusal_is_retried(
    sample_daemon: Daemon, pg_store: Store, mailbox
) -> None:
    mailbox[0].rcpt_replies["busy@example.com"] = "451 4.3.0 Try later"
    job_id = await submit(
        pg_store,
        "send_email",
        {"to": "busy@example.com", "subject": "s", "body": "b"},
        max_attempts=2,
    )
    job = await finished(pg_store, job_id)
    assert job.state is State.FAILED and job.attempts == 2
    assert job.last_error.type == "SmtpTemporaryError" and "451" in job.last_error.message


# --- generate_report ------------------------------------------------------------------------


async def test_generate_report_from_a_file_and_inline(
    sample_daemon: Daemon, pg_store: Store, files_dir: Path
) -> None:
    (files_dir / "sales.csv").write_text("region,amount\nnorth,10\nsouth,2\nnorth,5\n")
    job_id = await submit(
        pg_store,
        "generate_report",
        {"input": "sales.csv", "group_by": "region", "value": "amount", "output": "r.json"},
    )
    job = await finished(pg_store, job_id)
    assert job.state is State.COMPLETED, job.last_error
    assert job.result == {
        "output": str(files_dir / "r.json"),
        "format": "json",
        "rows_in": 3,
        "groups": 2,
        "values_skipped": 0,
    }
    groups = json.loads((files_dir / "r.json").read_text())["groups"]
    assert [(g["key"], g["sum"]) for g in groups] == [("north", 15), ("south", 2)]

    ran = submit_and_wait(
        sample_daemon,
        "generate_report",
        {"records": [{"k": "<x>"}, {"k": "<x>"}], "group_by": "k", "output": "r.html"},
    )
    assert ran.status == 0, ran.stderr
    assert ran.json()["result"]["groups"] == 1
    assert "&lt;x&gt;" in (files_dir / "r.html").read_text()


def test_generate_report_bad_payload_is_refused_by_jobctl(sample_daemon: Daemon) -> None:
    payload = {"records": [], "group_by": "k", "aggregates": ["sum"], "output": "r.csv"}
    ran = jobctl(sample_daemon, "submit", "generate_report", "--payload", json.dumps(payload))
    assert ran.status == 2 and "value: is required for sum" in ran.stderr


# --- process_file ---------------------------------------------------------------------------


async def test_process_file_operations(
    sample_daemon: Daemon, pg_store: Store, files_dir: Path
) -> None:
    data = b"line\n" * 100_000
    (files_dir / "log.txt").write_bytes(data)
    ran = submit_and_wait(
        sample_daemon, "process_file", {"operation": "checksum", "path": "log.txt"}
    )
    assert ran.status == 0, ran.stderr
    assert ran.json()["result"]["sha256"] == hashlib.sha256(data).hexdigest()

    job_id = await submit(pg_store, "process_file", {"operation": "compress", "path": "log.txt"})
    job = await finished(pg_store, job_id)
    assert job.state is State.COMPLETED, job.last_error
    assert gzip.decompress((files_dir / "log.txt.gz").read_bytes()) == data

    ran = submit_and_wait(
        sample_daemon,
        "process_file",
        {"operation": "count_lines", "path": str(files_dir / "log.txt")},
    )
    assert ran.json()["result"]["lines"] == 100_000


def test_process_file_traversal_is_refused_by_jobctl(sample_daemon: Daemon) -> None:
    payload = {"operation": "checksum", "path": "../outside/secret"}
    ran = jobctl(sample_daemon, "submit", "process_file", "--payload", json.dumps(payload))
    assert ran.status == 2 and "path: must not contain '..'" in ran.stderr


async def test_process_file_escapes_fail_at_once_without_retries(
    sample_daemon: Daemon, pg_store: Store, files_dir: Path
) -> None:
    """Paths the validator cannot judge (or that bypassed it through the store) fail in the
    worker, permanently, on the first attempt."""
    secret = files_dir.parent / "outside" / "secret"
    secret.write_text("secret")
    (files_dir / "link").symlink_to(secret)
    os.link(secret, files_dir / "hardlink")
    cases = {
        "through a symbolic link": {"operation": "checksum", "path": "link"},
        "outside files.allowed_dirs": {"operation": "checksum", "path": str(secret)},
        "hard links": {"operation": "checksum", "path": "hardlink"},
        "must not contain '..'": {"operation": "checksum", "path": "../outside/secret"},
    }
    ids = {
        expected: await submit(pg_store, "process_file", payload, max_attempts=3)
        for expected, payload in cases.items()
    }
    for expected, job_id in ids.items():
        job = await finished(pg_store, job_id)
        assert job.state is State.FAILED and job.attempts == 1, (expected, job)
        assert job.last_error.type == "PermanentError" and expected in job.last_error.message

    ran = submit_and_wait(sample_daemon, "process_file", {"operation": "checksum", "path": "link"})
    assert ran.status == 1 and ran.json()["state"] == "failed"
    assert "through a symbolic link" in ran.json()["last_error"]["message"]


async def test_cancel_in_the_middle_of_a_large_file(
    sample_daemon: Daemon, pg_store: Store, files_dir: Path
) -> None:
    """A compress of a large file is cancelled once it has reported progress: the worker stops
    between two chunks (it is not killed), and neither the output nor a temporary file is
    left behind."""
    size = 4 * PROGRESS_EVERY  # 256 MiB of random bytes: several seconds of gzip
    with open(files_dir / "big.bin", "wb") as f:
        for _ in range(size // (16 * 1024 * 1024)):
            f.write(os.urandom(16 * 1024 * 1024))
    job_id = await submit(
        pg_store, "process_file", {"operation": "compress", "path": "big.bin", "level": 9}
    )

    async def reported() -> dict[str, int] | None:
        return (await pg_store.get(job_id)).progress

    progress = await eventually(reported, timeout=60, what="a progress report")
    assert 0 < progress["bytes"] < size and progress["total"] == size
    workers_before = sorted(sample_daemon.worker_pids())

    ran = jobctl(sample_daemon, "cancel", str(job_id))
    assert ran.status == 0, ran.stderr
    cancelled_at = time.monotonic()
    job = await finished(pg_store, job_id)
    assert job.state is State.CANCELED
    assert time.monotonic() - cancelled_at < 5
    assert not (files_dir / "big.bin.gz").exists()
    assert [p.name for p in files_dir.iterdir() if p.name.endswith(TEMP_SUFFIX)] == []
    # Stopped cooperatively between chunks: no worker had to be killed or replaced.
    assert sorted(sample_daemon.worker_pids()) == workers_before
    assert not _events(sample_daemon, "worker died")


def _events(daemon: Daemon, message: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("message") == message]


# --- configuration ----------------------------------------------------------------------------


def test_jobd_refuses_to_start_without_what_the_handlers_need(make_daemon) -> None:
    daemon = make_daemon(JOBD_HANDLERS_SAMPLES="send_email,process_file")
    done = subprocess.run(
        [sys.executable, "-m", "jobd.cli", "run"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "smtp.from is not set" in done.stderr and "files.allowed_dirs is empty" in done.stderr


def test_sample_types_are_unknown_unless_enabled(make_daemon) -> None:
    daemon = make_daemon().start("--migrate")
    payload = {"operation": "checksum", "path": "x"}
    ran = jobctl(daemon, "submit", "process_file", "--payload", json.dumps(payload))
    assert ran.status == 2 and "unknown job type 'process_file'" in ran.stderr
