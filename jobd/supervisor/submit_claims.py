"""A claim sent with a submit, when this node has room for work (docs/adr/0042).

On an idle node a submitted job used to wait for three things in a row: the submit's round trip,
a hop to the supervisor's loop when it heard of the job, and the claim's round trip.  When the
supervisor would claim at once anyway (room in a worker, nothing claimed and waiting, no claim
in flight), the control server sends that claim with the submit, in the same round trip and
transaction (Store.submit_claiming), and posts what it took to the supervisor, which hands it
out as a claim's.

The conditions are read on the control server's thread, each a single read of the supervisor's
state that may be a moment old.  A stale read costs little: a claim taken while the supervisor's
own claim was starting makes two claims of the few jobs an idle node wants, and jobs claimed
for a worker that has just become busy wait here, held and leased, for the next free slot.
Queues with limits are left to the supervisor's own claims, which count them."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobd.domain import NewJob
from jobd.store import ClaimRequest, Store, Submitted, SubmittedAndClaimed

if TYPE_CHECKING:
    from jobd.supervisor.loop import Supervisor


class SubmitClaims:
    def __init__(self, supervisor: Supervisor, post: Callable[[Callable[[], object]], None]):
        self._sup = supervisor
        self._post = post  # runs a function on the supervisor's loop, not waiting for it

    async def submit(
        self, store: Store, spec: NewJob, stored: Callable[[Submitted], None]
    ) -> Submitted:
        """`store.submit(spec)`, with this node's claim when one is due; `stored` is told of
        the store's answer before the claim is posted.  It posts the job's `submitted` event
        to the same loop, so a subscriber hears of the submit before the job's start: posted
        after the claim, it could come after the worker's report that the job had started."""
        claim = self.request(spec)
        if claim is None:
            answer = SubmittedAndClaimed(await store.submit(spec), [])
        else:
            answer = await store.submit_claiming(spec, claim)
        stored(answer.submitted)
        if answer.claimed:
            self._post(lambda: self._sup.dispatch.took(answer.claimed))
        return answer.submitted

    def request(self, spec: NewJob) -> ClaimRequest | None:
        """The claim to send with `spec`'s submit: as many jobs as the supervisor's claim would
        ask for now, of the types this node runs, none of a paused queue; None when the
        supervisor would not claim now (no room in its workers, something claimed and waiting,
        a claim in flight, a drain, claims paused after store errors), when its set of paused
        queues is due to be read again, or when queues have limits."""
        sup = self._sup
        if spec.idempotency_key is not None or spec.after or _later(spec.run_at):
            return None
        if sup.draining or sup.boot_error or sup.claimed or sup.dispatch.claim_in_flight():
            return None
        claims, now = sup.claims, time.monotonic()
        if sup.settings.queue_limits or claims.limits.limits or not sup.health.may_claim(now):
            return None
        if claims.paused.due(now):  # to be read again: the supervisor's claim reads it first
            return None
        paused, wanted = claims.paused.names, sup.dispatch.wanted()
        if spec.queue in paused or wanted <= 0:
            return None
        return ClaimRequest(
            sup.node,
            wanted,
            sup.settings.lease_seconds,
            types=sup.registry.types(),
            exclude_queues=sorted(paused) or None,
        )


def _later(run_at: datetime | None) -> bool:
    return run_at is not None and run_at > datetime.now(UTC)
