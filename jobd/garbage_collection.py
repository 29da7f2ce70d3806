"""The garbage collector in jobd's long-running processes, the supervisor and its workers
(docs/adr/0046).

CPython's collector walks its oldest generation, every object tracked since the start, once
enough objects have survived the younger ones: in the supervisor that is everything imported
and configured at start, a walk of 20-37 ms that stopped the supervision loop twice in each
20,000-job drain while the workers waited for their next claim.  And it walks the youngest
generation after every 700 net allocations, which a claim of a few hundred jobs passes each
time, each walk over the jobs still in flight.  So, once a process has started:

- what exists then is frozen (`gc.freeze`): the collector never walks it again.  Those are
  modules, classes and settings that live as long as the process does;
- the youngest generation is collected after YOUNG_THRESHOLD net allocations.  Cycles made
  afterwards are still collected, only later; most objects are freed by their reference
  count and never wait for the collector at all.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

#: Net allocations of tracked objects between two collections of the youngest generation
#: (CPython's default is 700); the older generations' thresholds are left as they are.
YOUNG_THRESHOLD = 10_000


def settle(*, collect_first: bool) -> None:
    """Freeze every object that exists now and collect the young generation less often.

    `collect_first`: collect everything before freezing, so that no garbage made during the
    start is kept for ever (the supervisor).  A worker does not: a collection would write to
    every object it shares with the fork server, and the pages it shares would be copied."""
    if collect_first:
        gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
    extra = {"frozen": gc.get_freeze_count(), "young_threshold": YOUNG_THRESHOLD}
    log.debug("garbage collector settled", extra=extra)
