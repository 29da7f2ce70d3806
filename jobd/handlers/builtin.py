"""The built-in types, `echo` and `sleep`: two tiny job types that are always there, so jobd
works with no configuration at all."""

from __future__ import annotations

from typing import Any

from jobd.context import JobContext
from jobd.handlers import handler


@handler("echo")
def echo(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload: the smallest possible job, for trying jobd out and for benchmarks."""
    return payload


def _check_sleep(payload: dict[str, Any]) -> None:
    seconds = payload.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError("seconds: must be a number >= 0")


@handler("sleep", validator=_check_sleep)
def sleep(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep `seconds` (default 1), stopping early when the job is cancelled."""
    seconds = float(payload.get("seconds", 1))
    ctx.sleep(seconds)
    return {"slept": seconds}
