"""What a running handler asks of the store through its supervisor (workers never touch the
database): `ctx.parent_results()`.  Each question is answered by a task of its own, the store
reached through the supervisor's store proxy under its deadline, so a slow store holds up the
asking handler only, never the supervision loop."""

from __future__ import annotations

import asyncio
import logging

from jobd.errors import JobdError
from jobd.pipe import ParentResults
from jobd.store import Store
from jobd.workers import WorkerProcess

log = logging.getLogger("jobd.supervisor")


class Asks:
    def __init__(self, store: Store):
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()

    def parent_results(self, w: WorkerProcess, job_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(w, job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, w: WorkerProcess, job_id: int) -> None:
        try:
            results = await self._store.parent_results(job_id)
        except JobdError as exc:
            log.warning(
                "parent results unavailable", extra={"job_id": job_id, "error": exc.message}
            )
            w.send(ParentResults(job_id, {}, exc.message))
            return
        w.send(ParentResults(job_id, results))
