"""Job types for the dashboard's tests, loaded by the daemon under test (JOBD_HANDLER_MODULES).
Named ui_* so they cannot clash with other tests' handlers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobd import schedule
from jobd.domain import PermanentError
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
