"""jobctl shows a job its node has claimed but no worker has started as `running (claimed)`:
the job object's started_at is null while it is only claimed."""

from __future__ import annotations

from datetime import UTC, datetime

from jobctl.output import job_detail, job_table
from jobd.domain import Job, NewJob
from jobd.protocol import job_from_dict

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _running(started: bool) -> Job:
    claimed = Job.new(7, NewJob("echo", {}), NOW).claim("node-a", NOW, NOW)
    return claimed.start(NOW) if started else claimed


def test_a_claimed_job_shows_as_running_claimed() -> None:
    view = job_from_dict(_running(started=False).to_dict())
    assert view.claimed_only and view.state_name == "running"
    assert job_table([view]).splitlines()[1].split()[1:3] == ["running", "(claimed)"]
    assert "\nstate:            running (claimed)\n" in job_detail(view)


def test_a_started_job_shows_as_running() -> None:
    view = job_from_dict(_running(started=True).to_dict())
    assert not view.claimed_only
    assert job_table([view]).splitlines()[1].split()[1:3] == ["running", "echo"]
    assert "\nstate:            running\n" in job_detail(view)
