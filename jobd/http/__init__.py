"""The HTTP shim: REST over the control protocol, for remote clients.

    jobd http --listen 127.0.0.1:8080          # on its own, next to a running `jobd run`
    jobd run                                    # with http.listen set: started as its child

It translates each request into one call on the daemon's control socket through jobd.client,
and holds no job logic of its own.  The pieces, each in the file named after it:

    server.py    ThreadingHTTPServer + request handler: deadlines, body limit, tokens, logging
    api.py       the routes and endpoints: HTTP in, one control call, HTTP out
    problems.py  errors as application/problem+json, statuses from jobd.errors.CODES
    clients.py   a pool of control-protocol clients, one per request in flight
    openapi.py   the OpenAPI document served at /openapi.json (docs/openapi.yaml)
    child.py     `jobd run` keeping the shim running as a child process
    __main__.py  the child's entry point (its settings arrive on stdin, never in argv)

docs/http.md is the guide; docs/openapi.yaml the reference; docs/adr/0013-http-shim.md says why
it is built this way.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

from jobd.http.server import HttpSettings, ShimServer
from jobd.logs import setup_logging

if TYPE_CHECKING:
    from jobd.config import Config

__all__ = ["HttpSettings", "ShimServer", "StartError", "serve", "settings_from_config"]

log = logging.getLogger("jobd.http")

STOP_GRACE = 5.0  # seconds requests in progress get to finish after SIGTERM
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class StartError(Exception):
    """The shim cannot start (bad address, port taken); `exit_code` is the process's."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def settings_from_config(
    config: Config, listen: str | None = None, node: str | None = None
) -> HttpSettings:
    """The shim's settings from jobd's configuration; `listen` when http.listen is unset."""
    from jobd.config import DEFAULT_HTTP_LISTEN

    http = config.http
    return HttpSettings(
        listen=http.listen or listen or DEFAULT_HTTP_LISTEN,
        socket=config.control.socket,
        tokens=tuple(http.tokens),
        read_only_tokens=tuple(http.read_only_tokens),
        ui=http.ui,
        secure_cookie=http.secure_cookie,
        max_body_bytes=http.max_body_bytes,
        request_timeout=http.request_timeout,
        header_timeout=http.header_timeout,
        max_connections_per_peer=http.max_connections_per_peer,
        log_level=config.logging.level,
        log_format=config.logging.format,
        node=node,
    )


def serve(settings: HttpSettings, parent: int | None = None) -> int:
    """Run the shim in this process until SIGTERM or SIGINT (or, given `parent`, until that
    file descriptor ends: the pipe from `jobd run`, closed when it exits however it exits).
    Requests in progress then get STOP_GRACE seconds to finish.  Returns the exit status."""
    setup_logging(settings.log_level, settings.log_format, settings.node)
    # Signals are taken by sigwait in this thread, never by a handler: block them before any
    # thread starts, so every thread inherits the mask and none is interrupted by them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    server = _bind(settings)
    log.info(
        "http shim listening",
        extra={"listen": server.address, "socket": str(settings.socket), "auth": _auth(settings)},
    )
    threading.Thread(target=server.serve_forever, name="jobd-http", daemon=True).start()
    if server.dashboard is not None:
        server.dashboard.feed.start()  # the overview's last hour counts from now
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    signum = signal.sigwait(_STOP_SIGNALS)
    log.info("http shim stopping", extra={"signal": signal.Signals(signum).name})
    _stop(server)
    return 0


def _bind(settings: HttpSettings) -> ShimServer:
    try:
        return ShimServer(settings)
    except ValueError as exc:
        raise StartError(str(exc), 2) from None
    except OSError as exc:
        raise StartError(f"cannot listen on {settings.listen}: {exc.strerror or exc}") from None


def _auth(settings: HttpSettings) -> str:
    if not (settings.tokens or settings.read_only_tokens):
        return "none (loopback)"
    return f"{len(settings.tokens)} bearer token(s), {len(settings.read_only_tokens)} read-only"


def _watch_parent(fd: int) -> None:
    """Read the parent's pipe until it ends, then stop as if sent SIGTERM.

    A raw os.read on the descriptor, not the buffered sys.stdin: this thread is still blocked
    in the read when the interpreter shuts down, and a buffered reader's lock held by it then
    aborts the process ("Fatal Python error: _enter_buffered_busy")."""
    while os.read(fd, 4096):
        pass
    log.info("jobd run is gone (its pipe closed)")
    # Process-directed, so the main thread's sigwait sees it (raise_signal would aim at this
    # thread, where it would stay pending).
    os.kill(os.getpid(), signal.SIGTERM)


def _stop(server: ShimServer) -> None:
    server.stopping = True  # answers from now on close their connections
    server.stop_streams()
    server.shutdown()
    if not server.wait_idle(STOP_GRACE):
        log.warning("requests still in progress after the grace; leaving them unanswered")
    server.server_close()
    log.info("http shim stopped")
