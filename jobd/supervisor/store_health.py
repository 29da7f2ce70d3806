"""Whether the store answers: logged once when it stops and once when it is back, a pause of
the claims while it is away, and a grace before taking other nodes' jobs once it is back."""

from __future__ import annotations

import logging
import time

from jobd.errors import JobdError

log = logging.getLogger("jobd.supervisor")

#: Seconds without a claim after the store failed to answer one of our calls.
CLAIM_PAUSE = 1.0


class StoreHealth:
    def __init__(self, heartbeat_seconds: float):
        self.heartbeat_seconds = heartbeat_seconds
        self.ok = True
        self._claims_paused_until = 0.0
        self._recover_after = 0.0  # no recovery of others' leases before (see fine)

    def trouble(self, what: str, exc: JobdError) -> None:
        """A call to the store (`what`) failed with `exc`."""
        if self.ok:
            log.error("store unavailable", extra={"operation": what, "error": str(exc)})
        self.ok = False
        self._claims_paused_until = time.monotonic() + CLAIM_PAUSE

    def fine(self) -> None:
        """A call to the store succeeded."""
        if not self.ok:
            log.info("store available again")
            # Every node lost the database too, perhaps, and their leases ran out meanwhile:
            # give them a heartbeat or two to renew before taking their jobs as dead ones.
            self._recover_after = time.monotonic() + 2 * self.heartbeat_seconds
        self.ok = True

    def may_claim(self, now: float) -> bool:
        return now >= self._claims_paused_until

    def may_recover(self, now: float) -> bool:
        return now >= self._recover_after
