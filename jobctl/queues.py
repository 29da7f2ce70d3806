"""jobctl's commands for operating the queues: `queues` (pause, resume), `cancel` and `retry`
of one job or of every job a filter matches, `purge`, `run-now`, `priority` and `audit`.
Each is one control method (or, for a bulk action, one call per 10,000 jobs, continued
until done); the daemon records each change in its audit trail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from jobctl import output
from jobctl.cli import _states, as_json, client, common_options, emit, main, run
from jobctl.params import Time
from jobd.domain import State
from jobd.limits import BULK_BATCH
from jobd.protocol import job_from_dict

F = TypeVar("F", bound=Callable[..., Any])
BULK_TIMEOUT = 300.0  # seconds one call of a bulk action (up to 10,000 jobs) may take


def filter_options(command: F) -> F:
    """The list's filters, for the bulk forms of cancel, retry and purge."""
    options = (
        click.option(
            "--state",
            "-s",
            multiple=True,
            callback=_states,
            metavar="STATE[,STATE]",
            help="Only jobs in these states.",
        ),
        click.option("--type", "-t", "job_type", metavar="TYPE", help="Only jobs of this type."),
        click.option("--queue", "-q", metavar="NAME", help="Only jobs in this queue."),
        click.option("--created-after", type=Time(), metavar="ISO-8601"),
        click.option("--created-before", type=Time(), metavar="ISO-8601"),
        click.option("--schedule", metavar="NAME", help="Only jobs this schedule created."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
        click.option("--dry-run", is_flag=True, help="Only count the matching jobs."),
        click.option(
            "--batch",
            type=click.IntRange(1, BULK_BATCH),
            default=BULK_BATCH,
            show_default=True,
            help="Jobs changed per transaction.",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def _filters(kw: dict[str, Any]) -> dict[str, Any]:
    def text(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "state": kw["state"] or None,
        "type": kw["job_type"],
        "queue": kw["queue"],
        "created_after": text(kw["created_after"]),
        "created_before": text(kw["created_before"]),
        "schedule": kw["schedule"],
    }


def bulk(ctx: click.Context, method: str, verb: str, kw: dict[str, Any]) -> None:
    """Count the matching jobs, ask, then act on them call after call."""
    filters = _filters(kw)
    if not any(v is not None for v in filters.values()):
        raise click.UsageError(f"give a job ID or a filter (--state, --queue, …) to {verb}")
    with client(ctx) as c:
        matched = c.call(method, {**filters, "dry_run": True})["matched"]
        if kw["dry_run"] or matched == 0:
            if as_json(ctx):
                emit({"matched": matched})
            else:
                click.echo(f"{matched} jobs match")
            return
        if not kw["yes"]:
            click.confirm(f"{verb} {matched} jobs?", abort=True, err=True)
        totals = {"changed": 0, "batches": 0, "busy": 0}
        params = {**filters, "batch": kw["batch"]}
        while True:
            answer = c.call(method, params, timeout=BULK_TIMEOUT)
            for key in totals:
                totals[key] += answer[key]
            if not as_json(ctx):
                click.echo(f"{totals['changed']} of {matched} …", err=True)
            if answer["next_cursor"] is None:
                break
            params["cursor"] = answer["next_cursor"]
    if as_json(ctx):
        emit({"matched": matched, **totals})
        return
    jobs, batches = totals["changed"], totals["batches"]
    click.echo(f"{verb}: {jobs} job{'s' * (jobs != 1)} in {batches} batch{'es' * (batches != 1)}")
    if totals["busy"]:
        click.echo(f"{totals['busy']} jobs were busy at that moment: run it again", err=True)


def one_or_many(
    ctx: click.Context, job_id: int | None, kw: dict[str, Any], method: str, verb: str
) -> bool:
    """Act by filter when no ID is given; False if it was one job (the caller's part)."""
    if job_id is None:
        run(lambda: bulk(ctx, method, verb, kw))
        return True
    if any(v is not None for v in _filters(kw).values()):
        raise click.UsageError("give a job ID or filters, not both")
    return False


@main.command()
@click.argument("job_id", metavar="[ID]", type=int, required=False)
@filter_options
@common_options
@click.pass_context
def cancel(ctx: click.Context, /, job_id: int | None, **kw: Any) -> None:
    """Cancel job ID, or every job the filters match.

    \b
    A pending job is canceled at once; a running one is stopped (its worker is asked, then
    signalled) and shows "cancel requested" until it has.  Exits 1 (conflict) if the job has
    already finished, 4 if there is no such job.  With filters instead of an ID, says how many
    jobs match and asks before canceling them (--yes does not ask, --dry-run only counts);
    they are canceled --batch at a time, each batch one short transaction.

    \b
    Examples:
      jobctl cancel 42
      jobctl cancel --queue reports --state pending --dry-run
    """
    if one_or_many(ctx, job_id, kw, "cancel_many", "cancel"):
        return

    def act() -> None:
        assert job_id is not None
        with client(ctx) as c:
            job = c.cancel(job_id)
        if as_json(ctx):
            emit(job.to_dict())
        elif job.state is State.CANCELED:
            click.echo(f"job {job.id} canceled")
        else:
            click.echo(f"job {job.id} is running: cancel requested, it stops shortly")

    run(act)


@main.command()
@click.argument("job_id", metavar="[ID]", type=int, required=False)
@filter_options
@common_options
@click.pass_context
def retry(ctx: click.Context, /, job_id: int | None, **kw: Any) -> None:
    """Run failed or canceled job ID again, or every such job the filters match.

    \b
    With a fresh set of attempts.  Exits 1 (conflict) if the job is not failed or canceled,
    4 if there is no such job.  With filters: as for cancel (count, confirm, batches).

    \b
    Examples:
      jobctl retry 42
      jobctl retry --state failed --type send_email --created-after 2030-01-01T09:00:00Z --yes
    """
    if one_or_many(ctx, job_id, kw, "retry_many", "retry"):
        return

    def act() -> None:
        assert job_id is not None
        with client(ctx) as c:
            job = c.retry(job_id)
        if as_json(ctx):
            emit(job.to_dict())
        else:
            # waiting again when a job it was submitted after has not ended (workflows)
            click.echo(f"job {job.id} is {job.state_name} again ({job.max_attempts} attempts)")

    run(act)


@main.command()
@filter_options
@common_options
@click.pass_context
def purge(ctx: click.Context, /, **kw: Any) -> None:
    """Delete the finished jobs the filters match (completed, failed, canceled).

    \b
    Example:
      jobctl purge --state completed --queue reports --created-before 2030-01-01T00:00:00Z
    """
    run(lambda: bulk(ctx, "purge", "purge", kw))


@main.command("run-now")
@click.argument("job_id", metavar="ID", type=int)
@common_options
@click.pass_context
def run_now(ctx: click.Context, job_id: int) -> None:
    """Make pending job ID due now (a delayed job, or one waiting out a retry's backoff).

    \b
    Example:
      jobctl run-now 17
    """
    _adjust(ctx, "run_now", {"id": job_id}, "is due now")


@main.command()
@click.argument("job_id", metavar="ID", type=int)
@click.argument("priority", metavar="N", type=int)
@common_options
@click.pass_context
def priority(ctx: click.Context, job_id: int, priority: int) -> None:
    """Give pending job ID priority N (higher runs first).

    \b
    Example:
      jobctl priority 17 10
    """
    _adjust(ctx, "set_priority", {"id": job_id, "priority": priority}, f"has priority {priority}")


def _adjust(ctx: click.Context, method: str, params: dict[str, Any], done: str) -> None:
    def act() -> None:
        with client(ctx) as c:
            job = job_from_dict(c.call(method, params)["job"])
        if as_json(ctx):
            emit(job.to_dict())
        else:
            click.echo(f"job {job.id} {done}")

    run(act)


# --- queues ----------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@common_options
@click.pass_context
def queues(ctx: click.Context) -> None:
    """Every queue: its jobs, its oldest pending job's age, whether it is paused, its limits
    (LIMIT: on this node; GLOBAL and RATE: across the fleet, from the file or set at runtime).

    \b
    Examples:
      jobctl queues
      jobctl queues pause emails --reason "SMTP provider down"
      jobctl queues resume emails
      jobctl queues limit api --global-concurrency 3 --rate 10/s
      jobctl queues limit api --reset
    """
    if ctx.invoked_subcommand is not None:
        return

    def show() -> None:
        with client(ctx) as c:
            answer = c.call("queues")
        if as_json(ctx):
            emit(answer)
        else:
            click.echo(queue_table(answer["queues"]) if answer["queues"] else "no queues")

    run(show)


def queue_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "QUEUE",
        "PENDING",
        "RUNNING",
        "WAITING",
        "FAILED 1H",
        "OLDEST",
        "PAUSED",
        "LIMIT",
        "GLOBAL",
        "RATE",
    ]
    body = [
        [
            q["name"],
            str(q["pending"]),
            str(q["running"]),
            str(q["waiting"]),
            str(q["failed_last_hour"]),
            "-" if q["oldest_pending_age"] is None else f"{q['oldest_pending_age']:.0f}s",
            _paused(q),
            str(q["limits"].get("concurrency", "-")),
            _limit(q, "global_concurrency"),
            _limit(q, "rate"),
        ]
        for q in rows
    ]
    return output.table(headers, body)


def _paused(q: dict[str, Any]) -> str:
    if not q["paused"]:
        return "no"
    pause = q["pause"] or {}
    return "yes" + (f" ({pause['reason']})" if pause.get("reason") else "")


def _limit(q: dict[str, Any], key: str) -> str:
    """A fleet-wide limit, and `(runtime)` when an operator set it over the file's."""
    value = q["limits"].get(key)
    if value is None:
        return "-"
    runtime = q.get("limit_sources", {}).get(key) == "runtime"
    return f"{value} (runtime)" if runtime else str(value)


@queues.command()
@click.argument("name")
@click.option("--reason", metavar="TEXT", help="Why: shown by `jobctl queues` and health.")
@common_options
@click.pass_context
def pause(ctx: click.Context, name: str, reason: str | None) -> None:
    """Stop every node claiming from queue NAME (submits are still accepted; running jobs
    finish)."""
    _pause(ctx, "queue_pause", {"name": name, "reason": reason}, "paused")


@queues.command()
@click.argument("name")
@common_options
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Let every node claim from queue NAME again."""
    _pause(ctx, "queue_resume", {"name": name}, "resumed")


@queues.command()
@click.argument("name")
@click.option(
    "--global-concurrency",
    type=int,
    metavar="N",
    help="At most N jobs of the queue running at once across all nodes.",
)
@click.option(
    "--rate", metavar="N/s|N/m", help="At most N starts per second or minute, fleet-wide."
)
@click.option("--reset", is_flag=True, help="Drop the runtime limits: the file's apply again.")
@common_options
@click.pass_context
def limit(
    ctx: click.Context, name: str, global_concurrency: int | None, rate: str | None, reset: bool
) -> None:
    """Set queue NAME's fleet-wide limits for every node, over the configuration file's
    (the queue need not have jobs yet); --reset gives the file's back."""
    if global_concurrency is None and rate is None and not reset:
        raise click.UsageError("give --global-concurrency, --rate or --reset")
    params = {"name": name, "global_concurrency": global_concurrency, "rate": rate}
    params = {k: v for k, v in params.items() if v is not None}
    if reset:
        params["reset"] = True

    def act() -> None:
        with client(ctx) as c:
            answer = c.call("queue_limit", params)
        if as_json(ctx):
            emit(answer)
            return
        q = answer["queue"]
        shown = ", ".join(
            f"{key.replace('_', ' ')} {_limit(q, key)}"
            for key in ("global_concurrency", "rate")
            if key in q["limits"]
        )
        click.echo(f"queue {name} limits for every node: {shown or 'none'}")

    run(act)


def _pause(ctx: click.Context, method: str, params: dict[str, Any], done: str) -> None:
    def act() -> None:
        with client(ctx) as c:
            answer = c.call(method, params)
        if as_json(ctx):
            emit(answer)
        else:
            click.echo(f"queue {params['name']} {done} for every node")

    run(act)


# --- audit -----------------------------------------------------------------------------------


@main.command()
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True)
@common_options
@click.pass_context
def audit(ctx: click.Context, limit: int) -> None:
    """The operators' actions, newest first: who, when, what, with which arguments.

    \b
    Example:
      jobctl audit --limit 20
    """

    def show() -> None:
        with client(ctx) as c:
            answer = c.call("audit", {"limit": limit})
        if as_json(ctx):
            emit(answer)
            return
        rows = [
            [str(r["id"]), r["at"], r["actor"], r["action"], r["target"] or "-", _details(r)]
            for r in answer["records"]
        ]
        headers = ["ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAILS"]
        click.echo(output.table(headers, rows) if rows else "no actions recorded")

    run(show)


def _details(record: dict[str, Any]) -> str:
    return output.compact(record["details"]) if record["details"] else "-"
