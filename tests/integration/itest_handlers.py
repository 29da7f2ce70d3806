"""Job types the integration tests run in a real daemon.

Every handler appends one line per attempt to the file named by ITEST_LOG (opened with
O_APPEND, so lines from many processes never interleave): `<job id> <attempt> <pid> <event>`.
The tests read that log to see what really ran, where and how often.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import Any

from jobd import PermanentError
from jobd.domain import Backoff
from jobd.handlers import handler


def record(ctx: Any, event: str) -> None:
    line = f"{ctx.job_id} {ctx.attempt} {os.getpid()} {event} {time.time():.6f}\n"
    fd = os.open(os.environ["ITEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@handler("noop")
def noop(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    record(ctx, "run")
    return {"ok": True}


@handler("flaky")
def flaky(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Fails its first `fail_times` attempts."""
    record(ctx, "run")
    if ctx.attempt <= payload.get("fail_times", 1):
        raise ValueError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@handler("growing", backoff=Backoff(base=0.3, factor=2, max_delay=10, jitter=False))
def growing(ctx: Any, payload: dict[str, Any]) -> None:
    record(ctx, "run")
    raise ValueError("always fails, with a backoff that grows")


@handler("permanent")
def permanent(ctx: Any, payload: dict[str, Any]) -> None:
    record(ctx, "run")
    raise PermanentError("this cannot work")


@handler("busy")
def busy(ctx: Any, payload: dict[str, Any]) -> None:
    """A busy loop that never looks at ctx and ignores SIGTERM: only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record(ctx, "run")
    while True:
        pass


@handler("napper")
def napper(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps `seconds`, cooperatively (wakes up when asked to stop)."""
    record(ctx, "run")
    ctx.sleep(payload.get("seconds", 1.0))
    record(ctx, "done")
    return {"slept": payload.get("seconds", 1.0)}


@handler("die_once")
def die_once(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """First attempt waits to be killed from outside; later ones succeed."""
    record(ctx, "run")
    if ctx.attempt == 1:
        time.sleep(60)
    return {"attempt": ctx.attempt}


@handler("exit3")
def exit3(ctx: Any, payload: dict[str, Any]) -> None:
    record(ctx, "run")
    os._exit(3)


@handler("whoami")
def whoami(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    record(ctx, "run")
    return {"pid": os.getpid()}


@handler("segfault")
def segfault(ctx: Any, payload: dict[str, Any]) -> None:
    record(ctx, "run")
    import ctypes

    ctypes.string_at(0)


_hoard: list[bytes] = []


@handler("hog")
def hog(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    """Keeps `mib` MiB more for the life of its worker, like a leaky handler."""
    record(ctx, "run")
    _hoard.append(b"x" * (payload.get("mib", 32) << 20))
    return {"pid": os.getpid()}


@handler("chatty")
def chatty(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    """Logs through ctx.logger and through plain logging; fails its first attempt."""
    import logging

    record(ctx, "run")
    ctx.logger.info("hello from ctx.logger")
    logging.getLogger("itest.plain").warning("hello from plain logging")
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")
    return {"attempt": ctx.attempt}


# --- workflows ---------------------------------------------------------------------------


@handler("gather")
def gather(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A step of a workflow: returns its `value` and how many parents it had, and the sum of
    their values (read through ctx.parent_results(), None for a parent that did not complete)."""
    record(ctx, "run")
    parents = ctx.parent_results()
    values = [r["value"] for r in parents.values() if isinstance(r, dict) and "value" in r]
    return {"value": payload.get("value", 1) + sum(values), "parents": len(parents)}


@handler("fails_once")
def fails_once(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Fails for good the first time this job runs (an operator's retry then succeeds)."""
    record(ctx, "run")
    with open(os.environ["ITEST_LOG"]) as log:
        runs = sum(1 for line in log if line.split()[0] == str(ctx.job_id))
    if runs == 1:
        raise PermanentError("fails the first time")
    return {"value": 100}


@handler("reporter")
def reporter(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Reports its progress `steps` times in a row (the worker lets the first through at once
    and the last a second later, or as the job ends), then waits until the file `gate` exists
    (when given) and returns."""
    record(ctx, "run")
    steps = payload.get("steps", 10)
    for step in range(1, steps + 1):
        ctx.progress({"current": step, "total": steps, "message": payload.get("message", "")})
    gate = payload.get("gate")
    while gate and not os.path.exists(gate):
        ctx.sleep(0.05)
    return {"steps": steps}


@handler("brief", result_ttl=1)
def brief(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A job whose result is worth keeping for a second only (its handler's result_ttl)."""
    record(ctx, "run")
    return {"big": "x" * 1000}


@handler("collector")
def collector(ctx: Any, payload: dict[str, Any]) -> dict[str, int]:
    """The worker's garbage collector as the handler finds it."""
    record(ctx, "run")
    return {"frozen": gc.get_freeze_count(), "young_threshold": gc.get_threshold()[0]}
