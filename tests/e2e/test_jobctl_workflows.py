"""jobctl and the HTTP shim with workflows, as a user runs them against `jobd run` on
PostgreSQL: `submit --after`, a `--batch` with names, `list --workflow`, `status` showing
parents and children, `wait` on the last job of a chain, and POST /jobs:batch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_harness import Daemon, run_jobctl, running_daemon

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def daemon(pg_url: str) -> Iterator[Daemon]:
    with running_daemon(pg_url, f"jobd_wf_{uuid.uuid4().hex[:8]}", workers=2) as d:
        yield d


def jobctl(daemon: Daemon, *args: str, input: str | None = None):
    return run_jobctl(daemon.socket, *args, input=input)


def as_json(daemon: Daemon, *args: str, input: str | None = None) -> object:
    result = jobctl(daemon, "--json", *args, input=input)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_submit_after_waits_and_wait_on_the_last_job_of_a_chain(daemon: Daemon) -> None:
    first = as_json(daemon, "submit", "sleep", "-p", '{"seconds": 3}')
    second = as_json(daemon, "submit", "echo", "--after", str(first["id"]))
    third = as_json(
        daemon, "submit", "echo", "--after", str(second["id"]), "--on-parent-failure", "run"
    )
    assert (second["state"], second["parents"]) == ("waiting", [first["id"]])
    assert third["on_parent_failure"] == "run"
    shown = jobctl(daemon, "status", str(second["id"])).stdout
    assert "parents:" in shown and "waiting for:" in shown and str(third["id"]) in shown
    waited = jobctl(daemon, "wait", str(third["id"]), "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    assert "completed" in waited.stdout


def test_a_batch_with_names_is_one_workflow(daemon: Daemon, tmp_path: Path) -> None:
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    lines = [
        {"name": "fetch", "type": "echo", "queue": queue, "payload": {"step": "fetch"}},
        *({"name": f"t{i}", "type": "echo", "queue": queue, "after": ["fetch"]} for i in range(3)),
        {"name": "report", "type": "echo", "queue": queue, "after": ["t0", "t1", "t2"]},
    ]
    batch = tmp_path / "workflow.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = as_json(daemon, "submit", "--batch", str(batch))
    assert isinstance(out, dict) and set(out["names"]) == {"fetch", "t0", "t1", "t2", "report"}
    assert [job["state"] for job in out["jobs"]] == ["pending"] + ["waiting"] * 4
    report = out["names"]["report"]
    assert jobctl(daemon, "wait", str(report), "--timeout", "30").returncode == 0
    listed = as_json(daemon, "list", "--workflow", str(out["names"]["t1"]))
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(out["names"].values())
    table = jobctl(daemon, "list", "--workflow", str(report)).stdout
    assert len(table.splitlines()) == 6


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"name": "a", "type": "echo", "after": ["b"]}, {"name": "b", "type": "echo",
          "after": ["a"]}], "cycle"),
        ([{"name": "a", "type": "echo", "after": ["nobody"]}], "no job named 'nobody'"),
        ([{"name": "a", "type": "echo", "after": [987654321]}], "job 987654321 not found"),
        ([{"name": "a", "type": "echo"}, {"name": "a", "type": "echo"}], "names jobs[0]"),
    ],
)  # fmt: skip
def test_a_bad_workflow_is_refused_with_exit_2_and_nothing_created(
    daemon: Daemon, lines: list[dict], message: str
) -> None:
    queue = f"bad-{uuid.uuid4().hex[:8]}"
    content = "".join(json.dumps({**line, "queue": queue}) + "\n" for line in lines)
    result = jobctl(daemon, "submit", "--batch", "-", input=content)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert as_json(daemon, "list", "--queue", queue)["jobs"] == []


def test_submit_after_an_unknown_job_is_exit_2(daemon: Daemon) -> None:
    result = jobctl(daemon, "submit", "echo", "--after", "987654321")
    assert result.returncode == 2 and "after[0]: job 987654321 not found" in result.stderr


def test_http_batch_and_workflow_filter(daemon: Daemon) -> None:
    """POST /jobs:batch through the shim's own code, as the control protocol's submit_many."""
    from jobd.client import Client

    with Client(daemon.socket) as client:
        batch = client.submit_batch(
            [{"name": "a", "type": "echo"}, {"type": "echo", "after": ["a"]}]
        )
        child = batch.results[1].job
        assert child.parents == (batch.names["a"],)
        got = client.get(child.id)
        assert got.waiting_for in ((batch.names["a"],), ())
        assert client.get(batch.names["a"]).children == (child.id,)
