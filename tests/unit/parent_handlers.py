"""A handler for tests/unit/test_worker.py: it returns what ctx.parent_results() answered."""

from __future__ import annotations

from typing import Any

from jobd.handlers import handler


@handler("wf_gather")
def gather(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return {str(parent): result for parent, result in ctx.parent_results().items()}
