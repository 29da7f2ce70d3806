"""What a handler is given about the job it runs: `fn(ctx, payload)`."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from jobd.progress import checked_progress


def job_log_fields(
    job_id: int, job_type: str, attempt: int, queue: str, correlation_id: str | None
) -> dict[str, Any]:
    """The fields every log line about a job carries, in the supervisor and in its worker."""
    return {
        "job_id": job_id,
        "job_type": job_type,
        "attempt": attempt,
        "queue": queue,
        "correlation_id": correlation_id,
    }


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds the job's fields to every record and keeps the caller's `extra=`
    fields too (the standard adapter replaces them: `merge_extra` exists only from 3.13)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class ParentResultsUnavailable(Exception):
    """`ctx.parent_results()` could not be answered (the store did not answer in time): the
    attempt fails as any exception does, and is retried while attempts are left."""


class JobCancelled(Exception):
    """Raised by `ctx.check_cancelled()` (and `ctx.sleep`) once the job must stop: it was
    cancelled, it ran past its timeout, or its node is shutting down.  Let it propagate."""


@dataclass
class JobContext:
    job_id: int
    type: str
    attempt: int
    max_attempts: int
    queue: str
    correlation_id: str | None
    timeout: float | None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _report_progress: Callable[[Any], None] = field(default=lambda _: None, repr=False)
    _parent_results: Callable[[], dict[int, Any]] = field(default=dict, repr=False)

    @functools.cached_property
    def logger(self) -> JobLogger:
        """`logging.getLogger(f"jobd.job.{type}")` with the job's fields on every record; made
        when first used (most handlers never log, and a context is made for every job)."""
        return JobLogger(logging.getLogger(f"jobd.job.{self.type}"), self.log_fields())

    def log_fields(self) -> dict[str, Any]:
        """The fields of every log line about this job."""
        return job_log_fields(self.job_id, self.type, self.attempt, self.queue, self.correlation_id)

    @property
    def cancelled(self) -> bool:
        """True once the job should stop (cancel, timeout or shutdown)."""
        return self._stop.is_set()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job should stop: call it between units of work."""
        if self._stop.is_set():
            raise JobCancelled(f"job {self.job_id} was asked to stop")

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise JobCancelled as soon as the job should stop."""
        if self._stop.wait(max(seconds, 0.0)):
            self.check_cancelled()

    def parent_results(self) -> dict[int, Any]:
        """The results of the jobs this one was submitted `after`, by job id (None for a
        parent that did not complete: a job with on_parent_failure "run").  Read from the
        store when asked, through the supervisor (workers never touch the database): one
        round trip, so ask once and keep the answer.  Raises JobCancelled if the job is asked
        to stop meanwhile, ParentResultsUnavailable if the store does not answer."""
        return self._parent_results()

    def progress(self, data: Any) -> None:
        """Report the job's progress: a small JSON value, by convention
        `{"current": 3, "total": 10, "message": "resizing"}`.  The latest report is stored as
        the job's `progress` (at most one a second reaches the database; the last one always
        does) and shown by `jobctl status`, HTTP and the protocol.  Raises ProgressError
        (a ValueError) if `data` is not JSON or is over MAX_PROGRESS_BYTES (4 KiB)."""
        self._report_progress(checked_progress(data))
