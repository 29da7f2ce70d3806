"""jobd: a durable multiprocess job daemon.

The public Python API::

    from jobd import handler, JobContext, PermanentError, RetryLater, Client
"""

from __future__ import annotations

from jobd.domain import PermanentError, RetryLater

__version__ = "0.1.0"

__all__ = ["PermanentError", "RetryLater", "__version__"]
