"""Claiming and handing out, as the supervisor's loop drives them.

A claim runs as a task of its own, so the loop never awaits the store (ADR 0022); or, when a
write-back is in flight and every worker has work queued, it rides on the write-back's next
write: `Store.finish_and_claim`, one crossing to the I/O thread and one round trip for both
(ADR 0029).  Either way one claim at most is in flight.  A worker with nothing to do does not
wait for a write: its claim goes at once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from jobd.domain import Job, State
from jobd.store import Outcome, Start
from jobd.supervisor.handout import taking_work

if TYPE_CHECKING:
    from jobd.supervisor.loop import Supervisor


class Dispatch:
    def __init__(self, supervisor: Supervisor):
        self._sup = supervisor
        #: The claim in flight, alone (a task) or riding on a write (a future), if any.
        self.claiming: asyncio.Future[None] | None = None

    def claim_in_flight(self) -> bool:
        return self.claiming is not None and not self.claiming.done()

    def turn(self) -> None:
        """Hand out what is claimed, and claim unless a claim is in flight or will ride on the
        write in flight."""
        sup = self._sup
        if sup.draining or sup.boot_error:
            return
        if not self.claim_in_flight() and not self._will_ride():
            self.claiming = asyncio.create_task(sup.guard("claim", self._claim), name="jobd-claim")
        self.hand_out()

    def _will_ride(self) -> bool:
        sup = self._sup
        busy = all(w.assigned for w in taking_work(sup.workers.values()))
        return sup.writeback.writing and busy and sup.claims.may_ride()

    async def _claim(self) -> None:
        wanted = self._wanted()
        jobs = await self._sup.claims.take(wanted, self.held_jobs)
        if jobs is not None:
            self._claimed(wanted, jobs)

    async def write(self, outcomes: list[Outcome], starts: list[Start]) -> dict[int, State]:
        """The write-back's store call, with the claim riding on it if one is due now."""
        sup = self._sup
        may_claim = not (sup.draining or sup.boot_error or self.claim_in_flight())
        wanted = self._wanted() if may_claim and sup.claims.may_ride() else 0
        if not sup.claims.due(wanted):
            try:
                return await sup.store.finish(sup.node, outcomes, starts)
            finally:
                sup.wake()  # a claim left for this write goes alone on the next turn
        claiming = self.claiming = asyncio.get_running_loop().create_future()
        try:
            applied, jobs = await sup.claims.with_write(outcomes, starts, wanted)
        finally:
            if not claiming.done():  # (cancelled if the drain gave up on it)
                claiming.set_result(None)
        if jobs is not None:
            self._claimed(wanted, jobs)
        sup.wake()
        return applied

    def _wanted(self) -> int:
        sup = self._sup
        held = [len(w.assigned) for w in taking_work(sup.workers.values())]
        return sup.pacing.wanted(held, len(sup.claimed))

    def _claimed(self, wanted: int, jobs: list[Job]) -> None:
        sup = self._sup
        sup.claimed.extend(jobs)
        if sup.draining or sup.boot_error:  # the drain began while the claim was out
            sup.handout.release_all()
        else:
            self.hand_out()
            sup.claims.answered(wanted, len(jobs))
        sup.wake()  # the next turn claims again if that is due (the loop did not wait)

    def hand_out(self) -> None:
        self._sup.handout.to(self._sup.workers, self._sup.pacing.depth())

    def held_jobs(self) -> list[Job]:
        """The jobs claimed and not yet accounted: waiting here, handed to a worker, or ended
        with their end not yet written (the database counts them running until then, so a
        limited queue's room is not theirs to take yet)."""
        sup = self._sup
        assigned = (j for w in sup.workers.values() for j in w.assigned.values())
        return [*sup.claimed, *assigned, *sup.writeback.unwritten()]
