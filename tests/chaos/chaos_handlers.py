"""The job types the chaos harness runs (tests/chaos/harness.py), one per kind of behaviour.

Every run appends lines to the file named by CHAOS_LOG, opened with O_APPEND so lines from many
processes never interleave:

    <job id> <attempt> <pid> <event> <unix time> <incarnation>

`incarnation` (CHAOS_INCARNATION, inherited from the `jobd run` that forked the worker) names
the node and its boot, so the harness knows which supervisor a run belonged to.  Events:

    start   the handler was entered
    done    the work is done; the handler returns success right after (the job's "effect")
    perm    a permanent failure is raised right after (also an effect: it is the job's end)
    error   a retryable failure is raised right after
    crash   the worker kills itself right after
    hang    the handler sleeps past its timeout, ignoring cancellation

A job whose effect line appears twice did its work twice: that is what the harness calls a
duplicate run.  Handlers check cancellation before their effect, never after it, so a job stopped
on purpose (cancel, timeout, drain) never leaves an effect line behind.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from jobd import PermanentError
from jobd.handlers import handler


def record(ctx: Any, event: str) -> None:
    incarnation = os.environ.get("CHAOS_INCARNATION", "-")
    line = f"{ctx.job_id} {ctx.attempt} {os.getpid()} {event} {time.time():.6f} {incarnation}\n"
    fd = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _done(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.check_cancelled()  # a job told to stop must not do its work any more
    record(ctx, "done")
    return {"n": payload.get("n"), "attempt": ctx.attempt}


@handler("chaos_instant")
def instant(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    record(ctx, "start")
    return _done(ctx, payload)


@handler("chaos_slow")
def slow(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps cooperatively: a cancel, timeout or drain wakes it and it stops."""
    record(ctx, "start")
    ctx.sleep(float(payload.get("seconds", 0.2)))
    return _done(ctx, payload)


@handler("chaos_flaky")
def flaky(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Fails its first `fail_times` attempts with a retryable error."""
    record(ctx, "start")
    if ctx.attempt <= int(payload.get("fail_times", 1)):
        record(ctx, "error")
        raise ValueError(f"flaky failure on attempt {ctx.attempt}")
    return _done(ctx, payload)


@handler("chaos_crash_once")
def crash_once(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Its first attempt kills its own worker (an exit, or SIGKILL); later ones succeed."""
    record(ctx, "start")
    if ctx.attempt == 1:
        record(ctx, "crash")
        if payload.get("how") == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(13)
    return _done(ctx, payload)


@handler("chaos_timeout_once")
def timeout_once(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Its first attempt sleeps far past its timeout without looking at ctx (only a signal
    stops it); later ones succeed."""
    record(ctx, "start")
    if ctx.attempt == 1:
        record(ctx, "hang")
        time.sleep(60)
    return _done(ctx, payload)


@handler("chaos_permanent")
def permanent(ctx: Any, payload: dict[str, Any]) -> None:
    record(ctx, "start")
    ctx.check_cancelled()
    record(ctx, "perm")
    raise PermanentError("this job can never work")


@handler("chaos_poison")
def poison(ctx: Any, payload: dict[str, Any]) -> None:
    """Kills its worker on every attempt: the poison-job guard must fail it."""
    record(ctx, "start")
    record(ctx, "crash")
    os.kill(os.getpid(), signal.SIGKILL)
