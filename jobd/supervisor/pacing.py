"""How much to claim and how much to queue in each worker: pure arithmetic on moving averages
of how long a claim takes and how long a job runs (ADR 0018, ADR 0020; the bounds: ADR 0029)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from jobd.limits import CLAIM_AHEAD_PER_WORKER, QUEUE_AHEAD_PER_WORKER


def ewma(average: float, sample: float, weight: float = 0.2) -> float:
    """An exponentially weighted moving average; the first sample starts it."""
    return sample if average == 0 else average + weight * (sample - average)


@dataclass
class Pacing:
    prefetch: int = 0  # workers.prefetch
    backlog: bool = False  # the last claim got all it asked for: more is waiting
    claim_time: float = 0.0  # claim round trip (moving average), seconds
    run_time: float = 0.0  # how long jobs run (moving average), seconds

    def claim_took(self, seconds: float) -> None:
        self.claim_time = ewma(self.claim_time, seconds)

    def job_ran(self, seconds: float) -> None:
        self.run_time = ewma(self.run_time, seconds)

    def depth(self) -> int:
        """How many jobs a worker may hold: the one it runs plus `workers.prefetch`, and for
        short jobs with a backlog waiting, as many more as it finishes in two claim round
        trips (at most QUEUE_AHEAD_PER_WORKER).  A worker that holds its next jobs goes on
        without waiting for the supervisor's loop to turn, and every turn spent on a claim, a
        write or a client is otherwise a wait for every worker (measured: no-op jobs ran 40%
        faster).  Long jobs get only the prefetch: a job queued behind one would wait for it
        while another worker may be free."""
        depth = 1 + self.prefetch
        if not self.backlog or self.run_time <= 0:
            return depth
        ahead = int(2 * self.claim_time / self.run_time)
        return max(depth, 1 + min(ahead, QUEUE_AHEAD_PER_WORKER))

    def claim_ahead(self, workers: int) -> int:
        """Jobs worth holding claimed beyond the free slots of `workers` workers: as many as
        they finish in two claim round trips, when jobs are short and a backlog is waiting;
        none for long jobs (they would wait here while another node could run them) or
        without a backlog."""
        if not self.backlog or self.run_time <= 0:
            return 0
        ahead = workers * 2 * self.claim_time / self.run_time
        return min(int(ahead), workers * CLAIM_AHEAD_PER_WORKER)

    def wanted(self, held: Iterable[int], claimed: int) -> int:
        """How many jobs to claim now, given the jobs each worker taking work holds and the
        jobs claimed and waiting: the free slots in the workers, plus what the workers will
        have started by the time the next claim comes back, less what already waits."""
        depth = self.depth()
        held = list(held)
        free = sum(depth - n for n in held)
        return max(free + self.claim_ahead(len(held)) - claimed, 0)
