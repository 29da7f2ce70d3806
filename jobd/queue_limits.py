"""Fleet-wide queue limits (docs/adr/0032-fleet-wide-queue-limits.md): at most N jobs of a
queue running across all nodes (`global_concurrency`) and at most N starts of it per second
or per minute across all nodes (`rate`, a fixed window).  Pure: the configuration parses
them, the protocol checks them, every store decides a limited claim's room with `room`.

A claim counts as a start: a claimed job holds a slot of the global concurrency from its
claim until its attempt ends (or its lease expires), and the rate counts claims."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: The periods a rate may have, by the letter that writes them.
PERIODS = {"s": 1.0, "m": 60.0}
#: The form a rate is written in, for error messages.
RATE_FORM = "N/s or N/m with N a whole number of at least 1, e.g. 10/s or 600/m"
#: The largest N of a limit (fits a 32-bit integer column in every store).
MAX_LIMIT = 2**31 - 1

_RATE = re.compile(r"\s*(\d+)\s*/\s*([a-z]+)\s*")


class LimitError(ValueError):
    """A limit that is not of its form; the message says what the form is."""


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` starts in each window of `period` seconds (1 or 60)."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: object) -> Rate:
        """`10/s` or `600/m`; LimitError names the expected form."""
        if not isinstance(text, str):
            raise LimitError(f"must be a rate written {RATE_FORM}")
        m = _RATE.fullmatch(text.lower())
        if m is None or m.group(2) not in PERIODS:
            raise LimitError(f"must be written {RATE_FORM}")
        count = int(m.group(1))
        if not 1 <= count <= MAX_LIMIT:
            raise LimitError(f"must be written {RATE_FORM} (N from 1 to {MAX_LIMIT})")
        return cls(count, PERIODS[m.group(2)])

    def __str__(self) -> str:
        unit = next(u for u, p in PERIODS.items() if p == self.period)
        return f"{self.count}/{unit}"


def concurrency(value: object) -> int:
    """A global concurrency: a whole number of at least 1 (LimitError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError("must be a whole number of at least 1")
    if not 1 <= value <= MAX_LIMIT:
        raise LimitError(f"must be from 1 to {MAX_LIMIT}")
    return value


@dataclass(frozen=True, slots=True)
class FleetLimits:
    """A queue's fleet-wide limits (None: not limited that way)."""

    global_concurrency: int | None = None
    rate: Rate | None = None

    def __bool__(self) -> bool:
        return self.global_concurrency is not None or self.rate is not None

    def over(self, runtime: FleetLimits) -> FleetLimits:
        """These (a node's file values) with each runtime value set in `runtime` instead."""
        return FleetLimits(
            runtime.global_concurrency
            if runtime.global_concurrency is not None
            else self.global_concurrency,
            runtime.rate if runtime.rate is not None else self.rate,
        )


@dataclass(frozen=True, slots=True)
class Window:
    """A rate's current window as stored with the queue: when it began (epoch seconds, a
    multiple of the period; None: never) and how many claims it has counted."""

    start: float | None = None
    starts: int = 0


@dataclass(frozen=True, slots=True)
class Room:
    """What a limited claim may take: `room` jobs; the window to store afterwards (add the
    jobs taken to `window.starts`); `opens_in`: seconds until the rate's next window, when the
    rate is what bounds the room (the node looks again then), else None."""

    room: int
    window: Window
    opens_in: float | None = None

    def taken(self, n: int) -> Window:
        """The window to store once `n` jobs were claimed."""
        return Window(self.window.start, self.window.starts + n)


def room(wanted: int, running: int, limits: FleetLimits, window: Window, now: float) -> Room:
    """How many of `wanted` jobs a claim may take now (`now`: the store's clock, epoch
    seconds) with `running` of the queue's jobs running across the fleet.  Fixed windows
    aligned on the epoch, the same on every node: a window never counts more than the rate's
    N starts (docs/adr/0032)."""
    take = max(wanted, 0)
    if limits.global_concurrency is not None:
        take = min(take, max(limits.global_concurrency - running, 0))
    if limits.rate is None:
        return Room(take, window)
    period = limits.rate.period
    start = math.floor(now / period) * period
    counted = window.starts if window.start == start else 0
    left = max(limits.rate.count - counted, 0)
    opens_in = None
    if left < take or (left == 0 and wanted > 0):
        opens_in = max(start + period - now, 0.0)
    return Room(min(take, left), Window(start, counted), opens_in)
