"""Whether the store answers: logged once when it stops and once when it is back, a pause of
the claims while it is away, a grace before taking other nodes' jobs once it is back, and the
age of the last round trip that came back, which is what `health` reports: known at once,
without waiting for a call to a store that may hang (docs/adr/0022)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from jobd.errors import JobdError

log = logging.getLogger("jobd.supervisor")

#: Seconds without a claim after the store failed to answer one of our calls.
CLAIM_PAUSE = 1.0
#: The store is pinged when nothing else has come back from it for this long...
PROBE_INTERVAL = 1.0
#: ... and it counts as unavailable when nothing has come back for this long (a ping's round
#: trip is milliseconds: three probe intervals leave room for a busy pool).
SILENCE_LIMIT = 3.0


class StoreHealth:
    def __init__(self, heartbeat_seconds: float):
        self.heartbeat_seconds = heartbeat_seconds
        self.ok = True
        self._claims_paused_until = 0.0
        self._recover_after = 0.0  # no recovery of others' leases before (see fine)
        self._answered_at = time.monotonic()
        #: The last error of each kind of write that is failing now: replaced whole, never
        #: changed in place, so the control server's thread reads a consistent one.
        self._failing_writes: dict[str, str] = {}

    def trouble(self, what: str, exc: JobdError) -> None:
        """A call to the store (`what`) failed with `exc`."""
        if self.ok:
            log.error("store unavailable", extra={"operation": what, "error": str(exc)})
        self.ok = False
        self._claims_paused_until = time.monotonic() + CLAIM_PAUSE

    def fine(self) -> None:
        """A call to the store succeeded."""
        self.answered()
        if not self.ok:
            log.info("store available again")
            # Every node lost the database too, perhaps, and their leases ran out meanwhile:
            # give them a heartbeat or two to renew before taking their jobs as dead ones.
            self._recover_after = time.monotonic() + 2 * self.heartbeat_seconds
        self.ok = True

    def write_failed(self, what: str, exc: JobdError) -> None:
        """A write (`what`) failed: a database that answers pings but refuses writes (a full
        disk, a read-only database) is not healthy, and pings alone would say it is."""
        self.trouble(what, exc)
        self._failing_writes = {**self._failing_writes, what: str(exc)}

    def wrote(self, what: str) -> None:
        """A write (`what`) succeeded."""
        self.fine()
        if what in self._failing_writes:
            self._failing_writes = {k: v for k, v in self._failing_writes.items() if k != what}

    def failing_writes(self) -> list[str]:
        """Each kind of write failing now, with its last error (safe from another thread)."""
        return [f"{what}: {error}" for what, error in self._failing_writes.items()]

    def answered(self) -> None:
        """A round trip to the store came back (whatever its answer)."""
        self._answered_at = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since the last round trip to the store came back."""
        return time.monotonic() - self._answered_at

    def heard(self) -> bool:
        """A round trip came back within SILENCE_LIMIT."""
        return self.silent_for() < SILENCE_LIMIT

    def answering(self) -> bool:
        """The last call did not fail and a round trip came back recently.  A plain read of
        two fields: safe from the control server's thread."""
        return self.ok and self.heard()

    def may_claim(self, now: float) -> bool:
        return now >= self._claims_paused_until

    def may_recover(self, now: float) -> bool:
        return now >= self._recover_after


async def settled(
    task: asyncio.Future[Any] | None, health: StoreHealth, give_up_at: float = math.inf
) -> bool:
    """Let `task` (a store call, or the writer) finish while the store answers and before
    `give_up_at`; past either, cancel it.  True if it finished without an error."""
    if task is None:
        return True
    while not task.done() and health.heard() and time.monotonic() < give_up_at:
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    return not task.cancelled() and task.exception() is None
