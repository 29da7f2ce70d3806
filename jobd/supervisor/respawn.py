"""When to try again to start a worker that could not be started: a fork that fails for lack of
file descriptors, processes or memory is a passing shortage, not a reason to end the daemon
(its running workers and their jobs are fine), so the supervisor retries with a growing pause
and says so once per pause rather than once per attempt."""

from __future__ import annotations

import errno

#: The errors of a shortage that may pass: descriptors (per process, system-wide), processes,
#: memory.  Anything else is a bug or a broken installation and is raised.
SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0


def is_shortage(exc: OSError) -> bool:
    return exc.errno in SHORTAGES


class RespawnBackoff:
    """The next moment a failed worker start may be tried again, doubling each failure."""

    def __init__(self) -> None:
        self.pause = 0.0
        self.retry_at = 0.0
        self.failures = 0

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    def failed(self, now: float) -> float:
        """Note a failure at `now`; the pause until the next try."""
        self.failures += 1
        self.pause = min(LONGEST_PAUSE, self.pause * 2 if self.pause else FIRST_PAUSE)
        self.retry_at = now + self.pause
        return self.pause

    def succeeded(self) -> int:
        """A worker started: the pause starts over.  How many tries had failed before it."""
        failures, self.failures, self.pause, self.retry_at = self.failures, 0, 0.0, 0.0
        return failures
