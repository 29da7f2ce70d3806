"""The counting and logging of the changes the control server makes (submits, cancels of
pending jobs, operator retries): the supervisor's JobEvents over its metrics, without
processes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from jobd.domain import Job, NewJob
from jobd.metrics import Metrics
from jobd.supervisor.job_events import JobEvents

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def test_jobs_submitted_together_are_counted_by_type_and_queue_and_each_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    events = JobEvents(metrics, verbose=True)
    kinds = [("a", "default"), ("a", "default"), ("b", "q2")]
    jobs = [Job.new(i, NewJob(t, {}, queue=q), NOW) for i, (t, q) in enumerate(kinds, 1)]
    with caplog.at_level(logging.INFO, logger="jobd.jobs"):
        events.changed("submitted", jobs, None)
        events.changed("submitted", [jobs[0]], None)
        events.changed("requeued", jobs[2:], None)  # no counter of its own: logged only
    text = metrics.exposition()
    assert 'jobd_jobs_submitted_total{queue="default",type="a"} 3.0' in text
    assert 'jobd_jobs_submitted_total{queue="q2",type="b"} 1.0' in text
    assert metrics.totals()["submitted"] == 4
    logged = [(r.getMessage(), r.job_id, r.queue) for r in caplog.records]
    assert logged == [
        ("job submitted", 1, "default"),
        ("job submitted", 2, "default"),
        ("job submitted", 3, "q2"),
        ("job submitted", 1, "default"),
        ("job requeued", 3, "q2"),
    ]
