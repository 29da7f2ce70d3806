"""One event per job transition: counted in the metrics, logged on `jobd.jobs` (INFO when
`logging.job_events` asks for it, else DEBUG; failures, retries and cancels always show), and
published to the control connections that subscribed (jobd.subscriptions), if any."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from jobd.context import job_log_fields
from jobd.domain import Job, JobFacts, State
from jobd.metrics import Metrics
from jobd.store import Outcome, OutcomeKind
from jobd.subscriptions import JobChange, JobFeed, change_of

events = logging.getLogger("jobd.jobs")

#: The metric/event name of each written outcome, by (what the node reported, where it led).
_EVENTS: dict[tuple[OutcomeKind, State], str] = {
    (OutcomeKind.FAILED, State.PENDING): "retried",
    (OutcomeKind.RELEASED, State.PENDING): "released",
}
#: Events that show whatever logging.job_events says.
_ALWAYS = {"failed": logging.WARNING, "retried": logging.INFO, "canceled": logging.INFO}


def job_fields(job: JobFacts) -> dict[str, Any]:
    """The fields every log line about a job carries."""
    return job_log_fields(job.id, job.type, job.attempts, job.queue, job.correlation_id)


def event_of(outcome: Outcome, state: State) -> str:
    """The event an outcome written with the store's answer `state` counts as."""
    return _EVENTS.get((outcome.kind, state), state.value)


class JobEvents:
    def __init__(self, metrics: Metrics, verbose: bool):
        self.metrics = metrics
        self.level = logging.INFO if verbose else logging.DEBUG
        self.feed: JobFeed | None = None  # set when a control server serves subscriptions

    def _publishing(self) -> JobFeed | None:
        feed = self.feed
        return feed if feed is not None and feed.wanted else None

    def changed(self, event: str, jobs: Sequence[JobFacts], source: str | None) -> None:
        """A change the control server made to `jobs`: the counter is moved once per type and
        queue rather than once per job, and each job logged."""
        counter = self.metrics.jobs.get(event)
        if counter is not None:
            for (job_type, queue), n in Counter((job.type, job.queue) for job in jobs).items():
                counter.labels(job_type, queue).inc(n)
        if feed := self._publishing():
            feed.publish([change_of(job, event) for job in jobs])
        if events.isEnabledFor(self.level):
            for job in jobs:
                extra = {**job_fields(job), "from": source, "to": job.state.value}
                events.log(self.level, f"job {event}", extra=extra)

    def started(self, job: Job, worker: int, waited: float) -> None:
        """A worker started `job`, `waited` seconds after it was due."""
        self.metrics.job("started", job.type, job.queue)
        self.metrics.waited(job.type, waited)
        if feed := self._publishing():
            feed.publish([change_of(job, "started", waited)._replace(state="running")])
        if events.isEnabledFor(self.level):
            extra = {
                **job_fields(job),
                "from": "pending",
                "to": "running",
                "worker": worker,
                "queue_wait": round(waited, 6),
            }
            events.log(self.level, "job started", extra=extra)

    def progressed(self, job: Job, data: object) -> None:
        """A running job's handler reported `data` (ctx.progress): for subscribers only, as it
        comes (it is stored with the next write-back, at most once a second)."""
        if feed := self._publishing():
            feed.publish([change_of(job, "progress")._replace(state="running", progress=data)])

    def written(self, outcome: Outcome, job: Job | None, state: State) -> None:
        """An outcome the store applied: the job is now `state`."""
        event = event_of(outcome, state)
        if job is not None:
            self.metrics.job(event, job.type, job.queue)
        if feed := self._publishing():
            feed.publish([written_change(outcome, job, state, event)])
        level = _ALWAYS.get(event, self.level)
        if not events.isEnabledFor(level):
            return
        extra = {**outcome_fields(outcome, job), "from": "running", "to": state.value}
        if outcome.error is not None and outcome.kind is not OutcomeKind.RELEASED:
            extra["error_type"] = outcome.error.type
            extra["error"] = outcome.error.message
            if state is State.FAILED and outcome.error.traceback:
                extra["traceback"] = outcome.error.traceback
        if outcome.retry_at is not None and state is State.PENDING:
            extra["run_at"] = outcome.retry_at.isoformat()
        events.log(level, f"job {event}", extra=extra)

    def recovered(self, job: Job) -> None:
        """The store took back `job`, whose lease had expired."""
        self.metrics.job("recovered", job.type, job.queue)
        if feed := self._publishing():
            feed.publish([change_of(job, "recovered")])
        if job.state.terminal:  # no attempt left, or a cancel was waiting
            self.metrics.job(job.state.value, job.type, job.queue)


def outcome_fields(outcome: Outcome, job: Job | None) -> dict[str, Any]:
    """The log fields of an outcome's job (its id alone when the job is not known)."""
    fields = job_fields(job) if job else {"job_id": outcome.job_id}
    fields["attempt"] = outcome.attempt
    return fields


def written_change(outcome: Outcome, job: Job | None, state: State, event: str) -> JobChange:
    """The change a written outcome made (the job as it was claimed: its state is the
    store's answer)."""
    if job is None:
        return JobChange(outcome.job_id, state.value, None, None, event, time.time())
    return change_of(job, event)._replace(state=state.value)
