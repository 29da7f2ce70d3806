"""A handler's progress (`ctx.progress(data)`): the check of what it reports, and the worker's
throttle that lets at most one report per job per second reach the supervisor (ADR 0031).

The throttle sends a report at once when the last one went out a second ago or more;
otherwise it keeps it (a newer one replaces it: the latest value wins) and sends it when the
second is up, from a timer thread, so a handler that reports and then blocks still shows its
latest report.  `flush` sends what is kept at once: the worker calls it when the job ends, so
the last report of a job is never lost, even when the job ends within the same second."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from jobd.limits import MAX_PROGRESS_BYTES, PROGRESS_INTERVAL
from jobd.store.values import json_problem


class ProgressError(ValueError):
    """What a handler passed to `ctx.progress` cannot be stored: not JSON, over
    MAX_PROGRESS_BYTES, or holding text no store can hold."""


def checked_progress(data: Any) -> Any:
    """`data` as plain JSON values (what the database gives back), or ProgressError."""
    try:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProgressError(f"progress: not JSON: {exc}") from None
    problem = json_problem(data, "progress")
    if problem is not None:
        raise ProgressError(f"{problem[0]}: {problem[1]}")
    size = len(encoded.encode())
    if size > MAX_PROGRESS_BYTES:
        raise ProgressError(
            f"progress: {size} bytes of JSON, over the limit of {MAX_PROGRESS_BYTES} bytes"
            " (jobd.limits.MAX_PROGRESS_BYTES): report a small status, return the data as"
            " the result"
        )
    return json.loads(encoded)


class Timer(Protocol):
    def start(self) -> None: ...
    def cancel(self) -> None: ...


#: Makes a timer calling `fn` after `delay` seconds (threading.Timer; tests pass their own).
TimerFactory = Callable[[float, Callable[[], None]], Timer]


def _daemon_timer(delay: float, fn: Callable[[], None]) -> Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    return timer


_NOTHING = object()


class ProgressThrottle:
    """One job's progress reports on their way to `send`: at most one per `interval`."""

    def __init__(
        self,
        send: Callable[[Any], None],
        *,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        timer: TimerFactory = _daemon_timer,
    ):
        self._send = send
        self._interval = interval
        self._clock = clock
        self._timer_factory = timer
        self._lock = threading.Lock()
        self._sent_at: float | None = None
        self._kept: Any = _NOTHING
        self._timer: Timer | None = None

    def report(self, data: Any) -> None:
        with self._lock:
            now = self._clock()
            if self._sent_at is None or now - self._sent_at >= self._interval:
                self._kept = _NOTHING
                self._sent_at = now
                self._send(data)
                return
            self._kept = data
            if self._timer is None:
                self._timer = self._timer_factory(self._sent_at + self._interval - now, self.due)
                self._timer.start()

    def due(self) -> None:
        """The interval is up: send the report kept, if any (the timer's call)."""
        with self._lock:
            self._timer = None
            self._send_kept()

    def flush(self) -> None:
        """Send the report kept now, and stop the timer (the job ended)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._send_kept()

    def _send_kept(self) -> None:
        if self._kept is not _NOTHING:
            data, self._kept = self._kept, _NOTHING
            self._sent_at = self._clock()
            self._send(data)
