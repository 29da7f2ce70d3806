"""Imported by the fork server alone, first in its preload list: gives it a process group of
its own.

Tools such as `timeout` signal a whole process group.  A SIGTERM that reaches the fork server
kills it, and every worker's sentinel (which the fork server feeds) then reports a death that
did not happen.  Out of the supervisor's group, only the supervisor decides its fate: it exits
by itself once the supervisor is gone.  (The parent cannot do this for it: setpgid() on a child
fails once the child has exec'd, and the fork server is exec'd at once.)
"""

from __future__ import annotations

import contextlib
import os

with contextlib.suppress(OSError):
    os.setpgid(0, 0)
