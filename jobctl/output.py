"""How jobctl shows things to a person: aligned tables, readable times, one job in detail.

(`--json` output does not come through here: it is the protocol's own objects, unchanged.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard

from jobd.domain import State
from jobd.protocol import InForce, JobView


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, the rest left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]
    lines = [_line(headers, widths, numeric)]
    lines += [_line(row, widths, numeric) for row in cells]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: list[int], numeric: list[bool]) -> str:
    parts = [
        c.rjust(w) if right else c.ljust(w)
        for c, w, right in zip(cells, widths, numeric, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """`12s ago`, `3m ago`, `in 2h` -- short, for tables."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    seconds = (now - when).total_seconds()
    text = duration(abs(seconds))
    if abs(seconds) < 1:
        return "just now"
    return f"{text} ago" if seconds > 0 else f"in {text}"


def duration(seconds: float) -> str:
    """`45s`, `3m`, `2h5m`, `3d4h`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m" + (f"{seconds}s" if minutes < 10 and seconds else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h" + (f"{minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f"{hours}h" if hours else "")


def timestamp(when: datetime | None, now: datetime | None = None) -> str:
    """Local time to the second, with how long ago: `2024-06-01 14:03:07 (3m ago)`."""
    if when is None:
        return "-"
    local = when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return f"{local} ({ago(when, now)})"


def size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)  # pragma: no cover - the loop always returns


def by_state_table(title: str, groups: dict[str, dict[str, int]]) -> str:
    """Job counts by state, a row per queue or type (`jobctl stats`)."""
    states = [s.value for s in State]
    rows = [(name, *(counts.get(s, 0) for s in states)) for name, counts in sorted(groups.items())]
    return table((title, *(s.upper() for s in states)), rows)


def node_table(nodes: Sequence[dict[str, Any]]) -> str:
    """The nodes of the fleet as `jobctl nodes` shows them."""
    headers = ("NODE", "VERSION", "LIVE", "HEARTBEAT", "BUSY", "TYPES")
    return table(headers, [_node_row(node) for node in nodes])


def _node_row(node: dict[str, Any]) -> tuple[Any, ...]:
    workers = node["workers"]
    busy = sum(w["job_id"] is not None for w in workers)
    heartbeat = ago(datetime.fromisoformat(node["heartbeat_at"]))
    live = "yes" if node["live"] else "no"
    types = ",".join(node["types"])
    return (node["id"], node["version"], live, heartbeat, f"{busy}/{len(workers)}", types)


def health_text(health: dict[str, Any]) -> str:
    """`jobctl health`: the status line, then each problem and each warning."""
    workers = health.get("workers") or {}
    lines = [
        f"{health.get('status')}: store {health.get('store')},"
        f" workers {workers.get('ready', 0)}/{workers.get('expected', 0)}"
    ]
    lines += [f"  - {problem}" for problem in health.get("problems") or []]
    lines += [f"  - warning: {warning}" for warning in health.get("warnings") or []]
    return "\n".join(lines)


def schedule_table(schedules: Sequence[dict[str, Any]]) -> str:
    """The schedules as `jobctl schedules` shows them."""
    headers = ("NAME", "SPEC", "TIMEZONE", "NEXT TICK", "LAST TICK", "LAST JOB", "STATE", "PAUSED")
    return table(headers, [_schedule_row(view) for view in schedules])


def _schedule_row(view: dict[str, Any]) -> tuple[Any, ...]:
    spec = view.get("spec") if view.get("defined_here") else "(not here)"
    return (
        view["name"],
        spec,
        view.get("timezone") if view.get("cron") else "-",  # "-" kept left like the zones
        _when(view.get("next_tick")),
        _when(view.get("last_tick")),
        view.get("last_job_id"),
        view.get("last_job_state"),
        "yes" if view.get("paused") else "no",
    )


def _when(text: str | None) -> str:
    """A tick in local time to the second, and how far off (`2030-01-01 02:00:00 (in 3h)`)."""
    return "-" if text is None else timestamp(datetime.fromisoformat(text))


def job_table(jobs: Sequence[JobView]) -> str:
    rows = [
        (
            j.id,
            j.state_shown + ("*" if j.cancel_requested else ""),
            j.type,
            j.queue,
            j.priority,
            f"{j.attempts}/{j.max_attempts}",
            ago(j.created_at),
            _short_error(j),
        )
        for j in jobs
    ]
    headers = ("ID", "STATE", "TYPE", "QUEUE", "PRIO", "TRIES", "CREATED", "LAST ERROR")
    return table(headers, rows)


def _short_error(job: JobView, limit: int = 60) -> str:
    if job.last_error is None:
        return ""
    text = f"{job.last_error.type}: {job.last_error.message}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_detail(job: JobView) -> str:
    """Every field of one job, one per line, labels aligned; the members a newer daemon sent
    that this version does not know come last, as they were sent."""
    fields: list[tuple[str, str]] = [
        ("id", str(job.id)),
        ("type", job.type),
        ("state", job.state_shown + (" (cancel requested)" if job.cancel_requested else "")),
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {_max_attempts(job)}"),
        ("crashes", str(job.crashes)),
        ("timeout", _timeout(job)),
        ("run at", timestamp(job.run_at)),
        ("created", timestamp(job.created_at)),
        ("updated", timestamp(job.updated_at)),
        ("started", timestamp(job.started_at)),
        ("finished", timestamp(job.finished_at)),
        ("result ttl", _result_ttl(job)),
        ("lease", f"{job.lease_owner} until {timestamp(job.lease_expires_at)}"),
        ("idempotency key", job.idempotency_key or "-"),
        ("correlation id", job.correlation_id or "-"),
        ("payload", compact(job.payload)),
        ("result", compact(job.result) if job.result is not None else "-"),
    ]
    if job.lease_owner is None:
        fields = [f for f in fields if f[0] != "lease"]
    if job.schedule is not None:
        fields.insert(4, ("schedule", job.schedule))
    if job.progress is not None:
        at = fields.index(("finished", timestamp(job.finished_at))) + 1
        fields.insert(
            at, ("progress", f"{progress_text(job.progress)} at {timestamp(job.progress_at)}")
        )
    if job.last_error is not None:
        fields.append(("last error", f"{job.last_error.type}: {job.last_error.message}"))
    fields += _workflow_fields(job)
    fields += [(name, compact(value)) for name, value in job.extra.items()]
    width = max(len(label) for label, _ in fields)
    lines = [f"{label + ':':<{width + 1}}  {value}" for label, value in fields]
    if job.last_error is not None and job.last_error.traceback:
        lines.append("traceback:")
        lines += ["  " + line for line in job.last_error.traceback.rstrip().splitlines()]
    return "\n".join(lines)


def progress_text(progress: Any, limit: int = 120) -> str:
    """A job's progress as people read it: `3/10 (30%) resizing` for the conventional
    `{"current": 3, "total": 10, "message": "resizing"}`, else its JSON (shortened)."""
    if isinstance(progress, dict) and _number(progress.get("current")):
        current, total = progress["current"], progress.get("total")
        text = f"{current:g}"
        if _number(total):
            share = f" ({current / total:.0%})" if total > 0 else ""
            text += f"/{total:g}{share}"
        if isinstance(message := progress.get("message"), str) and message:
            text += " " + message.replace("\n", " ")
        extra = {k: v for k, v in progress.items() if k not in ("current", "total", "message")}
        if extra:
            text += " " + compact(extra)
    else:
        text = compact(progress)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _workflow_fields(job: JobView) -> list[tuple[str, str]]:
    """The jobs it was submitted after (and those it still waits for), and the jobs submitted
    after it: `get` tells the last two."""
    out = []
    if job.parents:
        out.append(("parents", ids(job.parents)))
        if job.waiting_for:
            out.append(("waiting for", ids(job.waiting_for)))
        out.append(("on parent failure", job.on_parent_failure))
    if job.children:
        out.append(("children", ids(job.children)))
    return out


def ids(values: Sequence[int], shown: int = 20) -> str:
    """`3, 4, 5` -- the first `shown` of a long list, and how many more."""
    text = ", ".join(str(v) for v in values[:shown])
    more = len(values) - shown
    return text + (f" … and {more} more" if more > 0 else "")


def _result_ttl(job: JobView) -> str:
    """How long the job is kept once it has ended: its own result_ttl, else the retention."""
    if job.result_ttl is None:
        return "- (jobs.retention)"
    return f"{job.result_ttl:g}s after it ends (the first prune after)"


def _timeout(job: JobView) -> str:
    """The timeout in force and where it comes from, when the daemon said (`get` does);
    else the job's own, if it has one."""
    in_force = job.effective.timeout if job.effective else None
    if in_force is not None:
        where = _source(in_force, "the job's", job.type, "jobs.default_timeout")
        return f"{in_force.value:g}s ({where})"
    if job.timeout is not None:
        return f"{job.timeout:g}s (the job's)"
    return "- (the handler's, else jobs.default_timeout)"


def _max_attempts(job: JobView) -> str:
    in_force = job.effective.max_attempts if job.effective else None
    if in_force is None:
        return str(job.max_attempts)
    where = _source(in_force, "fixed at submit", job.type, "jobs.default_max_attempts")
    return f"{in_force.value:g} ({where})"


def _source(in_force: InForce, own: str, job_type: str, setting: str) -> str:
    """Where a limit in force comes from, in words: `own` for the job's, the handler's, the
    setting's name; a source this version does not know, as the daemon named it."""
    return {
        "job": own,
        "handler": f"the {job_type} handler's",
        "default": setting,
    }.get(in_force.source, in_force.source)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


#: The events a change's state already says (`subscribe`'s `event`).
_PLAIN_EVENTS = {"started": "running", "submitted": "pending"}


def state_change(state: str, event: str | None) -> str:
    """`running`, `pending (retried)`: the state a change led to, and what happened when the
    state alone does not say it."""
    if event is None or event == state or _PLAIN_EVENTS.get(event) == state:
        return state
    return f"{state} ({event})"
