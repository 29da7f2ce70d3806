"""Helpers for testing handlers: call a handler function directly, with no daemon and no
database, given a `JobContext` made here::

    from jobd.testing import make_context

    def test_delivers():
        assert myapp.jobs.post_webhook(make_context(timeout=5.0), {"url": ...}) == {...}

`stop` is the event that cancels the job (set it, and `ctx.check_cancelled()` raises
`JobCancelled`); `on_progress` receives what the handler reports with `ctx.progress`
(checked as in a worker: JSON, at most 4 KiB).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from jobd.context import JobContext


def make_context(
    *,
    job_id: int = 1,
    type: str = "test",
    attempt: int = 1,
    max_attempts: int = 3,
    queue: str = "default",
    correlation_id: str | None = None,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[Any], None] | None = None,
    parent_results: dict[int, Any] | None = None,
) -> JobContext:
    """A `JobContext` as a worker would give a handler.  Built by keyword, so it does not
    depend on the order of JobContext's fields."""
    return JobContext(
        job_id=job_id,
        type=type,
        attempt=attempt,
        max_attempts=max_attempts,
        queue=queue,
        correlation_id=correlation_id,
        timeout=timeout,
        _stop=stop if stop is not None else threading.Event(),
        _report_progress=on_progress if on_progress is not None else _ignore,
        _parent_results=lambda: dict(parent_results or {}),
    )


def _ignore(progress: Any) -> None:
    """Progress nobody listens to."""
