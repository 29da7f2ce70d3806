"""The dashboard's live feed: one subscription to the daemon per shim process (jobd.subscriptions),
fanned out to every open browser, and the last hour of it kept for the overview's chart
(added to the daemon's `activity`, read at most once a minute).

    daemon ──subscribe──► Feed thread ──► History (per-minute counts, queue waits)
                                     └──► Stream queue ──► one SSE response per browser tab

A browser costs the daemon nothing per change: the shim reads each change once and copies it
to each stream.  What the browsers then ask the daemon (a fragment of the page they show, at
most once a second or two: static/app.js) is bounded by their number, which is bounded here
(MAX_STREAMS).  A stream whose browser does not keep up (STREAM_BUFFER events waiting) is
ended; its EventSource reconnects and the page reads the current state again.  So does every
page when the feed itself reconnects (a `reset` event): changes are not replayed.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jobd.errors import JobdError
from jobd.subscriptions import JobChange, SubscriptionLost, follow

log = logging.getLogger("jobd.http")

MAX_STREAMS = 64  # event streams (browser tabs) one shim serves at once
MAX_STREAMS_PER_PEER = 16  # … from one address; past either, 503 and the browser retries
STREAM_BUFFER = 500  # events waiting for one stream before it is ended as too slow
RECONNECT_MIN = 0.5
RECONNECT_MAX = 10.0
HOUR = 3600.0
MAX_WAITS = 20_000  # queue waits kept for the last hour's percentiles
#: Seconds between two reads of the daemon's `activity` by one shim, however many browsers.
ACTIVITY_INTERVAL = 60.0

#: What a stream's queue carries: a change, or "reset" (read the page again), or None (end).
Item = JobChange | str | None


@dataclass(eq=False)
class Stream:
    peer: str
    items: queue.Queue[Item] = field(default_factory=lambda: queue.Queue(STREAM_BUFFER))
    ended: bool = False

    def put(self, item: Item) -> None:
        if self.ended:
            return
        try:
            self.items.put_nowait(item)
        except queue.Full:
            self.end()

    def end(self) -> None:
        """Ends the stream at its next read (the queue is emptied to make room for the end)."""
        self.ended = True
        while True:
            try:
                self.items.get_nowait()
            except queue.Empty:
                break
        self.items.put_nowait(None)


class History:
    """The last hour of job changes, per minute: completions, failures, and queue waits.

    The chart's counts come from the daemon's `activity` (the database's finished jobs: the
    same from every shim, whatever its age), read at most once every ACTIVITY_INTERVAL by
    this shim (`due`, then `counted`); the feed's completions and failures since that read
    are added to it, so the chart moves between reads.  From a daemon without `activity` the
    feed's own counts are all there is (since the shim started)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.since = clock()
        self._lock = threading.Lock()
        self._minutes: dict[int, Counter[str]] = {}
        self._waits: deque[tuple[float, str, float]] = deque(maxlen=MAX_WAITS)
        #: The last `activity` read: minute (unix seconds) -> (completed, failed); None: none.
        self._counted: dict[int, tuple[int, int]] | None = None
        self._asked_at: float | None = None  # when a read was last begun (clock)
        self._since_counted: dict[int, Counter[str]] = {}  # the feed's ends since that read

    def due(self) -> bool:
        """Whether the caller should read `activity` now: true at most once every
        ACTIVITY_INTERVAL (the caller that gets true reads; the others use the last read)."""
        now = self.clock()
        with self._lock:
            if self._asked_at is not None and now - self._asked_at < ACTIVITY_INTERVAL:
                return False
            self._asked_at = now
            return True

    def counted(self, minutes: list[dict[str, Any]]) -> None:
        """The daemon's `activity` minutes (ISO minute, completed, failed)."""
        counts = {
            int(datetime.fromisoformat(m["minute"]).timestamp()) // 60: (
                int(m["completed"]),
                int(m["failed"]),
            )
            for m in minutes
        }
        with self._lock:
            self._counted, self._since_counted = counts, {}

    @property
    def from_database(self) -> bool:
        return self._counted is not None

    def record(self, change: JobChange) -> None:
        minute = int(change.at // 60)
        with self._lock:
            if change.event in ("completed", "failed", "retried"):
                self._minutes.setdefault(minute, Counter())[change.event] += 1
                self._since_counted.setdefault(minute, Counter())[change.event] += 1
            if change.queue_wait is not None and change.queue is not None:
                self._waits.append((change.at, change.queue, change.queue_wait))
            self._forget(self.clock())

    def _forget(self, now: float) -> None:
        oldest = int((now - HOUR) // 60)
        for minutes in (self._minutes, self._since_counted):
            for minute in [m for m in minutes if m < oldest]:
                del minutes[minute]
        while self._waits and self._waits[0][0] < now - HOUR:
            self._waits.popleft()

    def per_minute(self) -> list[dict[str, Any]]:
        """Sixty minutes, oldest first: {"minute": unix seconds, "completed": n, "failed": n}."""
        now = self.clock()
        last = int(now // 60)
        with self._lock:
            self._forget(now)
            if self._counted is None:
                return [
                    _minute(m, (0, 0), self._minutes.get(m)) for m in range(last - 59, last + 1)
                ]
            counted = self._counted
            return [
                _minute(m, counted.get(m, (0, 0)), self._since_counted.get(m))
                for m in range(last - 59, last + 1)
            ]

    def queue_waits(self) -> list[dict[str, Any]]:
        """Per queue over the last hour: starts, median, 95th percentile and longest wait."""
        with self._lock:
            self._forget(self.clock())
            by_queue: dict[str, list[float]] = {}
            for _, name, wait in self._waits:
                by_queue.setdefault(name, []).append(wait)
        rows = []
        for name, waits in sorted(by_queue.items()):
            waits.sort()
            p95 = waits[min(len(waits) - 1, int(len(waits) * 0.95))]
            rows.append(
                {
                    "queue": name,
                    "starts": len(waits),
                    "median": statistics.median(waits),
                    "p95": p95,
                    "max": waits[-1],
                }
            )
        return rows


def _minute(minute: int, counted: tuple[int, int], fed: Counter[str] | None) -> dict[str, Any]:
    fed = fed or Counter()
    return {
        "minute": minute * 60,
        "completed": counted[0] + fed["completed"],
        "failed": counted[1] + fed["failed"],
    }


class Feed:
    """The one subscription (a thread, reconnecting) and the streams it feeds."""

    def __init__(
        self,
        socket_path: Path,
        follow: Callable[..., Iterator[JobChange]] = follow,
        max_streams: int = MAX_STREAMS,
        max_per_peer: int = MAX_STREAMS_PER_PEER,
    ) -> None:
        self.socket_path = socket_path
        self.history = History()
        self.connected = False
        self.max_streams = max_streams
        self.max_per_peer = max_per_peer
        self._follow = follow
        self._streams: set[Stream] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="jobd-ui-feed", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """End every stream now; the subscription thread ends with the process."""
        self._stop.set()
        with self._lock:
            streams, self._streams = list(self._streams), set()
        for stream in streams:
            stream.end()

    # --- streams --------------------------------------------------------------------------------

    def open_stream(self, peer: str) -> Stream | None:
        """A new stream, or None past MAX_STREAMS (or MAX_STREAMS_PER_PEER)."""
        self.start()
        with self._lock:
            if self._stop.is_set() or len(self._streams) >= self.max_streams:
                return None
            if sum(s.peer == peer for s in self._streams) >= self.max_per_peer:
                return None
            stream = Stream(peer)
            self._streams.add(stream)
            return stream

    def close_stream(self, stream: Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def _fan_out(self, item: Item) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.put(item)

    # --- the subscription -----------------------------------------------------------------------

    def _subscribed(self) -> None:
        self.connected = True
        log.info("dashboard feed subscribed")

    def _run(self) -> None:
        delay = RECONNECT_MIN
        while not self._stop.is_set():
            try:
                for change in self._follow(self.socket_path, on_ready=self._subscribed):
                    delay = RECONNECT_MIN
                    self.history.record(change)
                    self._fan_out(change)
            except (SubscriptionLost, JobdError, OSError) as exc:
                # Said once per outage, not at every attempt while the daemon is away.
                level = logging.INFO if self.connected else logging.DEBUG
                log.log(level, "dashboard feed lost; subscribing again", extra={"error": str(exc)})
            if self.connected:
                self.connected = False
                self._fan_out("reset")  # pages read the current state again
            self._stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)
