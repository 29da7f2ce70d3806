"""Job types for the control-protocol and jobctl tests, loaded by the daemon under test through
JOBD_HANDLER_MODULES=control_handlers (tests/ is on its PYTHONPATH).  Named ctl_* so they
cannot clash with other tests' handlers in the process-wide registry."""

from __future__ import annotations

from typing import Any

from jobd.domain import PermanentError
from jobd.handlers import handler


@handler("ctl_fail", max_attempts=1)
def fail(ctx: Any, payload: dict[str, Any]) -> None:
    """Fail for good at once: the job ends `failed` after one attempt."""
    raise PermanentError(payload.get("message", "failed on purpose"))


def _needs_name(payload: dict[str, Any]) -> None:
    if not isinstance(payload.get("name"), str):
        raise ValueError("name: required, a string")


@handler("ctl_greet", max_attempts=5, validator=_needs_name)
def greet(ctx: Any, payload: dict[str, Any]) -> dict[str, str]:
    """A handler with a submit-time validator and its own default max_attempts."""
    return {"greeting": f"hello {payload['name']}"}


@handler("ctl_halfway")
def halfway(ctx: Any, payload: dict[str, Any]) -> None:
    """Reports that it is half done, then takes `seconds` for the rest."""
    ctx.progress({"current": 1, "total": 2, "message": "halfway"})
    ctx.sleep(payload.get("seconds", 0.5))
