"""The outcomes waiting to be written to the store, written in batches: at once when idle,
grouped when busy (whatever arrives while one write is in flight goes in the next), kept and
retried while the store does not answer (ADR 0011).  Each written outcome is accounted: one
transition event, or a warning when the store refused it because the lease was lost."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable, KeysView

from jobd.domain import Job, State
from jobd.errors import Unavailable
from jobd.store import Outcome
from jobd.supervisor.job_events import JobEvents, outcome_fields
from jobd.supervisor.store_health import StoreHealth

log = logging.getLogger("jobd.supervisor")

#: The store's write: this node's outcomes in, the state each applied one led to out.
Finish = Callable[[list[Outcome]], Awaitable[dict[int, State]]]

FIRST_RETRY_DELAY = 0.05  # seconds before a failed write is tried again, doubling...
MAX_RETRY_DELAY = 5.0  # ...up to this


class WriteBack:
    def __init__(self, finish: Finish, events: JobEvents, health: StoreHealth):
        self._finish = finish
        self._events = events
        self._health = health
        self.pending: list[Outcome] = []  # recorded, not yet written
        # The job of each outcome not yet written, per job id in the order recorded: one job
        # can have two (a job released when its worker died, written, claimed again by this
        # node and finished while that write's answer was on its way).
        self._jobs: dict[int, deque[Job]] = {}
        self._needed = asyncio.Event()
        self._closing = False

    def record(self, outcome: Outcome, job: Job) -> None:
        """Keep `outcome` of `job` (as claimed) for the next write, fenced on the claim's
        lease token: a replay of it can never end a later claim of the job."""
        if outcome.token is None:
            outcome = dataclasses.replace(outcome, token=job.lease_token)
        self.pending.append(outcome)
        self._jobs.setdefault(outcome.job_id, deque()).append(job)
        self._needed.set()

    def held(self) -> KeysView[int]:
        """The ids of the jobs with an outcome not yet accounted: their leases are this
        node's to renew until then."""
        return self._jobs.keys()

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
            batch = self.take()
            if not batch:
                continue
            try:
                applied = await self._finish(batch)
            except Unavailable as exc:
                self.pending[:0] = batch  # keep them: written once the store is back
                self._health.write_failed("write results", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                self._needed.set()
                continue
            except BaseException:
                self.pending[:0] = batch
                raise
            delay = FIRST_RETRY_DELAY
            self._health.wrote("write results")
            self.account(batch, applied)

    def account(self, batch: list[Outcome], applied: dict[int, State]) -> None:
        """Count and log each outcome of a written batch (`applied`: the store's answer)."""
        for outcome in batch:
            job = self._job_of(outcome.job_id)
            state = applied.get(outcome.job_id)
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
