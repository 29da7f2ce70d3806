"""The handlers of the worked example in docs/workflows.md: fetch, then N transforms, then a report.

Load them with `handlers.modules: [prices_workflow]` (JOBD_HANDLER_MODULES=prices_workflow),
this directory on the daemon's PYTHONPATH.  `fetch_prices` stands for a download: it returns a
fixed price list; results are small JSON, passed down through ctx.parent_results()."""

from __future__ import annotations

from typing import Any

from jobd import JobContext, handler

#: What `fetch_prices` "downloads", by source.
SAMPLE_PRICES = {
    "eu": [
        {"region": "north", "item": "tea", "price": 3},
        {"region": "north", "item": "rice", "price": 2},
        {"region": "south", "item": "tea", "price": 4},
        {"region": "east", "item": "rice", "price": 5},
    ],
}


@handler("fetch_prices")
def fetch_prices(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"rows": SAMPLE_PRICES[payload["source"]]}


@handler("transform")
def transform(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    (fetched,) = ctx.parent_results().values()  # {parent id: result}: one parent here
    rows = [row for row in fetched["rows"] if row["region"] == payload["region"]]
    return {"region": payload["region"], "total": sum(row["price"] for row in rows)}


@handler("price_report")
def price_report(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    parts = ctx.parent_results()  # one entry per transform; None for one that failed
    totals = {part["region"]: part["total"] for part in parts.values() if part is not None}
    return {"totals": totals, "missing": sorted(i for i, part in parts.items() if part is None)}
