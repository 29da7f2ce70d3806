"""`result_ttl`, a job's own retention: read and checked on every way of submitting (the
protocol's spec, jobd.enqueue's statement, the HTTP shim, jobctl), filled in from the
handler's default, shown in the job's JSON and in `jobctl status`, and the domain's rule of
when the prune may drop a job (docs/adr/0033-result-retention-per-job.md)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from jobctl.cli import main as jobctl
from jobctl.output import job_detail
from jobd.control import Operations
from jobd.domain import Job, NewJob, State, prunable
from jobd.enqueue import _statement
from jobd.errors import InvalidParams
from jobd.handlers import HandlerSpec, Registry
from jobd.http.api import Api
from jobd.jobspec import JobSpec, parse_job_spec
from jobd.limits import MAX_RESULT_TTL
from jobd.protocol import job_from_dict
from jobd.store.memory import MemoryStore
from tests.unit.test_control import FakeSupervisor
from tests.unit.test_http_api import JOB, FakePool, call, problem_of, request

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must be >= 0"),
        (-0.001, "must be >= 0"),
        ("60", "must be a number"),
        (True, "must be a number"),
        ([1], "must be a number"),
        (MAX_RESULT_TTL + 1, "must be between 0 and 10 years of seconds"),
    ],
)
def test_a_bad_result_ttl_is_refused_naming_it(value: Any, problem: str) -> None:
    with pytest.raises(InvalidParams) as refused:
        parse_job_spec({"type": "echo", "result_ttl": value}).to_new_job(3, None, NOW)
    assert refused.value.field == "result_ttl"
    assert problem in refused.value.problem


def test_the_spec_reads_it_and_sends_it_back() -> None:
    spec = parse_job_spec({"type": "echo", "result_ttl": 0})
    assert spec.result_ttl == 0 and spec.to_params()["result_ttl"] == 0
    assert "result_ttl" not in parse_job_spec({"type": "echo"}).to_params()
    assert spec.to_new_job(3, None, NOW).result_ttl == 0


def test_the_handlers_default_applies_when_the_job_gives_none() -> None:
    assert JobSpec("echo", {}).to_new_job(3, None, NOW, 600).result_ttl == 600
    assert JobSpec("echo", {}, result_ttl=5).to_new_job(3, None, NOW, 600).result_ttl == 5
    assert JobSpec("echo", {}, result_ttl=0).to_new_job(3, None, NOW, 600).result_ttl == 0
    assert JobSpec("echo", {}).to_new_job(3, None, NOW).result_ttl is None


def test_a_handler_with_a_bad_default_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="handler 'big': result_ttl must be a number"):
        HandlerSpec("big", lambda ctx, p: p, result_ttl="1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 0 and 10 years"):
        HandlerSpec("big", lambda ctx, p: p, result_ttl=-5)


async def test_the_daemon_fills_in_the_handlers_default() -> None:
    registry = Registry()
    registry.register(HandlerSpec("echo", lambda ctx, p: p))
    registry.register(HandlerSpec("report", lambda ctx, p: p, result_ttl=3600))
    ops = Operations(FakeSupervisor(MemoryStore(), registry), store_timeout=0.5)
    ops.open()
    report = (await ops.submit(JobSpec("report", {})))["job"]
    assert report["result_ttl"] == 3600
    mine = (await ops.submit(JobSpec("report", {}, result_ttl=0)))["job"]
    assert mine["result_ttl"] == 0
    assert (await ops.submit(JobSpec("echo", {})))["job"]["result_ttl"] is None


def test_enqueue_passes_it_only_when_given() -> None:
    """An enqueue without it still works on a schema before 10 (no such parameter)."""
    query, params = _statement("echo", {}, schema="jobd", result_ttl=30)
    assert "result_ttl => %(result_ttl)s" in query and params["result_ttl"] == 30
    query, _ = _statement("echo", {}, schema="jobd")
    assert "result_ttl" not in query
    with pytest.raises(InvalidParams, match=r"^result_ttl: must be >= 0"):
        _statement("echo", {}, schema="jobd", result_ttl=-1)


def test_http_post_jobs_passes_it_and_refuses_a_bad_one() -> None:
    pool = FakePool(submit={"job": JOB, "created": True})
    call(Api(pool), request("POST", "/jobs", {"type": "echo", "result_ttl": 60}))
    assert pool.client.calls[0][1]["result_ttl"] == 60
    problem = problem_of(Api(FakePool()), request("POST", "/jobs", {"type": "e", "result_ttl": -1}))
    assert (problem.status, problem.field) == (400, "result_ttl")


def test_jobctl_submit_takes_a_duration_and_refuses_a_negative_one() -> None:
    refused = CliRunner().invoke(jobctl, ["submit", "echo", "--result-ttl", "-5"])
    assert refused.exit_code == 2 and "--result-ttl" in refused.output


def _job(**changes: Any) -> Job:
    job = Job.new(1, NewJob("echo"), NOW)
    return dataclasses.replace(job, **changes)


def test_status_shows_it() -> None:
    kept = job_from_dict(_job(result_ttl=3600.0).to_dict())
    assert kept.result_ttl == 3600.0
    assert "\nresult ttl:       3600s after it ends" in job_detail(kept)
    plain = job_detail(job_from_dict(_job().to_dict()))
    assert "\nresult ttl:       - (jobs.retention)\n" in plain


def test_when_the_prune_may_drop_a_job() -> None:
    done = {"state": State.COMPLETED, "finished_at": NOW}
    cutoff = NOW + timedelta(seconds=1)  # a retention past the job's end
    assert prunable(_job(**done), NOW, cutoff)
    assert not prunable(_job(**done), NOW, None)  # no retention: kept
    assert prunable(_job(**done, result_ttl=0.0), NOW, None)  # 0: at the next prune
    assert not prunable(_job(**done, result_ttl=10.0), NOW + timedelta(seconds=9), cutoff)
    assert prunable(_job(**done, result_ttl=10.0), NOW + timedelta(seconds=10), None)
    assert not prunable(_job(result_ttl=0.0), NOW, cutoff)  # pending: never
