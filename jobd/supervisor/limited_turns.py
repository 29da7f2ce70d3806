"""When a limited queue's own claim is worth its statements (docs/adr/0032).  A queue with a
per-node `concurrency` or a fleet-wide limit is claimed apart, by a statement of its own (a
locking transaction for a fleet-wide limit).  Run every turn for a queue with nothing to
give, they halved the burn-down of the other queues; so a queue is left out of the claims
while

- *drained*: its last claim came back short with nothing held back; until a submit names it
  (or names none: the listener reconnected), the queues' state is read again (a pause or a
  limit announced, or the heartbeat), or a poll interval has passed (jobs due later become
  claimable without a notification: the node's own poll finds them the same way);
- *full*: no room at the last look (this node's concurrency, or the global concurrency);
  until one of its jobs held here has ended and its end is written (the database counts it
  running until then), a submit names it, the queues' state is read again, or a poll
  interval has passed.  Room freed by a job that ends on another node is claimed by that
  node itself, and by this one within a poll interval.

A queue the rate held back is left out until its window opens (jobd.supervisor.fleet_limits).
With every limited queue left out, the node's claim is one statement again, the limited ones
excluded from it as the paused ones are."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from jobd.domain import Job
from jobd.store.queues import LimitedClaim


@dataclass(slots=True)
class _Shut:
    until: float  # monotonic: opens then at the latest
    held: int = 0  # full: its jobs held here then (one fewer opens it); 0: not by a finish


class LimitedTurns:
    def __init__(self, poll_interval: float, room_freed: Callable[[], None]):
        self.poll_interval = poll_interval
        #: Told when a full queue opens because one of its jobs here ended (claim again).
        self.room_freed = room_freed
        self._shut: dict[str, _Shut] = {}

    def left_out(self, now: float, held: Callable[[], Iterable[Job]]) -> frozenset[str]:
        """The queues to leave out of a claim now (`held`: the jobs the node holds, asked for
        only while a full queue has some of them)."""
        if not self._shut:
            return frozenset()
        counts: Counter[str] | None = None
        for queue, shut in list(self._shut.items()):
            if shut.until <= now:
                del self._shut[queue]
            elif shut.held:
                counts = Counter(j.queue for j in held()) if counts is None else counts
                if counts[queue] < shut.held:
                    del self._shut[queue]
                    self.room_freed()
        return frozenset(self._shut)

    def answered(self, queue: str, asked: int, got: int) -> None:
        """A claim of a queue limited on this node asked for `asked` jobs and got `got`."""
        if got < asked:
            self._drained(queue)

    def answered_limited(self, queue: str, asked: int, result: LimitedClaim, held: int) -> None:
        """What a fleet-wide limited claim said (`held`: the queue's jobs held here now, those
        it claimed included).  A rate that bound it closes the queue apart (fleet_limits)."""
        if result.held_back and result.bound == "global_concurrency":
            self.full(queue, held)
        elif not result.held_back and len(result.jobs) < asked:
            self._drained(queue)

    def full(self, queue: str, held: int) -> None:
        """No room for `queue`, `held` of whose jobs the node holds (their ends not yet
        written included)."""
        self._shut[queue] = _Shut(time.monotonic() + self.poll_interval, held)

    def _drained(self, queue: str) -> None:
        self._shut[queue] = _Shut(time.monotonic() + self.poll_interval)

    def named(self, queue: str | None) -> None:
        """A submit named `queue` (None: any queue may have new work)."""
        if queue is None:
            self._shut.clear()
        else:
            self._shut.pop(queue, None)

    def read_again(self) -> None:
        """The queues' state was read again (the heartbeat, a pause or a limit announced)."""
        self._shut.clear()
