"""A worker that cannot be started for a shortage (descriptors, processes, memory) is tried
again after a growing pause, and the daemon goes on; any other failure is raised."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest

from jobd.metrics import Metrics
from jobd.supervisor.respawn import FIRST_PAUSE, LONGEST_PAUSE, RespawnBackoff
from jobd.supervisor.worker_pool import WorkerPool


class FailingFactory:
    def __init__(self, error: int) -> None:
        self.error = error
        self.tries = 0

    def spawn(self, index: int) -> Any:
        self.tries += 1
        raise OSError(self.error, "no")


def pool_of(factory: FailingFactory) -> WorkerPool:
    return WorkerPool(factory, Metrics(), lambda w: None, lambda w: None)  # type: ignore[arg-type]


def test_the_pause_doubles_up_to_its_longest_and_starts_over_after_a_start() -> None:
    backoff = RespawnBackoff()
    pauses = [backoff.failed(100.0) for _ in range(12)]
    assert pauses[0] == FIRST_PAUSE and pauses[1] == 2 * FIRST_PAUSE
    assert max(pauses) == LONGEST_PAUSE == pauses[-1]
    assert not backoff.due(100.0) and backoff.due(100.0 + LONGEST_PAUSE)
    assert backoff.succeeded() == 12
    assert backoff.due(0.0) and backoff.failed(0.0) == FIRST_PAUSE


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM])
def test_a_shortage_is_logged_and_tried_again_later_not_raised(
    error: int, caplog: pytest.LogCaptureFixture
) -> None:
    factory = FailingFactory(error)
    pool = pool_of(factory)
    with caplog.at_level(logging.ERROR):
        pool.keep(2)  # the first start fails: the rest wait for the pause
        pool.keep(2)  # within the pause: nothing is tried
    assert factory.tries == 1 and pool.workers == {}
    assert [r.getMessage() for r in caplog.records] == ["cannot start a worker; trying again"]
    assert not pool.respawn.due(0.0)


def test_any_other_failure_to_start_a_worker_is_raised() -> None:
    pool = pool_of(FailingFactory(errno.EACCES))
    with pytest.raises(PermissionError):
        pool.keep(1)
