"""The jobs claimed and not yet handed to a worker, and the handing out: each to the worker
holding the fewest, up to the pacing's depth each; the jobs a worker gets in one go travel in
one message (one write, one wake-up)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from jobd.domain import Job
from jobd.handlers import Registry
from jobd.pipe import Run, RunJob
from jobd.store import Outcome
from jobd.supervisor import outcomes
from jobd.workers import WorkerProcess


def taking_work(workers: Iterable[WorkerProcess]) -> list[WorkerProcess]:
    return [w for w in workers if w.ready and not w.retiring]


class HandOut:
    def __init__(
        self,
        registry: Registry,
        record: Callable[[Outcome, Job], None],
        timeout_of: Callable[[Job], float],
    ):
        self.claimed: deque[Job] = deque()  # claimed, not yet handed to a worker
        self._registry = registry
        self._record = record
        self._timeout_of = timeout_of

    def to(self, workers: dict[int, WorkerProcess], depth: int) -> None:
        """Hand out what the workers have room for (`depth` jobs each)."""
        batches: dict[int, list[Job]] = {}
        while self.claimed:
            candidates = [w for w in taking_work(workers.values()) if len(w.assigned) < depth]
            if not candidates:
                break
            w = min(candidates, key=lambda c: len(c.assigned))
            job = self.claimed.popleft()
            if job.type not in self._registry:
                self._record(outcomes.unknown_type(job, self._registry.types()), job)
                continue
            w.assigned[job.id] = job
            batches.setdefault(w.index, []).append(job)
        for index, jobs in batches.items():
            self._send(workers[index], jobs)

    def _send(self, w: WorkerProcess, jobs: list[Job]) -> None:
        runs = tuple(
            RunJob(
                job_id=job.id,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                type=job.type,
                queue=job.queue,
                payload=job.payload,
                correlation_id=job.correlation_id,
                timeout=self._timeout_of(job),
            )
            for job in jobs
        )
        if not w.send(Run(runs)):  # gone: its sentinel will say so; the jobs wait here
            for job in reversed(jobs):
                w.assigned.pop(job.id)
                self.claimed.appendleft(job)

    def release_all(self) -> None:
        """Give every claimed job back unstarted (a drain)."""
        while self.claimed:
            job = self.claimed.popleft()
            self._record(outcomes.released(job), job)

    def cancel(self, job_id: int) -> bool:
        """End job `job_id` canceled if it is waiting here; True if it was."""
        for job in self.claimed:
            if job.id == job_id:
                self.claimed.remove(job)
                self._record(outcomes.canceled_before_start(job), job)
                return True
        return False
