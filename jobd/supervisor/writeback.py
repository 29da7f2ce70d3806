"""The outcomes waiting to be written to the store, written in batches: at once when idle,
grouped when busy (whatever arrives while one write is in flight goes in the next), kept and
retried while the store does not answer (ADR 0011).  Each written outcome is accounted: one
transition event, or a warning when the store refused it because the lease was lost.

The running jobs' starts and latest progress ride on the same batches: kept per job (a newer
progress replaces the one not yet written) and written before the outcomes, so a job's last
progress lands before its end (ADR 0031).  Starts with nothing else to write wait a moment
(START_WRITE_DELAY) for an outcome: a short job's outcome then carries its start, and its end
is not queued behind a write of its start (ADR 0035)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, KeysView
from datetime import datetime

from jobd.domain import Job, State
from jobd.errors import Unavailable
from jobd.limits import START_WRITE_DELAY
from jobd.store import Outcome, ProgressReport, Start
from jobd.supervisor.job_events import JobEvents, outcome_fields
from jobd.supervisor.store_health import StoreHealth

log = logging.getLogger("jobd.supervisor")

#: The store's write: this node's outcomes (and starts) in, the state each applied outcome led
#: to out.
Finish = Callable[[list[Outcome], list[Start]], Awaitable[dict[int, State]]]
#: The store's progress write: this node's running jobs' latest progress in, the ids written
#: out.
RecordProgress = Callable[[list[ProgressReport]], Awaitable[list[int]]]

FIRST_RETRY_DELAY = 0.05  # seconds before a failed write is tried again, doubling...
MAX_RETRY_DELAY = 5.0  # ...up to this


class WriteBack:
    def __init__(
        self,
        finish: Finish,
        events: JobEvents,
        health: StoreHealth,
        record_progress: RecordProgress | None = None,
        start_delay: float = START_WRITE_DELAY,
        accounted: Callable[[], None] = lambda: None,
    ):
        self._finish = finish
        #: Told after each written batch is accounted: its jobs are no longer held here.
        self._accounted = accounted
        self._record_progress = record_progress
        self._events = events
        self._health = health
        self.pending: list[Outcome] = []  # recorded, not yet written
        #: Jobs started and not yet ended, written with the next batch: claimed is not
        #: started, and the store learns the difference without a statement per job.
        self._starts: dict[int, Start] = {}
        #: The latest progress of each running job, not written yet.
        self._progress: dict[int, ProgressReport] = {}
        # The job of each outcome not yet written, per job id in the order recorded: one job
        # can have two (a job released when its worker died, written, claimed again by this
        # node and finished while that write's answer was on its way).
        self._jobs: dict[int, deque[Job]] = {}
        self._needed = asyncio.Event()
        self._start_delay = start_delay
        self._closing = False
        self.writing = False  # a write is in flight

    def record(self, outcome: Outcome, job: Job) -> None:
        """Keep `outcome` of `job` (as claimed) for the next write, fenced on the claim's
        lease token: a replay of it can never end a later claim of the job."""
        start = self._starts.pop(outcome.job_id, None)  # the outcome carries it instead
        token = job.lease_token if outcome.token is None else outcome.token
        started_at = outcome.started_at
        if start is not None and started_at is None:
            started_at = start.at
        if token != outcome.token or started_at != outcome.started_at:
            # built whole, not by dataclasses.replace: this runs for every job, and replace
            # costs twice a constructor's time
            outcome = Outcome(
                outcome.job_id,
                outcome.attempt,
                outcome.kind,
                outcome.result,
                outcome.error,
                outcome.retry_at,
                outcome.crashed,
                token,
                started_at,
            )
        self.pending.append(outcome)
        self._jobs.setdefault(outcome.job_id, deque()).append(job)
        self._needed.set()

    def started(self, job: Job, at: datetime) -> None:
        """Its worker started `job` (as claimed) at `at`: written with the next batch, unless
        the job's outcome comes first and carries it."""
        self._starts[job.id] = Start(job.id, job.attempts, job.lease_token, at)
        self._needed.set()

    def progress(self, job: Job, data: object, at: datetime) -> None:
        """`job` (as claimed) reported `data` as its progress at `at`: written with the next
        batch, replacing a report of the job not written yet."""
        self._progress[job.id] = ProgressReport(job.id, job.attempts, job.lease_token, data, at)
        self._needed.set()

    def held(self) -> KeysView[int]:
        """The ids of the jobs with an outcome not yet accounted: their leases are this
        node's to renew until then."""
        return self._jobs.keys()

    def unwritten(self) -> Iterator[Job]:
        """The jobs whose outcomes are not yet written (the database's running ones)."""
        for jobs in self._jobs.values():
            yield from jobs

    def take(self) -> list[Outcome]:
        """The outcomes to write next, in the order recorded."""
        batch, self.pending = self.pending, []
        return batch

    def close(self) -> None:
        """Write what is left, then end `run`."""
        self._closing = True
        self._needed.set()

    async def run(self) -> None:
        """Write batches until closed and nothing is left."""
        delay = FIRST_RETRY_DELAY
        while not (self._closing and not self.pending):
            await self._needed.wait()
            self._needed.clear()
            await self._starts_wait_for_outcomes()
            batch = self.take()
            starts, self._starts = self._starts, {}
            progress, self._progress = self._progress, {}
            if not batch and not starts and not progress:
                continue
            self.writing = True
            try:
                await self._write_progress(progress)
                applied = {}
                if batch or starts:
                    applied = await self._finish(batch, list(starts.values()))
            except Unavailable as exc:
                self.pending[:0] = batch  # keep them: written once the store is back
                self._keep_starts(starts, progress)
                self._health.write_failed("write results", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                self._needed.set()
                continue
            except BaseException:
                self.pending[:0] = batch
                self._keep_starts(starts, progress)
                raise
            finally:
                self.writing = False
            delay = FIRST_RETRY_DELAY
            self._health.wrote("write results")
            self.account(batch, applied)
            self._accounted()

    async def _starts_wait_for_outcomes(self) -> None:
        """When only starts are to be written, wait up to the start delay for an outcome (or a
        progress report, or the close) to go with them.  A short job's outcome arrives within
        it and carries its start (`record`): one write instead of the start's and then the
        outcome's behind it, which is what an idle node's latency paid.  A longer job's start
        is written when the delay is up, long before its end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_delay
        while self._starts and not (self.pending or self._progress or self._closing):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._needed.wait()
            self._needed.clear()

    async def _write_progress(self, progress: dict[int, ProgressReport]) -> None:
        """Written ahead of the outcomes: a job's last progress, reported before its end, is
        then in the row when the row ends (after, the fence would refuse it)."""
        if progress and self._record_progress is not None:
            written = await self._record_progress(list(progress.values()))
            if len(written) < len(progress):
                log.debug(
                    "progress discarded: the attempt ended or its lease was lost",
                    extra={"job_ids": sorted(progress.keys() - set(written))},
                )

    def _keep_starts(self, starts: dict[int, Start], progress: dict[int, ProgressReport]) -> None:
        """Starts (and progress) of a write that failed, for the next one (one recorded since
        is newer).  Kept even when the job's outcome is waiting too: the store writes a
        batch's starts before its outcomes, and the outcome, recorded after the start was
        taken, lacks it."""
        self._starts = {**starts, **self._starts}
        self._progress = {**progress, **self._progress}

    def account(self, batch: list[Outcome], applied: dict[int, State]) -> None:
        """Count and log each outcome of a written batch (`applied`: the store's answer, the
        state each job's applied outcome led to).

        A batch can hold two outcomes of one job: an earlier claim's, kept while the store did
        not answer, and that of the claim this node took after the earlier one's lease was
        recovered.  Only the newest can have applied -- the row has moved on to its claim, and
        the fence refuses the older token -- so the store's answer for the job is the newest
        outcome's, and the older ones were refused.  (Found by the chaos harness: a release
        kept through an outage was counted as the completion written beside it.)"""
        newest = {outcome.job_id: i for i, outcome in enumerate(batch)}
        for i, outcome in enumerate(batch):
            job = self._job_of(outcome.job_id)
            state = applied.get(outcome.job_id) if newest[outcome.job_id] == i else None
            if state is None:
                log.warning(
                    "result discarded: the job's lease was lost",
                    extra={**outcome_fields(outcome, job), "outcome": outcome.kind.value},
                )
                continue
            self._events.written(outcome, job, state)

    def _job_of(self, job_id: int) -> Job | None:
        """The job of the oldest outcome of `job_id` (outcomes are written in the order
        recorded), forgotten as it is written."""
        jobs = self._jobs.get(job_id)
        if not jobs:
            return None
        job = jobs.popleft()
        if not jobs:
            del self._jobs[job_id]
        return job
