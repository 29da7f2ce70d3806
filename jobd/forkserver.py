"""Imported by the fork server alone, first in its preload list: gives it a process group of
its own, and quiets runpy about the main module it preloads.

Tools such as `timeout` signal a whole process group.  A SIGTERM that reaches the fork server
kills it, and every worker's sentinel (which the fork server feeds) then reports a death that
did not happen.  Out of the supervisor's group, only the supervisor decides its fate: it exits
by itself once the supervisor is gone.  (The parent cannot do this for it: setpgid() on a child
fails once the child has exec'd, and the fork server is exec'd at once.)

The fork server also preloads the daemon's main module (jobd.workers._main_module), so each
worker inherits the daemon's imports; multiprocessing then re-runs that module in the worker
by name, and runpy warns on stderr that it was already imported.  That is exactly what was
intended, and a worker's stderr must carry only log records (JSON lines by default), so the
warning is filtered here, before any worker is forked.
"""

from __future__ import annotations

import contextlib
import os
import warnings

with contextlib.suppress(OSError):
    os.setpgid(0, 0)

warnings.filterwarnings(
    "ignore", message=r".* found in sys\.modules after import of package", category=RuntimeWarning
)
