"""What each page shows, read from the daemon through the shim's control clients: the overview,
the job list with its filters, and one job.  Data only (dicts for the templates); no HTML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobd.errors import JobdError
from jobd.http.api import Clients
from jobd.http.ui.feed import Feed
from jobd.http.ui.render import STATES

PAGE_SIZE = 50
#: The list's "created within" choices: query value -> (label, seconds).
SINCE = {
    "15m": ("15 minutes", 900),
    "1h": ("1 hour", 3600),
    "24h": ("24 hours", 86400),
    "7d": ("7 days", 7 * 86400),
}
TEXT_FILTERS = ("type", "queue", "schedule", "workflow", "created_after", "created_before")


class Pages:
    def __init__(self, clients: Clients, feed: Feed):
        self.clients = clients
        self.feed = feed

    def overview(self) -> dict[str, Any]:
        nodes_error: str | None = None
        with self.clients.reader() as client:
            stats = client.call("stats")
            workers = client.call("workers")["workers"]
            try:
                fleet: dict[str, Any] | None = client.call("nodes")
            except JobdError as exc:
                fleet, nodes_error = None, exc.message
            queues = _optional(client, "queues", "queues")
            if self.feed.history.due():  # at most once a minute for the whole shim
                activity = _optional(client, "activity", "minutes")
                if activity is not None:
                    self.feed.history.counted(activity)
        minutes = self.feed.history.per_minute()
        return {
            "stats": stats,
            "by_state": stats["jobs"]["by_state"],
            "by_queue": sorted(stats["jobs"]["by_queue"].items()),
            "queues": _queues(stats["jobs"]["by_queue"], queues),
            "workers": workers,
            "nodes": _nodes(fleet, stats["node"], workers),
            "nodes_error": nodes_error,
            "minutes": minutes,
            "peak": max([m["completed"] + m["failed"] for m in minutes] + [1]),
            "totals": {
                "completed": sum(m["completed"] for m in minutes),
                "failed": sum(m["failed"] for m in minutes),
            },
            # The shim's own count starts with the shim; the database's covers the hour.
            "since": 0 if self.feed.history.from_database else self.feed.history.since,
            "waits": self.feed.history.queue_waits(),
            "live": self.feed.connected,
        }

    def jobs(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The list as filtered by the query (the daemon checks the values: its error, naming
        the field, is shown at the form)."""
        filters = list_filters(query)
        params: dict[str, Any] = {k: v for k, v in filters.items() if k != "since" and v}
        params["state"] = filters["state"] or None
        if filters["workflow"].isdigit():  # a job id; anything else is the daemon's to refuse
            params["workflow"] = int(filters["workflow"])
        if filters["since"] in SINCE and not filters["created_after"]:
            seconds = SINCE[filters["since"]][1]
            after = datetime.now(UTC) - timedelta(seconds=seconds)
            params["created_after"] = after.isoformat().replace("+00:00", "Z")
        cursor = _one(query, "cursor")
        if cursor:
            params["cursor"] = cursor
        params["limit"] = PAGE_SIZE
        error: str | None = None
        jobs: list[dict[str, Any]] = []
        next_cursor = None
        try:
            with self.clients.reader() as client:
                result = client.call("list", params)
            jobs, next_cursor = result["jobs"], result["next_cursor"]
        except JobdError as exc:
            if exc.code not in ("invalid_params", "not_found"):
                raise
            error = exc.message
        schedule = filters["schedule"]
        if schedule:  # a daemon that does not know the filter yet lists every job
            jobs = [job for job in jobs if job.get("schedule") == schedule]
        return {
            "jobs": jobs,
            "filters": filters,
            "next_cursor": next_cursor,
            "paged": bool(cursor),
            "error": error,
            "since_choices": SINCE,
            "filter_query": _filter_query(filters),
        }

    def schedules(self) -> dict[str, Any]:
        with self.clients.reader() as client:
            schedules = _optional(client, "schedules", "schedules")
        return {"schedules": schedules or [], "supported": schedules is not None}

    def job(self, job_id: int) -> dict[str, Any]:
        with self.clients.reader() as client:
            job = client.call("get", {"id": job_id})["job"]
            attempts = _optional(client, "attempts", "attempts", {"id": job_id})
        return {"job": job, "fields": _fields(job), "attempts": _timed(attempts)}


