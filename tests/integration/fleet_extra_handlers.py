"""A job type only some nodes of the mixed-fleet tests run (tests/integration/test_fleet.py)."""

from __future__ import annotations

from typing import Any

from jobd.handlers import handler


@handler("new_type")
def new_type(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return {"n": payload.get("n")}
