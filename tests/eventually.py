"""Waiting for a condition with a deadline: how tests synchronise with a daemon, a store or a
thread -- on the event itself, never on a fixed sleep.

    job = wait_for(lambda: finished(client, job_id), what="the job to finish")
    job = await eventually(lambda: store.get(job_id), timeout=5)

Each polls `check` until it returns something truthy and returns that; past `timeout` seconds
it fails the test (AssertionError).  `eventually` is for event loops: its check may be a plain
function or a coroutine function, and it yields to the loop between polls.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT = 20.0
POLL = 0.02  # seconds between two looks: quick to notice, cheap on two shared CPUs


class Deadline:
    """`timeout` seconds from now; `check` fails the test once it has passed."""

    def __init__(self, timeout: float, what: str):
        self.timeout = timeout
        self.what = what
        self._at = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self._at:
            raise AssertionError(f"timed out after {self.timeout}s waiting for {self.what}")


def wait_for(
    check: Callable[[], T], timeout: float = TIMEOUT, what: str = "condition", poll: float = POLL
) -> T:
    """Block until `check()` is truthy; return it."""
    deadline = Deadline(timeout, what)
    while not (value := check()):
        deadline.check()
        time.sleep(poll)
    return value


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    timeout: float = TIMEOUT,
    what: str = "condition",
    poll: float = POLL,
) -> T:
    """Await until `check()` (awaited if it returns an awaitable) is truthy; return it."""
    deadline = Deadline(timeout, what)
    while not (value := await _value(check())):
        deadline.check()
        await asyncio.sleep(poll)
    return value


async def _value(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result
