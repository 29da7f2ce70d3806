"""`jobd run` keeps the HTTP shim running as a child process when http.listen is configured.

    supervisor started ──► spawn `python -m jobd.http`, settings on its stdin
    child exits        ──► log it, spawn again after a backoff (1 s doubling to 30 s; back to
                           1 s once a child has stayed up a minute)
    supervisor stops   ──► SIGTERM, then SIGKILL after STOP_TIMEOUT

Why a process and not a thread of the supervisor: a busy or misbehaving HTTP front must not
take CPU, memory or the interpreter lock from the loops that run jobs (ADR 0014, ADR 0022).
The shim is only a client of the control socket, as it is when started alone.

The child leads a session of its own, so a Ctrl-C at the terminal reaches the supervisor only,
which decides when the shim stops; the child takes the end of its stdin pipe as "jobd run is
gone" and stops too, so a supervisor killed with SIGKILL leaves no shim behind.  It is stopped
when the supervisor stops (after the drain), so /readyz keeps answering 503 while it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobd.http import settings_from_config
from jobd.http.server import HttpSettings

if TYPE_CHECKING:
    from jobd.config import Config

log = logging.getLogger("jobd.http")

RESTART_MIN = 1.0
RESTART_MAX = 30.0
STABLE_AFTER = 60.0  # a child that lived this long resets the backoff
STOP_TIMEOUT = 10.0  # its own grace for requests in progress is shorter (jobd.http.STOP_GRACE)


def settings_line(settings: HttpSettings) -> bytes:
    data = {
        "listen": settings.listen,
        "socket": str(settings.socket),
        "tokens": list(settings.tokens),
        "read_only_tokens": list(settings.read_only_tokens),
        "ui": settings.ui,
        "secure_cookie": settings.secure_cookie,
        "max_body_bytes": settings.max_body_bytes,
        "request_timeout": settings.request_timeout,
        "header_timeout": settings.header_timeout,
        "max_connections_per_peer": settings.max_connections_per_peer,
        "log_level": settings.log_level,
        "log_format": settings.log_format,
        "node": settings.node,
    }
    return json.dumps(data).encode() + b"\n"


def settings_from_line(line: bytes) -> HttpSettings:
    data = json.loads(line)
    return HttpSettings(
        listen=data["listen"],
        socket=Path(data["socket"]),
        tokens=tuple(data["tokens"]),
        read_only_tokens=tuple(data.get("read_only_tokens", ())),
        ui=data.get("ui", True),
        secure_cookie=data.get("secure_cookie", True),
        max_body_bytes=data["max_body_bytes"],
        request_timeout=data["request_timeout"],
        header_timeout=data["header_timeout"],
        max_connections_per_peer=data["max_connections_per_peer"],
        log_level=data["log_level"],
        log_format=data["log_format"],
        node=data.get("node"),
    )


class HttpChild:
    def __init__(self, settings: HttpSettings):
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def install(cls, supervisor: Any, config: Config, node: str | None) -> HttpChild | None:
        """Start after the control server (so the shim's first request finds the socket) and
        stop before it, when http.listen is set; None otherwise."""
        if config.http.listen is None:
            return None
        child = cls(settings_from_config(config, node=node))
        child.settings.check()  # refused at load already; this also covers a hand-made Config
        supervisor.on_started.append(child.start)
        # First of the stop hooks: the front door closes before the control server it uses.
        supervisor.on_stopping.insert(0, child.stop)
        return child

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name="jobd-http-child")

    async def stop(self) -> None:
        self._stopping.set()
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                log.warning("http shim did not stop in time; killing it", extra=self._extra())
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            await self._task

    async def _keep_running(self) -> None:
        delay = RESTART_MIN
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process = await self._spawn()
            except OSError as exc:
                log.error("cannot start the http shim", extra={"error": str(exc)})
            else:
                code = await process.wait()
                assert process.stdin is not None
                process.stdin.close()
                if self._stopping.is_set():
                    log.info("http shim stopped", extra={"exit": describe_exit(code)})
                    return
                if time.monotonic() - started >= STABLE_AFTER:
                    delay = RESTART_MIN
                log.error(
                    "http shim exited; restarting it",
                    extra={"exit": describe_exit(code), "restart_in": delay, **self._extra()},
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, RESTART_MAX)

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jobd.http",
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdin is not None
        # The settings, then nothing: the pipe stays open for the child's life, and its end
        # (our exit, however it happens) tells the child to stop.
        process.stdin.write(settings_line(self.settings))
        await process.stdin.drain()
        self.process = process
        self.starts += 1
        log.info("http shim started", extra=self._extra())
        return process

    def _extra(self) -> dict[str, Any]:
        # Not "pid": every log line has that field already, the writer's (the supervisor's).
        pid = self.process.pid if self.process is not None else None
        return {"child_pid": pid, "listen": self.settings.listen}


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
