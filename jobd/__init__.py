"""jobd: a durable multiprocess job daemon.

The public Python API::

    from jobd import handler, JobContext, PermanentError, RetryLater, Client

    jobd.schedule("nightly", cron="0 2 * * *", type="generate_report", payload={...})

    jobd.enqueue(conn, "send_email", {...})   # in the application's own transaction
"""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0"

from jobd.client import Client  # after __version__, which jobd modules read
from jobd.context import JobCancelled, JobContext
from jobd.domain import PermanentError, RetryLater
from jobd.enqueue import aenqueue, enqueue
from jobd.handlers import handler

__all__ = [
    "Client",
    "JobCancelled",
    "JobContext",
    "PermanentError",
    "RetryLater",
    "__version__",
    "aenqueue",
    "enqueue",
    "handler",
    "schedule",
]


def __getattr__(name: str) -> Any:
    # `jobd.schedule` brings the cron parser in only for a module that declares a schedule: a
    # client (jobctl, an application submitting jobs) needs none of it.
    if name == "schedule":
        from jobd.schedules.registry import schedule

        return schedule
    raise AttributeError(f"module 'jobd' has no attribute {name!r}")
