"""Job types for the dashboard's tests, loaded by the daemon under test (JOBD_HANDLER_MODULES).
Named ui_* so they cannot clash with other tests' handlers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobd import schedule
from jobd.domain import PermanentError, RetryLater
from jobd.handlers import handler


@handler("ui_flaky", max_attempts=1)
def flaky(ctx: Any, payload: dict[str, Any]) -> dict[str, str]:
    """Fails the first time (leaving a mark in `flag`), succeeds once retried."""
    flag = Path(payload["flag"])
    if not flag.exists():
        flag.write_text("ran once")
        raise PermanentError("first run fails: the <b>disk</b> was full")
    return {"second": "run"}


# A schedule for the schedules page: hourly, so it does not tick during a test unless asked.
schedule("ui_hourly", type="echo", every="1h", payload={"from": "schedule"}, queue="ui_sched")


@handler("ui_bulk_flaky", max_attempts=1)
def bulk_flaky(ctx: Any, payload: dict[str, Any]) -> dict[str, str]:
    """As ui_flaky, a type of its own for the test of retrying every matching job."""
    return flaky(ctx, payload)


@handler("ui_always_fails", max_attempts=1)
def always_fails(ctx: Any, payload: dict[str, Any]) -> None:
    raise PermanentError("fails every time")


@handler("ui_fails_once", max_attempts=2)
def fails_once(ctx: Any, payload: dict[str, Any]) -> dict[str, str]:
    """Fails its first attempt (retried at once), completes its second."""
    flag = Path(payload["flag"])
    if not flag.exists():
        flag.write_text("ran once")
        raise RetryLater(0.05, "first attempt fails")
    return {"attempt": "second"}
