"""Claiming and handing out, as the supervisor's loop drives them.

A claim runs as a task of its own, so the loop never awaits the store (ADR 0022), beside the
write-back in flight: on PostgreSQL a claim alone does not wait for the WAL flush, and the two
overlap (ADR 0039).  One claim at most is in flight."""

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
        #: The claim in flight, if any.
        self.claiming: asyncio.Future[None] | None = None

    def claim_in_flight(self) -> bool:
        return self.claiming is not None and not self.claiming.done()

    def turn(self) -> None:
        """Hand out what is claimed, and claim unless a claim is in flight."""
        sup = self._sup
        if sup.draining or sup.boot_error:
            return
        if not self.claim_in_flight():
            self.claiming = asyncio.create_task(sup.guard("claim", self._claim), name="jobd-claim")
        self.hand_out()

    async def _claim(self) -> None:
        wanted = self.wanted()
        jobs = await self._sup.claims.take(wanted, self.held_jobs)
        if jobs is not None:
            self._claimed(wanted, jobs)

    async def write(self, outcomes: list[Outcome], starts: list[Start]) -> dict[int, State]:
        """The write-back's store call; the loop turns once it is back."""
        sup = self._sup
        try:
            return await sup.store.finish(sup.node, outcomes, starts)
        finally:
            sup.wake()

    def wanted(self) -> int:
        """How many jobs a claim now asks for (jobd.supervisor.pacing)."""
        sup = self._sup
        held = [len(w.assigned) for w in taking_work(sup.workers.values())]
        return sup.pacing.wanted(held, len(sup.claimed))

    def _claimed(self, wanted: int, jobs: list[Job]) -> None:
        self.took(jobs)
        sup = self._sup
        if not (sup.draining or sup.boot_error):  # handed out, by the depth it was asked for
            sup.claims.answered(wanted, len(jobs))

    def took(self, jobs: list[Job]) -> None:
        """Jobs claimed for this node, by its claim or with a submit
        (jobd.supervisor.submit_claims): handed out, or given back if the drain began while
        the claim was out."""
        sup = self._sup
        sup.claimed.extend(jobs)
        if sup.draining or sup.boot_error:
            sup.handout.release_all()
        else:
            self.hand_out()
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