def _optional(
    client: Any, method: str, member: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]] | None:
    """A method's list, or None from a daemon that does not have the method."""
    try:
        result: list[dict[str, Any]] = client.call(method, params)[member]
    except JobdError as exc:
        if exc.code != "method_not_found":
            raise
        return None
    return result


def _timed(attempts: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Each attempt with how long it took (seconds; None while it runs or if never started)."""
    if attempts is None:
        return None
    for attempt in attempts:
        start, end = attempt.get("started_at"), attempt.get("ended_at")
        took = None
        if start and end:
            took = (_parse_time(end) - _parse_time(start)).total_seconds()
        attempt["took"] = took
    return attempts


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _queues(
    by_queue: dict[str, dict[str, int]], queues: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Every queue with its counts by state and, from `queues`, whether it is paused (and by
    whom, why), how long its oldest due job has waited, its failures of the last hour."""
    known = {q["name"]: q for q in queues or []}
    # A daemon that can pause queues lists only the busy or paused ones: the rest are not.
    idle: dict[str, Any] = {} if queues is None else {"paused": False, "pause": None}
    rows = []
    for name in sorted(set(by_queue) | set(known)):
        row = known.get(name, {"name": name, "oldest_pending_age": None, **idle})
        rows.append({**row, "name": name, "counts": by_queue.get(name, {})})
    return rows


def list_filters(query: dict[str, list[str]]) -> dict[str, Any]:
    states = [s for value in query.get("state", []) for s in value.split(",") if s]
    filters: dict[str, Any] = {"state": [s for s in states if s in STATES]}
    for name in TEXT_FILTERS:
        filters[name] = (_one(query, name) or "").strip()
    filters["since"] = _one(query, "since") or ""
    return filters


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _filter_query(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """The filters as query pairs, for the next page's link (the cursor is bound to them)."""
    pairs = [("state", s) for s in filters["state"]]
    pairs += [(k, filters[k]) for k in (*TEXT_FILTERS, "since") if filters[k]]
    return pairs


def _nodes(
    fleet: dict[str, Any] | None, this_node: str, workers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The fleet's nodes, this node's workers shown in full (state, pid, job), the others' as
    the nodes table has them (index and job)."""
    if fleet is None:
        return [{"id": this_node, "live": True, "workers": workers, "this": True}]
    nodes = []
    for node in fleet["nodes"]:
        mine = node.get("id") == this_node
        nodes.append({**node, "this": mine, "workers": workers if mine else node["workers"]})
    return nodes


#: The job's members in the order the page lists them; any other member follows, so a member a
#: newer daemon adds is shown too.
ORDER = (
    "id",
    "type",
    "queue",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "crashes",
    "schedule",
    "created_at",
    "run_at",
    "started_at",
    "finished_at",
    "updated_at",
    "timeout",
    "effective",
    "cancel_requested",
    "lease_owner",
    "lease_expires_at",
    "idempotency_key",
    "correlation_id",
)
SHOWN_APART = ("payload", "result", "last_error")
TIMES = ("created_at", "run_at", "started_at", "finished_at", "updated_at", "lease_expires_at")
DURATIONS = ("timeout", "result_ttl")  # seconds


def _fields(job: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(name, value, kind) for the job's table: kind is time, duration, json or text."""
    names = [n for n in ORDER if n in job]
    names += sorted(n for n in job if n not in ORDER and n not in SHOWN_APART)
    rows = []
    for name in names:
        value = job[name]
        structured = isinstance(value, dict | list | bool)
        kind = "time" if name in TIMES else "json" if structured else "text"
        if name in DURATIONS and isinstance(value, int | float) and not isinstance(value, bool):
            kind = "duration"
        rows.append((name, value, kind))
    return rows
