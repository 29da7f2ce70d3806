"""What the workers report, and what a worker's death means: each job whose attempt ended
becomes an outcome (decided in `outcomes`) recorded for the write-back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from jobd.clock import utcnow
from jobd.domain import Job
from jobd.metrics import Metrics
from jobd.pipe import (
    AskParents,
    Done,
    Failed,
    Progress,
    Ready,
    Released,
    Report,
    Retiring,
    Started,
)
from jobd.store import Outcome
from jobd.supervisor import outcomes
from jobd.supervisor.asks import Asks
from jobd.supervisor.job_events import JobEvents
from jobd.supervisor.outcomes import JobPolicy
from jobd.supervisor.pacing import Pacing
from jobd.workers import StopRequest, WorkerProcess

log = logging.getLogger("jobd.supervisor")


class WorkerReports:
    def __init__(
        self,
        *,
        record: Callable[[Outcome, Job], None],
        started: Callable[[Job, datetime], None],
        progress: Callable[[Job, object, datetime], None] = lambda job, data, at: None,
        policy: Callable[[Job], JobPolicy],
        events: JobEvents,
        metrics: Metrics,
        pacing: Pacing,
        asks: Asks,
    ):
        self._record = record
        self._started_job = started
        self._progress = progress
        self._policy = policy
        self._events = events
        self._metrics = metrics
        self._pacing = pacing
        self._asks = asks

    def handle(self, w: WorkerProcess, report: Report) -> None:
        match report:
            case Started(job_id):
                self._started(w, job_id)
            case Done(job_id, result):
                job = self._ended(w, job_id)
                if job is not None:
                    self._record(outcomes.completed(job, result), job)
            case Failed(job_id, failure):
                stop = w.stop
                job = self._ended(w, job_id)
                if job is not None:
                    if stop is not None:
                        outcome = self._stopped(job, stop)
                    else:
                        cancelled = job.id in w.cancelled
                        outcome = outcomes.failed(
                            job, failure, cancelled, self._policy(job), utcnow()
                        )
                    self._record(outcome, job)
                    w.cancelled.discard(job.id)
            case Released(job_id):
                released = w.assigned.pop(job_id, None)
                if released is not None:
                    self._record(outcomes.released(released), released)
            case Ready():
                w.ready = True
            case Retiring(reason):
                w.retiring = True
                log.info("worker retiring", extra={"worker": w.index, "reason": reason})
            case Progress(job_id, data):
                job = w.assigned.get(job_id)
                if job is not None and w.running == job_id:
                    self._progress(job, data, utcnow())
                    self._events.progressed(job, data)
            case AskParents(job_id):
                self._asks.parent_results(w, job_id)

    def died(self, w: WorkerProcess, how: str) -> None:
        """The worker is gone (`how`: its exit in words): its running job ends as stopped or
        as a crash, and the jobs queued in it go back unstarted."""
        if w.running is not None:
            job = w.assigned.pop(w.running)
            if w.stop is not None:
                self._record(self._stopped(job, w.stop), job)
            else:
                crash = outcomes.crashed(job, w.index, how, self._policy(job), utcnow())
                self._record(crash, job)
        for job in w.assigned.values():
            self._record(outcomes.released(job), job)
        w.assigned.clear()

    def _started(self, w: WorkerProcess, job_id: int) -> None:
        w.running = job_id
        w.started_at = time.monotonic()
        job = w.assigned.get(job_id)
        if job is not None:
            now = utcnow()
            self._started_job(job, now)
            waited = max((now - job.run_at).total_seconds(), 0.0)
            self._events.started(job, w.index, waited)

    def _ended(self, w: WorkerProcess, job_id: int) -> Job | None:
        job = w.assigned.pop(job_id, None)
        if w.running == job_id:
            w.running = None
            w.stop = None
            if job is not None:
                ran = time.monotonic() - w.started_at
                self._metrics.ran(job.type, ran)
                self._pacing.job_ran(ran)
        w.jobs_done += 1
        return job

    def _stopped(self, job: Job, stop: StopRequest) -> Outcome:
        if stop.reason == "timeout":
            self._metrics.job("timed_out", job.type, job.queue)
        return outcomes.stopped(job, stop.reason, self._policy(job), utcnow())
