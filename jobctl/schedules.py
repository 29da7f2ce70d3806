"""`jobctl schedules`: the fleet's schedules, and pausing, resuming and triggering one (the
control protocol's `schedules`, `schedule_pause`, `schedule_resume`, `schedule_trigger`)."""

from __future__ import annotations

import click

from jobctl import output
from jobctl.cli import as_json, client, common_options, emit, run
from jobd.protocol import job_from_dict


@click.group(invoke_without_command=True)
@common_options
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """The schedules: every one the database knows and this node defines.

    \b
    Without a subcommand, a table: how each ticks, its next and last tick, the job its last
    run created and that job's state, and whether it is paused.  A schedule marked
    "(not here)" is in the database but not in this node's configuration: removed (it no
    longer ticks here; its history stays) or defined on other nodes only.
    Pause and resume are for the whole fleet and survive restarts.  An unknown NAME exits 2.

    \b
    Examples:
      jobctl schedules
      jobctl schedules pause nightly-report
      jobctl schedules resume nightly-report
      jobctl schedules trigger nightly-report
      jobctl list --schedule nightly-report
    """
    if ctx.invoked_subcommand is not None:
        return

    def show() -> None:
        with client(ctx) as c:
            views = c.call("schedules")["schedules"]
        if as_json(ctx):
            emit(views)
        else:
            click.echo(output.schedule_table(views) if views else "no schedules")

    run(show)


def _set_paused(ctx: click.Context, name: str, paused: bool) -> None:
    method = "schedule_pause" if paused else "schedule_resume"

    def act() -> None:
        with client(ctx) as c:
            view = c.call(method, {"name": name})["schedule"]
        if as_json(ctx):
            emit(view)
        elif paused:
            click.echo(f"schedule {name} paused: no jobs at its ticks until it is resumed")
        else:
            click.echo(f"schedule {name} resumed: it runs again from its next tick")

    run(act)


@schedules.command()
@click.argument("name", metavar="NAME")
@common_options
@click.pass_context
def pause(ctx: click.Context, name: str) -> None:
    """Pause schedule NAME on every node: its ticks pass without a job.

    \b
    Persisted: it stays paused across restarts until resumed.  The ticks passed while paused
    are not caught up.

    \b
    Example:
      jobctl schedules pause nightly-report
    """
    _set_paused(ctx, name, True)


@schedules.command()
@click.argument("name", metavar="NAME")
@common_options
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Resume schedule NAME on every node, from its next tick.

    \b
    Example:
      jobctl schedules resume nightly-report
    """
    _set_paused(ctx, name, False)


@schedules.command()
@click.argument("name", metavar="NAME")
@common_options
@click.pass_context
def trigger(ctx: click.Context, name: str) -> None:
    """Run schedule NAME once now, outside its ticks; print the job.

    \b
    Runs even while the schedule is paused.  The node asked must define the schedule (exit 1
    otherwise).

    \b
    Example:
      jobctl schedules trigger nightly-report && jobctl list --schedule nightly-report -n 1
    """

    def act() -> None:
        with client(ctx) as c:
            job = job_from_dict(c.call("schedule_trigger", {"name": name})["job"])
        if as_json(ctx):
            emit(job.to_dict())
        else:
            click.echo(f"job {job.id} submitted: {job.type} in queue {job.queue} ({name})")

    run(act)
