"""The HTTP server: stdlib `ThreadingHTTPServer`, one thread per connection, HTTP/1.1 keep-alive.

What it adds to the standard library, each against a way a remote client can hurt a daemon:

- **a deadline per request** (http.request_timeout): from the moment the server starts waiting
  for a request until its body is read.  A plain socket timeout bounds each recv, so a
  slow-loris client sending a byte every few seconds would hold a thread for ever; here every
  recv gets only what is left of the deadline.  An idle keep-alive connection is closed after
  the same time.
- **a header deadline until authenticated** (HEADER_TIMEOUT): until a connection has sent a
  request with a valid token, its request line and headers must arrive within a few seconds,
  so idle connections of strangers are gone long before http.request_timeout.
- **a body limit** (http.max_body_bytes): a larger Content-Length is refused with 413 before a
  byte of the body is read (also on `Expect: 100-continue`), and the connection is closed --
  after a lingering close: the body still coming is read and dropped, up to LINGER_BYTES or
  LINGER_SECONDS, since closing with unread data resets the connection, and a client that
  sends its whole body before reading (urllib, requests) would get the reset, not the 413.
- **a connection cap** (MAX_CONNECTIONS), and one per peer address
  (MAX_CONNECTIONS_PER_PEER): past either, new connections get 503 and are closed rather than
  each costing a thread, so one peer cannot take every thread from the others.
- **bearer tokens**, compared with hmac.compare_digest against every configured token; a
  read-only token (http.read_only_tokens) gets 403 for anything but GET and HEAD.
- **the dashboard** at /ui/ (jobd/http/ui/, unless http.ui is false), which has its own rules
  for sign-in, CSRF and its event stream, the one response that has no deadline.
- **problem+json for every error**, also those the standard library reports itself (a
  malformed request line, too many headers).

Logging: one line per request (method, route, status, duration, request id, peer) -- never a
header value, a token or a body.  See jobd/http/__init__.py for how it is started and stopped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobd import __version__
from jobd.config import is_loopback, split_host_port
from jobd.errors import JobdError
from jobd.http.access import Access, Tokens
from jobd.http.api import Api, Request, Response, match
from jobd.http.clients import ClientPool
from jobd.http.problems import PROBLEM_JSON, STDLIB_STATUS_CODES, Problem
from jobd.http.ui import Dashboard, EventStream, is_ui_path
from jobd.limits import HTTP_HEADER_TIMEOUT, HTTP_MAX_CONNECTIONS_PER_PEER

log = logging.getLogger("jobd.http")

MAX_CONNECTIONS = 256
MAX_CONNECTIONS_PER_PEER = HTTP_MAX_CONNECTIONS_PER_PEER
HEADER_TIMEOUT = HTTP_HEADER_TIMEOUT
LINGER_SECONDS = 5.0  # after an error with the body unread, it is dropped this long
LINGER_BYTES = 64 * 1024 * 1024  # … or up to this much, whichever comes first
READ_CHUNK = 64 * 1024
MAX_QUERY_FIELDS = 100
_REQUEST_ID_CHARS = frozenset(map(chr, range(0x21, 0x7F)))  # visible ASCII
MAX_REQUEST_ID = 200
PROBES = ("/healthz", "/readyz")


@dataclass(frozen=True)
class HttpSettings:
    """What the shim needs to run: the http.* settings, the daemon's socket, and logging."""

    listen: str  # HOST:PORT (port 0: any free port)
    socket: Path  # the daemon's control socket
    tokens: tuple[str, ...] = field(default=(), repr=False)  # secret: never printed
    read_only_tokens: tuple[str, ...] = field(default=(), repr=False)  # secret: never printed
    ui: bool = True  # the dashboard at /ui/
    secure_cookie: bool = True  # the dashboard's session cookie is Secure
    max_body_bytes: int = 1024 * 1024
    request_timeout: float = 30.0
    header_timeout: float = HEADER_TIMEOUT
    max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER
    log_level: str = "INFO"
    log_format: str = "json"
    node: str | None = None

    def check(self) -> None:
        """Refuse to listen where strangers can reach us without a token (the configuration
        loader refuses too; this holds for every way of starting the shim)."""
        host, _ = split_host_port(self.listen)
        if not (self.tokens or self.read_only_tokens) and not is_loopback(host):
            raise ValueError(
                f"http.listen {self.listen} is not a loopback address: set http.tokens"
                " (JOBD_HTTP_TOKENS) so that strangers cannot submit jobs"
            )


class ShimServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up the exit
    block_on_close = False
    request_queue_size = 128

    def __init__(self, settings: HttpSettings, clients: ClientPool | None = None):
        settings.check()
        host, port = split_host_port(settings.listen)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.settings = settings
        self.clients = clients or ClientPool(settings.socket)
        self.api = Api(self.clients)
        self.tokens = Tokens(settings.tokens, settings.read_only_tokens)
        self.dashboard = Dashboard(settings, self.clients, self.tokens) if settings.ui else None
        self.stopping = False
        self._lock = threading.Lock()
        self._connections = 0
        self._per_peer: dict[str, int] = {}
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it looks the host name up (socket.getfqdn), which can
        # stall start-up on a machine with slow DNS.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)  # an IP address: always text for AF_INET and AF_INET6

    @property
    def address(self) -> str:
        host, port = self.server_name, self.server_port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # --- connections and requests counted -------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = client_address[0]
        with self._lock:
            limit = self._full(peer)
            if limit is None:
                self._connections += 1
                self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        if limit is not None:
            self._refuse(request, limit)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._connection_done(peer)
            raise

    def _full(self, peer: str) -> str | None:
        """Which cap a new connection from `peer` would pass, if any (under the lock)."""
        if self._connections >= MAX_CONNECTIONS:
            return f"{MAX_CONNECTIONS} in all"
        if self._per_peer.get(peer, 0) >= self.settings.max_connections_per_peer:
            return f"{self.settings.max_connections_per_peer} per peer address"
        return None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_done(client_address[0])

    def _connection_done(self, peer: str) -> None:
        with self._lock:
            self._connections -= 1
            left = self._per_peer.pop(peer) - 1
            if left:
                self._per_peer[peer] = left

    def _refuse(self, request: socket.socket, limit: str) -> None:
        log.warning("too many connections; refusing one", extra={"limit": limit})
        problem = Problem("unavailable", "too many connections; try again later")
        body = problem.body(None)
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {PROBLEM_JSON}\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        try:
            request.settimeout(1.0)
            request.sendall(head.encode() + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered (idle keep-alive connections do not count);
        False if some still were after `timeout`."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a client going away is no error of ours.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("connection lost", extra={"peer": f"{client_address[0]}:{client_address[1]}"})
            return
        log.exception("error while serving a connection")

    def stop_streams(self) -> None:
        """End the dashboard's event streams: they are requests that never finish alone."""
        if self.dashboard is not None:
            self.dashboard.close()

    def server_close(self) -> None:
        super().server_close()
        self.clients.close()

    # --- authentication ---------------------------------------------------------------------

    def access(self, header: str | None) -> Access:
        """What the Authorization header grants (jobd.http.access)."""
        return self.tokens.of_header(header)


def _access_level(route: str, status: int) -> int:
    """Quiet for successes and for probes (polled every few seconds, and answering 503 is
    their job while the daemon drains); louder for client errors, louder still for a bug."""
    if status < 400 or route in PROBES:
        return logging.DEBUG
    if status < 500:
        return logging.INFO
    return logging.ERROR if status == 500 else logging.WARNING


class _DeadlineReader(io.RawIOBase):
    """A socket reader whose every recv waits only for what is left of the handler's
    deadline, so that a request as a whole -- not each recv -- is bounded."""

    def __init__(self, sock: socket.socket, handler: Handler):
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not received within http.request_timeout")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
    server_version = f"jobd/{__version__}"
    server: ShimServer

    def version_string(self) -> str:
        return self.server_version  # not the Python version: nobody outside needs it

    def setup(self) -> None:
        super().setup()
        self.deadline = time.monotonic() + self.server.settings.request_timeout
        self.request_id: str | None = None
        self.authenticated = False  # a request of this connection carried a valid token
        self.verdict = Access.MISSING
        # Headers and body go out in two writes: without NODELAY, Nagle would hold the body
        # back until the client acknowledged the headers (40 ms a request on keep-alive).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile.close()  # the plain reader setup() made; ours replaces it
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    # --- one request ------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        """The standard library's loop step, but every method goes to one dispatcher (an
        unknown method is a 405 with Allow, not a 501) and the deadline is set first: the
        short header deadline until the connection has authenticated."""
        settings = self.server.settings
        waiting_since = time.monotonic()
        header_timeout = settings.request_timeout
        if not self.authenticated:
            header_timeout = min(settings.header_timeout, header_timeout)
        self.deadline = waiting_since + header_timeout
        self.request_id = None
        self.command = ""
        self._body_read = False
        self._receiving = False
        try:
            self.raw_requestline = self.rfile.readline(65537)
            self.started = time.monotonic()
            self._receiving = True
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return  # the error has been sent
            self.verdict = self.server.access(self.headers.get("Authorization"))
            if self.verdict.granted:
                self.authenticated = True
                self.deadline = waiting_since + settings.request_timeout
            self.server.request_started()
            try:
                self._answer()
            finally:
                self.server.request_finished()
            self.wfile.flush()
            if self.close_connection and self._body_unread():
                self._drop_unread_body()
        except TimeoutError:
            # Silence on an idle keep-alive connection is normal; in mid-request it is not.
            level = logging.INFO if self._receiving else logging.DEBUG
            log.log(level, "request timed out; closing the connection", extra=self._peer())
            self.close_connection = True
        except ConnectionError:
            self.close_connection = True  # the client went away: nothing to answer

    def _answer(self) -> None:
        self.request_id = self._request_id()
        try:
            parts = urlsplit(self.path)
            path, query = parts.path, parts.query
        except ValueError:
            path, query = "", ""
        dashboard = self.server.dashboard
        if dashboard is not None and is_ui_path(path):
            self._answer_ui(dashboard, path, query)
            return
        found = match(path)
        template = found[0].template if found else "-"
        try:
            response = self._respond(found, path, query)
        except Problem as problem:
            self._send_problem(problem)
            self._access_log(template, problem.status)
            return
        self._send(response)
        self._access_log(template, response.status)

    def _respond(self, found: Any, path: str, query: str) -> Response:
        if self.request_id is None:
            self.request_id = uuid.uuid4().hex
            raise Problem(
                "invalid_request",
                f"X-Request-ID: must be 1 to {MAX_REQUEST_ID} visible ASCII characters",
                "X-Request-ID",
            )
        if found is None or not found[0].open:
            self._authenticate()
        if found is None:
            raise Problem("not_found", f"no such resource: {path}")
        route, path_params = found
        endpoint = self.server.api.handler(route, self.command)
        if self.verdict is Access.READ and self.command not in ("GET", "HEAD"):
            raise Problem("forbidden", f"{self.command} {route.template}: the token is read-only")
        request = Request(
            method=self.command,
            path=path,
            query=self._query(query),
            headers=self.headers,
            body=self._read_body(),
            request_id=self.request_id,
            path_params=path_params,
        )
        try:
            return endpoint(request)
        except JobdError as exc:
            if exc.code == "unavailable":
                log.warning("daemon unavailable", extra={"error": exc.message, **self._peer()})
            elif exc.code == "internal_error":
                log.error("daemon error", extra={"error": exc.message, **self._peer()})
            raise Problem.from_error(exc) from None
        except Problem:
            raise
        except Exception:
            log.exception("error in the HTTP shim", extra=self._peer())
            raise Problem("internal_error", "internal error in the HTTP shim") from None

    def _answer_ui(self, dashboard: Dashboard, path: str, query: str) -> None:
        """A dashboard request: a page, an action, or the event stream."""
        if self.request_id is None:
            self.request_id = uuid.uuid4().hex
        try:
            answer = dashboard.answer(self, path, self._query(query), self._read_body)
        except JobdError as exc:
            answer = None
            problem = Problem.from_error(exc)
        except Problem as exc:
            answer, problem = None, exc
        except Exception:
            log.exception("error in the dashboard", extra=self._peer())
            answer, problem = None, Problem("internal_error", "internal error in the dashboard")
        if answer is None:
            self._send_problem(problem)
            self._access_log("/ui", problem.status)
            return
        if isinstance(answer, EventStream):
            self._access_log("/ui/events", 200)  # logged as it starts: it lasts
            answer.serve(self)
            return
        if answer.status < 400:
            self.authenticated = True  # a signed-in browser: its headers need no short deadline
        self._send(answer)
        self._access_log("/ui", answer.status)

    def _request_id(self) -> str | None:
        """The caller's X-Request-ID, or a new one; None if the caller's is unusable (it is
        echoed in a header and stored as a correlation id, so visible ASCII only)."""
        given = self.headers.get("X-Request-ID")
        if given is None:
            return uuid.uuid4().hex
        if 0 < len(given) <= MAX_REQUEST_ID and set(given) <= _REQUEST_ID_CHARS:
            return given
        return None

    def _authenticate(self) -> None:
        verdict = self.verdict
        if verdict.granted:
            return
        if verdict is Access.MISSING:
            challenge, detail = 'Bearer realm="jobd"', "Authorization: a bearer token is required"
        else:
            challenge = 'Bearer realm="jobd", error="invalid_token"'
            detail = "Authorization: the bearer token is not valid"
            log.info("rejected a wrong token", extra=self._peer())
        raise Problem(
            "unauthorized", detail, "Authorization", headers={"WWW-Authenticate": challenge}
        )

    def _query(self, query: str) -> dict[str, list[str]]:
        try:
            return parse_qs(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            raise Problem(
                "invalid_request", f"query: more than {MAX_QUERY_FIELDS} parameters"
            ) from None

    def _read_body(self) -> bytes:
        """The request body: Content-Length bytes, read before the deadline; 413 (and the
        connection closed, the body unread) above the limit.  Chunked bodies are refused:
        every client this shim expects sends a length for a JSON object."""
        if self.headers.get("Transfer-Encoding") is not None:
            raise Problem(
                "length_required",
                "Transfer-Encoding: not supported; send the body with a Content-Length",
                "Transfer-Encoding",
                close=True,
            )
        length = self._content_length()
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise ConnectionResetError("the client closed before sending its body")
        self._body_read = True
        return body

    def _content_length(self) -> int:
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        text = values[0].strip()
        if len(set(values)) > 1 or not (text.isascii() and text.isdigit()):
            raise Problem(
                "invalid_request", "Content-Length: not a length", "Content-Length", close=True
            )
        length = int(text)
        limit = self.server.settings.max_body_bytes
        if length > limit:
            raise Problem(
                "payload_too_large",
                f"body: {length} bytes is more than the limit of {limit} (http.max_body_bytes)",
                "body",
                close=True,
            )
        return length

    def handle_expect_100(self) -> bool:
        """Say no before the client sends a body that is too large (or badly framed)."""
        try:
            self._content_length()
        except Problem as problem:
            self.request_id = self._request_id() or uuid.uuid4().hex
            self._send_problem(problem)
            self._access_log("-", problem.status)
            return False
        return super().handle_expect_100()

    # --- responses --------------------------------------------------------------------------

    def _send(self, response: Response) -> None:
        self._start(response.status, response.content_type, len(response.body))
        for name, value in response.headers.items():
            self.send_header(name, value)
        for cookie in response.cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_problem(self, problem: Problem) -> None:
        body = problem.body(self.request_id)
        if problem.close or self.close_connection or self._body_unread():
            self.close_connection = True
        self._start(problem.status, PROBLEM_JSON, len(body))
        for name, value in problem.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _start(self, status: int, content_type: str, length: int) -> None:
        # Writes get a whole request_timeout of their own: the deadline was for reading.
        self.connection.settimeout(self.server.settings.request_timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        if self.request_id is not None:
            self.send_header("X-Request-ID", self.request_id)
        if self.close_connection or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True

    def _drop_unread_body(self) -> None:
        """The lingering close (see the module docstring): our answer is sent, and our side
        shut, so the client sees it and the end; what it still sends is read and dropped
        until it closes, LINGER_BYTES have come or LINGER_SECONDS have passed."""
        deadline = time.monotonic() + LINGER_SECONDS
        dropped = 0
        with contextlib.suppress(OSError):  # a timeout, a reset: the linger is over
            self.connection.shutdown(socket.SHUT_WR)
            while dropped < LINGER_BYTES and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(READ_CHUNK)
                if not chunk:
                    return
                dropped += len(chunk)

    def _body_unread(self) -> bool:
        """Whether a request body is still on the wire (an error came before reading it):
        then the connection cannot carry another request and is closed."""
        return not self._body_read and (
            self.headers.get("Content-Length", "0").strip() not in ("", "0")
            or self.headers.get("Transfer-Encoding") is not None
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (bad request line, too many headers, …), as
        problem+json like every other error."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            # The standard library answers a request line it could not read (a bad version
            # included) as HTTP/0.9: a bare body.  A status line and headers serve better.
            self.request_version = "HTTP/1.0"
        problem = Problem(
            STDLIB_STATUS_CODES.get(code, "invalid_request"), message or "malformed request"
        )
        self._send_problem(problem)
        self._access_log("-", code)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # _access_log writes one line per request, with more in it

    def log_message(self, format: str, *args: Any) -> None:
        log.info(format % args, extra=self._peer())

    def _access_log(self, route: str, status: int) -> None:
        level = _access_level(route, status)
        if not log.isEnabledFor(level):
            return
        started = getattr(self, "started", time.monotonic())
        log.log(
            level,
            "http request",
            extra={
                "method": self.command or "-",
                "route": route,
                "status": status,
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
                "request_id": self.request_id,
                **self._peer(),
            },
        )

    def _peer(self) -> dict[str, Any]:
        host, port = self.client_address[:2]
        return {"peer": f"{host}:{port}"}
