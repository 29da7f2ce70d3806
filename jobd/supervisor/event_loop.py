"""The event loops of the daemon's two threads (the supervisor's and the I/O thread): uvloop's
when it is installed (`pip install 'jobd[uvloop]'`), asyncio's own otherwise.

Both threads' loops turn once per worker message, store answer or crossing; uvloop's turn, its
wake-ups from the other thread and its readers cost less of the supervisor's CPU than the
selector loop's (docs/adr/0029).  Nothing else changes: jobd uses only asyncio's API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_factory: Callable[[], asyncio.AbstractEventLoop]
try:
    import uvloop

    _factory, KIND = uvloop.new_event_loop, "uvloop"
except ImportError:  # pragma: no cover - the optional dependency is absent
    _factory, KIND = asyncio.new_event_loop, "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's if it is installed (`KIND` says which; the start-up log too)."""
    return _factory()
