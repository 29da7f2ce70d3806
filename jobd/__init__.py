"""jobd: a durable multiprocess job daemon.

The public Python API::

    from jobd import handler, JobContext, PermanentError, RetryLater, Client

    jobd.schedule("nightly", cron="0 2 * * *", type="generate_report", payload={...})

    jobd.enqueue(conn, "send_email", {...})   # in the application's own transaction
"""

from __future__ import annotations

__version__ = "0.1.0"

from jobd.client import Client  # after __version__, which jobd modules read
from jobd.context import JobCancelled, JobContext
from jobd.domain import PermanentError, RetryLater
from jobd.enqueue import aenqueue, enqueue
from jobd.handlers import handler
from jobd.schedules.registry import schedule

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
