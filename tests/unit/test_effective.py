"""The limits in force for a job: `get` replies carry them (`effective`, each limit's value and
source), jobd.client reads them into JobView.effective whether or not the daemon sends them,
and jobctl's detail of a job shows them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from jobctl.output import job_detail
from jobd.clock import utcnow
from jobd.control import Operations, effective_limits
from jobd.domain import Job, NewJob
from jobd.errors import InvalidRequest
from jobd.handlers import HandlerSpec, Registry
from jobd.jobspec import JobSpec
from jobd.protocol import Effective, IdParams, InForce, job_from_dict
from jobd.store.memory import MemoryStore

DEFAULT_TIMEOUT = 3600.0


def make_registry() -> Registry:
    registry = Registry()
    registry.register(HandlerSpec("echo", lambda ctx, p: p))
    registry.register(HandlerSpec("mail", lambda ctx, p: p, max_attempts=5, timeout=120))
    return registry


@pytest.fixture
def ops() -> Operations:
    supervisor = SimpleNamespace(
        store=MemoryStore(),
        registry=make_registry(),
        settings=SimpleNamespace(workers=1, default_timeout=DEFAULT_TIMEOUT),
        job_events=lambda event, jobs, source: None,  # submit counts what it created
    )
    return Operations(supervisor, default_max_attempts=3)  # type: ignore[arg-type]


async def get_submitted(ops: Operations, job_type: str, **fields: Any) -> dict[str, Any]:
    submitted = await ops.submit(JobSpec(type=job_type, payload={}, **fields))
    job: dict[str, Any] = (await ops.get(IdParams(submitted["job"]["id"])))["job"]
    return job


# --- the daemon's side ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_type", "fields", "timeout", "max_attempts"),
    [
        ("mail", {}, {"value": 120, "source": "handler"}, {"value": 5, "source": "job"}),
        (
            "echo",
            {},
            {"value": DEFAULT_TIMEOUT, "source": "default"},
            {"value": 3, "source": "job"},
        ),
        (
            "mail",
            {"timeout": 30.0, "max_attempts": 2},
            {"value": 30.0, "source": "job"},
            {"value": 2, "source": "job"},
        ),
    ],
    ids=["handler", "default", "job"],
)
async def test_get_says_which_limits_are_in_force_and_where_they_come_from(
    ops: Operations,
    job_type: str,
    fields: dict[str, Any],
    timeout: dict[str, Any],
    max_attempts: dict[str, Any],
) -> None:
    job = await get_submitted(ops, job_type, **fields)
    assert job["effective"] == {"timeout": timeout, "max_attempts": max_attempts}
    assert job["timeout"] == fields.get("timeout")  # the job's own member is unchanged


async def test_only_get_adds_the_member(ops: Operations) -> None:
    """The job object of the other methods is the job as stored, as before."""
    submitted = await ops.submit(JobSpec(type="mail", payload={}))
    assert "effective" not in submitted["job"]
    got = (await ops.get(IdParams(submitted["job"]["id"])))["job"]
    assert {k: v for k, v in got.items() if k != "effective"} == submitted["job"]


def test_a_type_this_node_does_not_run_gets_the_default_timeout() -> None:
    job = Job.new(1, NewJob("gone", {}, max_attempts=4), utcnow())
    assert effective_limits(job, None, 60.0) == Effective(
        InForce(60.0, "default"), InForce(4, "job")
    )


# --- the client's side ----------------------------------------------------------------------


JOB = Job.new(7, NewJob("mail", {}, max_attempts=5), utcnow()).to_dict()


def wire_job(**members: Any) -> dict[str, Any]:
    return {**JOB, **members}


def test_the_client_reads_the_member_typed_and_keeps_it_out_of_extra() -> None:
    effective = {
        "timeout": {"value": 120, "source": "handler"},
        "max_attempts": {"value": 5, "source": "job"},
        "backoff": {"value": 2, "source": "handler"},  # a newer daemon's
    }
    view = job_from_dict(wire_job(effective=effective, shiny=1))
    assert view.effective == Effective(InForce(120, "handler"), InForce(5, "job"))
    assert view.extra == {"shiny": 1}
    assert view.to_dict()["effective"] == effective  # as sent
    assert view == job_from_dict(wire_job())  # the same job, with or without it


def test_a_daemon_without_the_member_or_with_part_of_it() -> None:
    assert job_from_dict(wire_job()).effective is None
    partial = job_from_dict(wire_job(effective={"timeout": {"value": 9, "source": "node"}}))
    assert partial.effective == Effective(InForce(9, "node"), None)


@pytest.mark.parametrize(
    "effective",
    [
        [],
        {"timeout": 120},
        {"timeout": {"value": "120", "source": "job"}},
        {"timeout": {"value": True, "source": "job"}},
        {"timeout": {"value": 1, "source": None}},
        {"timeout": {"source": "job"}},
    ],
)
def test_a_malformed_member_is_a_malformed_reply(effective: object) -> None:
    with pytest.raises(InvalidRequest, match="malformed job"):
        job_from_dict(wire_job(effective=effective))


# --- jobctl's detail of a job ---------------------------------------------------------------


def detail_line(label: str, **members: Any) -> str:
    lines = job_detail(job_from_dict(wire_job(**members))).splitlines()
    (line,) = [line for line in lines if line.startswith(label + ":")]
    return " ".join(line.split())


def in_force(timeout: tuple[float, str], max_attempts: tuple[int, str]) -> dict[str, Any]:
    return {
        "effective": {
            "timeout": {"value": timeout[0], "source": timeout[1]},
            "max_attempts": {"value": max_attempts[0], "source": max_attempts[1]},
        }
    }


def test_detail_shows_the_timeout_in_force_and_its_source() -> None:
    handler = in_force((120, "handler"), (5, "job"))
    assert detail_line("timeout", **handler) == "timeout: 120s (the mail handler's)"
    default = in_force((3600.0, "default"), (5, "job"))
    assert detail_line("timeout", **default) == "timeout: 3600s (jobs.default_timeout)"
    own = in_force((30.0, "job"), (5, "job"))
    assert detail_line("timeout", timeout=30.0, **own) == "timeout: 30s (the job's)"
    newer = in_force((7, "queue"), (5, "job"))
    assert detail_line("timeout", **newer) == "timeout: 7s (queue)"


def test_detail_shows_max_attempts_as_fixed_at_submit() -> None:
    shown = detail_line("attempts", **in_force((120, "handler"), (5, "job")))
    assert shown == "attempts: 0 of 5 (fixed at submit)"


def test_detail_from_a_reply_without_the_member() -> None:
    """An older daemon, or a reply of another method (`wait`, `submit`)."""
    assert detail_line("timeout") == "timeout: - (the handler's, else jobs.default_timeout)"
    assert detail_line("timeout", timeout=30.0) == "timeout: 30s (the job's)"
    assert detail_line("attempts") == "attempts: 0 of 5"
    assert "effective" not in job_detail(
        job_from_dict(wire_job(**in_force((1, "job"), (5, "job"))))
    )
