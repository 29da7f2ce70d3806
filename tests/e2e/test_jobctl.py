"""jobctl as a user runs it: a subprocess against a running `jobd run` on PostgreSQL, every
subcommand and every error path, checking stdout, stderr and the exit status.

Exit statuses (jobctl/cli.py): 0 ok, 1 failed/canceled under wait or a conflict, 2 bad usage or
input, 3 daemon unreachable, 4 not found.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from control_harness import Daemon, run_jobctl, running_daemon, short_dir

pytestmark = pytest.mark.postgres

JOB_FIELDS = {
    "id", "type", "queue", "priority", "payload", "state", "attempts", "max_attempts", "crashes",
    "run_at", "timeout", "last_error", "result", "idempotency_key", "correlation_id",
    "cancel_requested", "lease_owner", "lease_expires_at", "created_at", "updated_at",
    "started_at", "finished_at", "schedule", "on_parent_failure", "parents", "progress",
    "progress_at", "result_ttl",
}  # fmt: skip


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    with running_daemon(pg_url, f"jobd_e2e_{uuid.uuid4().hex[:8]}", workers=2) as d:
        yield d


def jobctl(daemon: Daemon | None, *args: str, input: str | None = None):
    return run_jobctl(daemon.socket if daemon else None, *args, input=input)


def ok(daemon: Daemon, *args: str, input: str | None = None) -> str:
    result = jobctl(daemon, *args, input=input)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def as_json(daemon: Daemon, *args: str, input: str | None = None) -> object:
    return json.loads(ok(daemon, "--json", *args, input=input))


def submit(daemon: Daemon, *args: str) -> dict:
    job = as_json(daemon, "submit", *args)
    assert isinstance(job, dict)
    return job


# --- help ---------------------------------------------------------------------------------------

SUBCOMMANDS = ["submit", "status", "cancel", "list", "retry", "wait", "stats", "workers", "health"]
SUBCOMMANDS += ["completion", "schedules", "top", "queues", "purge", "run-now", "priority", "audit"]


@pytest.mark.parametrize("args", [[], *([name] for name in SUBCOMMANDS)], ids=str)
def test_every_help_shows_an_example(args: list[str]) -> None:
    result = run_jobctl(None, *args, "--help")
    assert result.returncode == 0, result.stderr
    assert re.search(r"Examples?:\n\s+jobctl ", result.stdout), result.stdout


# --- submit ---------------------------------------------------------------------------------------


def test_submit_prints_the_job(daemon: Daemon) -> None:
    out = ok(daemon, "submit", "echo", "--payload", '{"hello": "world"}')
    assert re.fullmatch(r"job \d+ submitted: echo in queue default, pending\n", out), out


def test_submit_json_is_the_protocols_job_object(daemon: Daemon) -> None:
    job = submit(
        daemon,
        "echo",
        "-p",
        '{"n": 1}',
        "--queue",
        "e2e",
        "--priority",
        "7",
        "--max-attempts",
        "2",
        "--timeout",
        "30",
        "--delay",
        "3600",
        "--correlation-id",
        "corr-e2e",
    )
    assert set(job) == JOB_FIELDS
    assert job["payload"] == {"n": 1} and job["queue"] == "e2e" and job["priority"] == 7
    assert job["max_attempts"] == 2 and job["timeout"] == 30 and job["state"] == "pending"
    assert job["correlation_id"] == "corr-e2e"
    assert job["run_at"] > job["created_at"] and job["run_at"].endswith("Z")
    ok(daemon, "cancel", str(job["id"]))


def test_submit_at_a_time(daemon: Daemon) -> None:
    job = submit(daemon, "echo", "--at", "2099-01-01T06:00:00+02:00")
    assert job["run_at"] == "2099-01-01T04:00:00Z"
    ok(daemon, "cancel", str(job["id"]))


def test_submit_payload_from_a_file_and_from_stdin(daemon: Daemon, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    assert submit(daemon, "echo", "--payload", f"@{payload}")["payload"] == {"from": "file"}
    job = as_json(daemon, "submit", "echo", "--payload", "-", input='{"from": "stdin"}')
    assert job["payload"] == {"from": "stdin"}


def test_submit_with_a_key_twice_gives_the_same_job(daemon: Daemon) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = submit(daemon, "echo", "--key", key)
    second = jobctl(daemon, "--json", "submit", "echo", "--key", key)
    assert second.returncode == 0
    assert json.loads(second.stdout)["id"] == first["id"]
    assert "already exists" in second.stderr


def test_submit_and_wait(daemon: Daemon) -> None:
    job = as_json(daemon, "submit", "echo", "-p", '{"x": 1}', "--wait")
    assert job["state"] == "completed" and job["result"] == {"x": 1}
    human = ok(daemon, "submit", "echo", "-p", '{"x": 2}', "--wait")
    assert "state:            completed" in human and 'result:           {"x": 2}' in human


def test_submit_and_wait_for_a_job_that_fails(daemon: Daemon) -> None:
    result = jobctl(daemon, "submit", "ctl_fail", "-p", '{"message": "boom"}', "--wait")
    assert result.returncode == 1, result
    assert "state:            failed" in result.stdout
    assert "PermanentError: boom" in result.stdout
    assert re.search(r"jobctl: job \d+ failed", result.stderr)


def test_durations_take_the_units_the_configuration_takes(daemon: Daemon) -> None:
    job = submit(daemon, "echo", "--timeout", "1h", "--delay", "1h30m")
    assert job["timeout"] == 3600
    delay = _time(job["run_at"]) - _time(job["created_at"])
    assert timedelta(seconds=5390) < delay <= timedelta(seconds=5400)
    waited = jobctl(daemon, "wait", str(job["id"]), "--timeout", "200ms")
    assert waited.returncode == 1 and "timed out" in waited.stderr
    ok(daemon, "cancel", str(job["id"]))
    sleeping = jobctl(
        daemon, "submit", "sleep", "-p", '{"seconds": 30}', "--wait", "--wait-timeout", "300ms"
    )
    assert sleeping.returncode == 1 and "timed out waiting for job" in sleeping.stderr
    ok(daemon, "cancel", re.search(r"id:\s+(\d+)", sleeping.stdout).group(1))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_submit_and_wait_with_a_timeout(daemon: Daemon) -> None:
    result = jobctl(
        daemon, "submit", "sleep", "-p", '{"seconds": 30}', "--wait", "--wait-timeout", "0.3"
    )
    assert result.returncode == 1
    assert "timed out waiting for job" in result.stderr
    job_id = re.search(r"id:\s+(\d+)", result.stdout).group(1)
    ok(daemon, "cancel", job_id)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["echo", "--payload", "{not json"], "not valid JSON"),
        (["echo", "--payload", "[1, 2]"], "must be a JSON object"),
        (["echo", "--payload", "@/no/such/file.json"], "cannot read /no/such/file.json"),
        (["echo", "--delay", "5", "--at", "2099-01-01T00:00:00Z"], "--delay or --at, not both"),
        (["echo", "--at", "tomorrow"], "not an ISO-8601 time"),
        (["echo", "--at", "2099-01-01T00:00:00"], "needs a time zone"),
        (["echo", "--priority", "high"], "'high' is not a valid integer"),
        (["echo", "--max-attempts", "0"], "0 is not in the range x>=1"),
        (["echo", "--delay", "soon"], "must be a duration"),
        (["echo", "--timeout", "1y"], "must be a duration"),
        (["echo", "--delay", "-1"], "less than 0s"),
        (["echo", "--wait", "--wait-timeout", "nan"], "is not a duration"),
        ([], "missing TYPE"),
        (["echo", "--batch", "-"], "no TYPE or job options"),
    ],
)
def test_submit_refuses_bad_input_with_exit_2(
    daemon: Daemon, args: list[str], message: str
) -> None:
    result = jobctl(daemon, "submit", *args)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr


def test_submit_of_an_unknown_type_is_exit_2(daemon: Daemon) -> None:
    result = jobctl(daemon, "submit", "no_such_type")
    assert result.returncode == 2
    assert "unknown job type 'no_such_type'" in result.stderr
    assert "echo" in result.stderr  # the known ones are listed
    result = jobctl(daemon, "--json", "submit", "no_such_type")
    assert result.returncode == 2 and result.stdout == ""


def test_submit_of_a_payload_the_handler_rejects_is_exit_2(daemon: Daemon) -> None:
    result = jobctl(daemon, "submit", "ctl_greet", "-p", '{"name": 5}')
    assert result.returncode == 2
    assert "rejected by the 'ctl_greet' handler: name: required, a string" in result.stderr


# --- submit --batch ------------------------------------------------------------------------------


def test_submit_batch(daemon: Daemon, tmp_path: Path) -> None:
    queue = f"batch-{uuid.uuid4().hex[:8]}"
    lines = [json.dumps({"type": "echo", "queue": queue, "payload": {"i": i}}) for i in range(3)]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    out = ok(daemon, "submit", "--batch", str(batch))
    assert out.splitlines()[0].split() == ["ID", "TYPE", "QUEUE", "STATE", "SUBMITTED"]
    assert len(out.splitlines()) == 4
    listed = as_json(daemon, "list", "--queue", queue)
    assert sorted(j["payload"]["i"] for j in listed["jobs"]) == [0, 1, 2]


def test_submit_batch_from_stdin_over_a_thousand_and_wait(daemon: Daemon) -> None:
    queue = f"batch-{uuid.uuid4().hex[:8]}"
    lines = "".join(json.dumps({"type": "echo", "queue": queue}) + "\n" for _ in range(1500))
    jobs = as_json(daemon, "submit", "--batch", "-", "--wait", input=lines)
    assert len(jobs) == 1500 and {j["state"] for j in jobs} == {"completed"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "echo"}\n{oops\n', "line 2: not valid JSON"),
        ('{"type": "echo", "priorty": 1}\n', "line 1: unknown field 'priorty'"),
        ('["echo"]\n', "line 1: must be an object"),
        ('{"payload": {}}\n', "line 1: type: required"),
    ],
)
def test_submit_batch_refuses_a_bad_line_before_submitting_any(
    daemon: Daemon, content: str, message: str
) -> None:
    result = jobctl(daemon, "submit", "--batch", "-", input=content)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr


def test_submit_batch_with_an_unknown_type_names_the_line(daemon: Daemon) -> None:
    queue = f"batch-{uuid.uuid4().hex[:8]}"
    content = "".join(
        json.dumps({"type": t, "queue": queue}) + "\n" for t in ("echo", "echo", "nope")
    )
    result = jobctl(daemon, "submit", "--batch", "-", input=content)
    assert result.returncode == 2
    assert "line 3: type: unknown job type 'nope'" in result.stderr
    assert as_json(daemon, "list", "--queue", queue)["jobs"] == []  # none of the batch


# --- one job --------------------------------------------------------------------------------------


def test_status(daemon: Daemon) -> None:
    job = submit(daemon, "echo", "-p", '{"s": 1}', "--key", f"status-{uuid.uuid4().hex}")
    out = ok(daemon, "status", str(job["id"]))
    assert f"id:               {job['id']}" in out
    assert "type:             echo" in out and "idempotency key:  status-" in out
    shown = as_json(daemon, "status", str(job["id"]))
    assert set(shown) == JOB_FIELDS | {"effective"} and shown["id"] == job["id"]
    after = json.loads(ok(daemon, "status", str(job["id"]), "--json"))  # --json after, too
    assert after["id"] == job["id"]


def test_status_shows_the_limits_in_force_and_where_they_come_from(daemon: Daemon) -> None:
    """Not `timeout: -` when no timeout was given: the one that applies, and its source.
    (A handler's own timeout, the third source, is tests/unit/test_effective.py's.)"""
    defaults = submit(daemon, "echo", "--delay", "1h")
    own = submit(daemon, "echo", "--delay", "1h", "--timeout", "90s", "--max-attempts", "2")
    shown = {
        job["id"]: " ".join(ok(daemon, "status", str(job["id"])).split()) for job in (defaults, own)
    }
    assert "timeout: 3600s (jobs.default_timeout)" in shown[defaults["id"]]
    assert "attempts: 0 of 3 (fixed at submit)" in shown[defaults["id"]]
    assert "timeout: 90s (the job's)" in shown[own["id"]]
    assert "attempts: 0 of 2 (fixed at submit)" in shown[own["id"]]
    assert as_json(daemon, "status", str(defaults["id"]))["effective"] == {
        "timeout": {"value": 3600, "source": "default"},
        "max_attempts": {"value": 3, "source": "job"},
    }


def test_status_of_a_missing_job_is_exit_4(daemon: Daemon) -> None:
    result = jobctl(daemon, "status", "987654321")
    assert result.returncode == 4
    assert result.stderr == "jobctl: job 987654321 not found\n"


def test_status_with_a_bad_id_is_exit_2(daemon: Daemon) -> None:
    assert jobctl(daemon, "status", "abc").returncode == 2


def test_cancel_a_pending_and_a_running_job(daemon: Daemon) -> None:
    pending = submit(daemon, "echo", "--delay", "3600")
    assert ok(daemon, "cancel", str(pending["id"])) == f"job {pending['id']} canceled\n"
    running = submit(daemon, "sleep", "-p", '{"seconds": 60}')
    for _ in range(200):
        if as_json(daemon, "status", str(running["id"]))["state"] == "running":
            break
    canceled = as_json(daemon, "cancel", str(running["id"]))
    assert canceled["state"] in ("running", "canceled")
    waited = jobctl(daemon, "wait", str(running["id"]), "--timeout", "20")
    assert waited.returncode == 1 and "canceled" in waited.stderr


def test_cancel_of_a_completed_job_is_a_conflict_exit_1(daemon: Daemon) -> None:
    job = as_json(daemon, "submit", "echo", "--wait")
    result = jobctl(daemon, "cancel", str(job["id"]))
    assert result.returncode == 1
    assert f"cannot cancel job {job['id']}: it is completed" in result.stderr


def test_cancel_of_a_missing_job_is_exit_4(daemon: Daemon) -> None:
    assert jobctl(daemon, "cancel", "987654321").returncode == 4


def test_retry(daemon: Daemon) -> None:
    failed = jobctl(daemon, "--json", "submit", "ctl_fail", "--wait")
    job_id = str(json.loads(failed.stdout)["id"])
    assert "is pending again" in ok(daemon, "retry", job_id)
    assert jobctl(daemon, "wait", job_id, "--timeout", "20").returncode == 1  # fails again
    done = as_json(daemon, "submit", "echo", "--wait")
    result = jobctl(daemon, "retry", str(done["id"]))
    assert result.returncode == 1 and "cannot retry" in result.stderr
    assert jobctl(daemon, "retry", "987654321").returncode == 4


def test_wait(daemon: Daemon) -> None:
    job = submit(daemon, "sleep", "-p", '{"seconds": 0.2}')
    waited = as_json(daemon, "wait", str(job["id"]))
    assert waited["state"] == "completed" and waited["result"] == {"slept": 0.2}


def test_wait_on_a_job_that_fails_is_exit_1(daemon: Daemon) -> None:
    job = submit(daemon, "ctl_fail", "-p", '{"message": "nope"}')
    result = jobctl(daemon, "wait", str(job["id"]))
    assert result.returncode == 1
    assert "state:            failed" in result.stdout and "nope" in result.stdout
    assert f"jobctl: job {job['id']} failed" in result.stderr


def test_wait_with_a_timeout_is_exit_1(daemon: Daemon) -> None:
    job = submit(daemon, "echo", "--delay", "3600")
    result = jobctl(daemon, "wait", str(job["id"]), "--timeout", "0.2")
    assert result.returncode == 1 and "timed out" in result.stderr
    ok(daemon, "cancel", str(job["id"]))


def test_wait_on_a_missing_job_is_exit_4(daemon: Daemon) -> None:
    assert jobctl(daemon, "wait", "987654321").returncode == 4


# --- many jobs, the daemon ------------------------------------------------------------------------


def test_list(daemon: Daemon) -> None:
    queue = f"list-{uuid.uuid4().hex[:8]}"
    ids = [submit(daemon, "echo", "-q", queue, "--delay", "3600")["id"] for _ in range(3)]
    out = ok(daemon, "list", "--queue", queue)
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["ID", "STATE", "TYPE", "QUEUE"]
    assert [int(r.split()[0]) for r in rows] == ids[::-1]
    paged = jobctl(daemon, "list", "--queue", queue, "--limit", "2")
    assert len(paged.stdout.splitlines()) == 3 and "--cursor" in paged.stderr
    cursor = re.search(r"--cursor (\S+)", paged.stderr).group(1)
    rest = as_json(daemon, "list", "--queue", queue, "--limit", "2", "--cursor", cursor)
    assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next_cursor"] is None
    everything = as_json(daemon, "list", "--queue", queue, "--limit", "1", "--all")
    assert [j["id"] for j in everything["jobs"]] == ids[::-1]
    assert as_json(daemon, "list", "--queue", queue, "--state", "completed,failed")["jobs"] == []
    assert len(as_json(daemon, "list", "-q", queue, "-s", "pending", "-t", "echo")["jobs"]) == 3
    assert ok(daemon, "list", "--queue", queue, "--type", "sleep") == "no jobs\n"
    for job_id in ids:
        ok(daemon, "cancel", str(job_id))


def test_the_next_page_hint_repeats_the_filters(daemon: Daemon) -> None:
    queue = f"hint-{uuid.uuid4().hex[:8]}"
    ids = [submit(daemon, "echo", "-q", queue, "--delay", "3600")["id"] for _ in range(3)]
    other = submit(daemon, "sleep", "-q", queue, "--delay", "3600")["id"]
    paged = jobctl(daemon, "list", "-t", "echo", "-q", queue, "-n", "2")
    assert paged.returncode == 0, paged.stderr
    hint = shlex.split(re.fullmatch(r"more: (.*) \(or --all\)\n", paged.stderr).group(1))
    assert hint[:-1] == [
        "jobctl",
        "list",
        "--type",
        "echo",
        "--queue",
        queue,
        "--limit",
        "2",
        "--cursor",
    ]
    rest = as_json(daemon, *hint[1:])
    assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next_cursor"] is None
    for job_id in [*ids, other]:
        ok(daemon, "cancel", str(job_id))


@pytest.mark.parametrize(
    "others",
    [["-q", "x"], ["-t", "sleep"], ["-s", "pending"], ["--created-after", "2020-01-01T00:00:00Z"]],
)
def test_a_cursor_with_other_filters_is_exit_2(daemon: Daemon, others: list[str]) -> None:
    queue = f"cursor-{uuid.uuid4().hex[:8]}"
    ids = [submit(daemon, "echo", "-q", queue, "--delay", "3600")["id"] for _ in range(2)]
    cursor = as_json(daemon, "list", "-q", queue, "-t", "echo", "-n", "1")["next_cursor"]
    result = jobctl(daemon, "list", "-q", queue, "-t", "echo", *others, "--cursor", cursor)
    assert result.returncode == 2
    assert "cursor: was issued for other filters" in result.stderr
    for job_id in ids:
        ok(daemon, "cancel", str(job_id))


def test_list_created_after_and_before(daemon: Daemon) -> None:
    queue = f"created-{uuid.uuid4().hex[:8]}"
    job = submit(daemon, "echo", "-q", queue, "--delay", "3600")
    created = _time(job["created_at"])
    second = timedelta(seconds=1)

    def listed(option: str, when: datetime) -> list[int]:
        found = as_json(daemon, "list", "-q", queue, option, when.isoformat())
        return [j["id"] for j in found["jobs"]]

    assert listed("--created-after", created - second) == [job["id"]]
    assert listed("--created-after", created) == []
    assert listed("--created-before", created + second) == [job["id"]]
    assert listed("--created-before", created) == []
    ok(daemon, "cancel", str(job["id"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--created-after", "yesterday"], "not an ISO-8601 time"),
        (["--created-before", "2030-01-01T00:00:00"], "needs a time zone"),
    ],
)
def test_list_with_a_bad_time_is_exit_2(daemon: Daemon, args: list[str], message: str) -> None:
    result = jobctl(daemon, "list", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_list_with_a_bad_state_is_exit_2(daemon: Daemon) -> None:
    result = jobctl(daemon, "list", "--state", "lost")
    assert result.returncode == 2 and "'lost' is not a state" in result.stderr


def test_stats(daemon: Daemon) -> None:
    out = ok(daemon, "stats")
    assert out.startswith("node      ")
    assert "workers   " in out and "of 2)" in out
    assert re.search(r"^rates     .*\d+\.\d completed/s", out, re.MULTILINE)
    assert re.search(r"^STATE\s+JOBS$", out, re.MULTILINE)
    assert re.search(
        r"^QUEUE\s+WAITING\s+PENDING\s+RUNNING\s+COMPLETED\s+FAILED\s+CANCELED$", out, re.M
    )
    stats = as_json(daemon, "stats")
    assert stats["workers"]["expected"] == 2 and "by_state" in stats["jobs"]
    assert set(stats["rates"]) >= {"submitted", "completed", "failed"}


def test_workers(daemon: Daemon) -> None:
    out = ok(daemon, "workers")
    assert out.splitlines()[0].split() == ["WORKER", "PID", "STATE", "JOB", "DONE", "RSS"]
    assert len(out.splitlines()) == 3 and "MiB" in out
    views = as_json(daemon, "workers")
    assert [w["index"] for w in views] == [1, 2]


def test_health(daemon: Daemon) -> None:
    assert ok(daemon, "health") == "ok: store ok, workers 2/2\n"
    assert as_json(daemon, "health")["status"] == "ok"


# --- shell completion ----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shells_script(shell: str) -> None:
    result = run_jobctl(None, "completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_JOBCTL_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout


def test_completion_of_an_unknown_shell_is_exit_2() -> None:
    result = run_jobctl(None, "completion", "tcsh")
    assert result.returncode == 2 and "'tcsh' is not one of" in result.stderr


def test_the_completion_script_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the bash script asks (the words typed so far) gets the subcommands."""
    monkeypatch.setenv("_JOBCTL_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "jobctl comp")
    monkeypatch.setenv("COMP_CWORD", "1")
    result = run_jobctl(None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["plain,completion"]


# --- no daemon ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["stats"], ["status", "1"], ["submit", "echo"], ["health"], ["wait", "1"]], ids=str
)
def test_no_daemon_is_exit_3_naming_the_socket(args: list[str]) -> None:
    directory = short_dir()
    socket_path = directory / "jobd.sock"
    result = run_jobctl(socket_path, *args)
    assert result.returncode == 3, result
    assert str(socket_path) in result.stderr
    assert "jobd run" in result.stderr
    directory.rmdir()


def test_the_socket_option_wins_over_the_environment(daemon: Daemon) -> None:
    directory = short_dir()
    result = run_jobctl(directory / "other.sock", "--socket", str(daemon.socket), "health")
    assert result.returncode == 0, result.stderr
    after = run_jobctl(None, "health", "--socket", str(daemon.socket))
    assert after.returncode == 0, after.stderr
    directory.rmdir()
