"""Who may talk to jobd, and what it never lets out (docs/guarantees.md, "Security"):

- the control socket refuses a local user who is neither its owner nor in its group, and lets
  a member of control.socket_group in -- with real users made for the test (skipped, saying
  why, where that is impossible: not root, no useradd, no interpreter such a user may run);
- the HTTP shim refuses requests without a token or with a wrong one, and logs neither;
- no secret (the database password, the SMTP password, the HTTP tokens) appears in a running
  daemon's logs, nor when it cannot reach its database.

process_file's confinement is tests/unit/test_handler_files.py and test_handlers_hostile.py;
SQL metacharacters are tests/store/test_sql_metacharacters.py; `jobd config check` masking is
tests/e2e/test_jobd_cli.py.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from control_harness import ROOT, running_daemon, start_daemon

from .conftest import wait_for

pytestmark = pytest.mark.postgres


def _runnable_by_anyone(path: str) -> bool:
    """Every directory above `path` may be searched by others, and the file run by them."""
    resolved = Path(path).resolve()
    if not resolved.exists() or not resolved.stat().st_mode & 0o001:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in resolved.parents)


# An interpreter a non-root user can run (the test's own may live under /root) that imports
# jobd.client from the checkout: it needs nothing outside the standard library.
USER_PYTHON = next(
    (p for p in (sys.executable, "/usr/bin/python3") if _runnable_by_anyone(p)), None
)
CLIENT = """
import sys
sys.path.insert(0, sys.argv[2])
from jobd.client import Client
from jobd.errors import JobdError
try:
    print("answered", Client(sys.argv[1], timeout=5).hello().protocol)
except JobdError as exc:
    print("refused", exc.message)
