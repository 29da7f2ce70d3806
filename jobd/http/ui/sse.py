"""The event stream a dashboard page listens to: `GET /ui/events`, server-sent events.

The one response of the shim with no deadline, so it has rules of its own:

- it is counted: at most MAX_STREAMS open (MAX_STREAMS_PER_PEER per address), past which it is
  a 503 the browser's EventSource retries by itself (`retry:` below);
- every write must be taken within WRITE_TIMEOUT, or the stream ends: a browser that stops
  reading holds a thread and a socket for that long at most;
- a heartbeat (a comment line) goes out after HEARTBEAT seconds of silence, which is how a
  stream to a browser that has gone away is noticed (the write fails) and what keeps proxies
  from closing an idle stream;
- it ends when the shim stops (Feed.close), when its browser falls STREAM_BUFFER events
  behind, and after MAX_AGE, so no stream outlives a token removed from the configuration by
  long: the browser reconnects, and is authenticated again.

Each event is one line of JSON: `event: job` with the change (id, state, type, queue, event),
`event: reset` when the feed to the daemon was lost and found again (read the page again).
"""

from __future__ import annotations

import json
import queue
import socket
import time
from typing import Any, Protocol

from jobd.http.ui.feed import Feed, Stream
from jobd.subscriptions import JobChange

HEARTBEAT = 15.0
WRITE_TIMEOUT = 10.0
MAX_AGE = 3600.0
RETRY_MS = 3000  # how long the browser waits before reconnecting


class StreamingHandler(Protocol):
    """What the stream needs of the shim's request handler (jobd.http.server.Handler)."""

    connection: socket.socket
    wfile: Any
    close_connection: bool
    request_id: str | None

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...


def encode_event(item: JobChange | str) -> bytes:
    if isinstance(item, JobChange):
        data = {k: v for k, v in item.to_params().items() if k != "queue_wait"}
        return f"event: job\ndata: {json.dumps(data)}\n\n".encode()
    return f"event: {item}\ndata: {{}}\n\n".encode()


class EventStream:
    """An accepted stream, served by the request's own thread (`serve`)."""

    def __init__(self, feed: Feed, stream: Stream, headers: dict[str, str]):
        self.feed = feed
        self.stream = stream
        self.headers = headers

    def serve(self, handler: StreamingHandler) -> None:
        handler.close_connection = True  # the stream is the connection's last response
        try:
            handler.connection.settimeout(WRITE_TIMEOUT)
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
            handler.send_header("Cache-Control", "no-store")
            handler.send_header("Connection", "close")
            handler.send_header("X-Accel-Buffering", "no")  # nginx: pass events on at once
            if handler.request_id is not None:
                handler.send_header("X-Request-ID", handler.request_id)
            for name, value in self.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(f"retry: {RETRY_MS}\n\n".encode())
            handler.wfile.flush()
            self._pump(handler)
        except (OSError, TimeoutError):
            pass  # the browser went away, or stopped reading: the stream is over
        finally:
            self.feed.close_stream(self.stream)

    def _pump(self, handler: StreamingHandler) -> None:
        ends = time.monotonic() + MAX_AGE
        while (left := ends - time.monotonic()) > 0:
            try:
                item = self.stream.items.get(timeout=min(HEARTBEAT, left))
            except queue.Empty:
                handler.wfile.write(b": heartbeat\n\n")
                handler.wfile.flush()
                continue
            if item is None:
                return
            chunk = [encode_event(item)]
            while len(chunk) < 100:  # what else is waiting goes out in the same write
                try:
                    more = self.stream.items.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    handler.wfile.write(b"".join(chunk))
                    return
                chunk.append(encode_event(more))
            handler.wfile.write(b"".join(chunk))
            handler.wfile.flush()