"""


@dataclass
class LocalUsers:
    group: str
    outsider: pwd.struct_passwd  # in no group of the socket
    member: pwd.struct_passwd  # in control.socket_group


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def users() -> Iterator[LocalUsers]:
    if os.geteuid() != 0:
        pytest.skip("making test users needs root")
    if not (shutil.which("useradd") and shutil.which("groupadd")):
        pytest.skip("no useradd/groupadd on this machine")
    if USER_PYTHON is None or not os.access(ROOT, os.R_OK):
        pytest.skip("no Python interpreter (or checkout) that another user may use")
    tag = uuid.uuid4().hex[:6]
    group, outsider, member = f"jobdg{tag}", f"jobdo{tag}", f"jobdm{tag}"
    made: list[tuple[str, str]] = []
    try:
        _run("groupadd", group)
        made.append(("groupdel", group))
        _run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", outsider)
        made.append(("userdel", outsider))
        _run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", group, member)
        made.append(("userdel", member))
        yield LocalUsers(group, pwd.getpwnam(outsider), pwd.getpwnam(member))
    finally:
        for command, name in reversed(made):
            with contextlib.suppress(subprocess.CalledProcessError):
                _run(command, name)


def as_user(user: pwd.struct_passwd, socket_path: Path) -> str:
    """Call hello on the socket as `user` (the process drops root before it runs)."""
    groups = [g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem]

    def demote() -> None:
        os.setgroups(groups)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    result = subprocess.run(
        [USER_PYTHON, "-c", CLIENT, str(socket_path), str(ROOT)],
        preexec_fn=demote,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_control_socket_admits_only_its_owner_and_group(pg_url: str, users) -> None:
    home = Path(f"/tmp/jobd-sec-{uuid.uuid4().hex[:8]}")
    home.mkdir(mode=0o755)  # others may reach the socket: only its own mode keeps them out
    home.chmod(0o755)
    env = {"JOBD_CONTROL_SOCKET_GROUP": users.group}
    daemon = start_daemon(pg_url, f"jobd_sec_{uuid.uuid4().hex[:8]}", env=env, directory=home)
    try:
        daemon.wait_ready()
        info = daemon.socket.stat()
        assert oct(info.st_mode & 0o777) == "0o660"
        assert info.st_gid == grp.getgrnam(users.group).gr_gid
        refused = as_user(users.outsider, daemon.socket)
        assert refused.startswith("refused") and "permission denied" in refused, refused
        assert as_user(users.member, daemon.socket) == "answered 1"
        # The refused one never got as far as a request: none is logged for its uid.
        uids = {e.get("peer_uid") for e in _events(daemon.log())}
        assert users.outsider.pw_uid not in uids and users.member.pw_uid in uids
        daemon.stop()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
        shutil.rmtree(home, ignore_errors=True)


def _events(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


# --- tokens and secrets -----------------------------------------------------------------------

DB_PASSWORD = "db-pw-" + uuid.uuid4().hex  # PostgreSQL on trust: the password is not checked
SMTP_PASSWORD = "smtp-pw-" + uuid.uuid4().hex
TOKEN = "http-token-" + uuid.uuid4().hex
WRONG = "wrong-token-" + uuid.uuid4().hex
SECRETS = (DB_PASSWORD, SMTP_PASSWORD, TOKEN, WRONG)


def with_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{DB_PASSWORD}@{host}"


def test_tokens_are_required_and_no_secret_is_ever_logged(pg_url: str) -> None:
    env = {
        "JOBD_DATABASE_URL": with_password(pg_url),
        "JOBD_HTTP_LISTEN": "127.0.0.1:0",
        "JOBD_HTTP_TOKENS": TOKEN,
        "JOBD_HANDLERS_SAMPLES": "send_email",
        "JOBD_SMTP_HOST": "127.0.0.1",
        "JOBD_SMTP_PORT": "9",  # nothing listens: the job fails, its error is logged
        "JOBD_SMTP_USERNAME": "jobd",
        "JOBD_SMTP_PASSWORD": SMTP_PASSWORD,
        "JOBD_SMTP_FROM": "jobs@example.com",
        "JOBD_LOGGING_JOB_EVENTS": "true",
        "JOBD_LOGGING_LEVEL": "DEBUG",
    }
    with running_daemon(pg_url, f"jobd_sec_{uuid.uuid4().hex[:8]}", env=env) as daemon:
        listening = wait_for(
            lambda: next(
                (e for e in _events(daemon.log()) if e.get("message") == "http shim listening"),
                None,
            ),
            what="the shim to listen",
        )
        base = f"http://{listening['listen']}"
        for headers in (
            {},
            {"Authorization": f"Bearer {WRONG}"},
            {"Authorization": f"Basic {WRONG}"},
            {"Authorization": WRONG},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
        ):
            response = requests.get(f"{base}/jobs", headers=headers, timeout=10)
            assert response.status_code == 401, (headers, response.text)
            assert WRONG not in response.text and TOKEN not in response.text
        response = requests.get(f"{base}/jobs?token={WRONG}", timeout=10)
        assert response.status_code in (400, 401)
        right = {"Authorization": f"Bearer {TOKEN}"}
        mail = {"to": "a@example.com", "subject": "s", "body": "b"}
        job = {"type": "send_email", "payload": mail}
        made = requests.post(f"{base}/jobs", json=job, headers=right, timeout=10)
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        wait_for(
            lambda: (
                requests.get(f"{base}/jobs/{job_id}", headers=right, timeout=10).json()["attempts"]
                >= 1
                and "job retried" in daemon.log()
            ),
            what="the e-mail's first attempt to fail",
        )
        log = daemon.log()
    for secret in SECRETS:
        assert secret not in log, f"a secret is in the log: {secret[:8]}…"
    assert "Authorization" not in log


def test_no_secret_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    env.update(
        PYTHONPATH=str(ROOT),
        JOBD_DATABASE_URL=f"postgresql://jobd:{DB_PASSWORD}@127.0.0.1:9/jobs",
        JOBD_SOCKET=str(tmp_path / "jobd.sock"),
        JOBD_SMTP_PASSWORD=SMTP_PASSWORD,
        JOBD_HTTP_TOKENS=TOKEN,
        JOBD_LOGGING_LEVEL="DEBUG",
    )
    for command in (["run"], ["migrate"], ["config", "check"]):
        result = subprocess.run(
            [sys.executable, "-m", "jobd.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = result.stdout + result.stderr
        for secret in SECRETS:
            assert secret not in out, (command, out)
        if command != ["config", "check"]:
            assert result.returncode == 3 and "jobd:***@127.0.0.1:9" in out, (command, out)
