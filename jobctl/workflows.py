"""jobctl's part of workflows: `submit --after ID` and `--on-parent-failure`, a `--batch` whose
jobs carry names and refer to each other in `after`, and `list --workflow ID`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from jobd.client import Batch, Client
from jobd.errors import JobdError
from jobd.limits import MAX_SUBMIT_MANY

F = TypeVar("F", bound=Callable[..., Any])
#: A batch's jobs: each with the line of the file it came from.
Lines = list[tuple[int, dict[str, Any]]]


def _none_if_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return list(value) if value else None


def submit_options(command: F) -> F:
    """The options of `submit` that make a job wait for others."""
    command = click.option(
        "--on-parent-failure",
        type=click.Choice(["cancel", "run"]),
        help="When a job of --after fails or is canceled: cancel this one too (the default),"
        " or run it anyway once they have all ended.",
    )(command)
    return click.option(
        "--after",
        type=click.IntRange(min=1),
        multiple=True,
        callback=_none_if_empty,
        metavar="ID",
        help="Wait until job ID has ended (repeatable): the job is `waiting` until then.",
    )(command)


def list_option(command: F) -> F:
    return click.option(
        "--workflow",
        type=click.IntRange(min=1),
        metavar="ID",
        help="Only jobs linked to job ID through --after, either way (its workflow).",
    )(command)


def is_workflow(jobs: Lines) -> bool:
    """A batch whose jobs name each other: it must go in one call (one transaction)."""
    return any("name" in job for _, job in jobs)


def submit_workflow(c: Client, jobs: Lines, name_line: Callable[[JobdError, Lines], str]) -> Batch:
    if len(jobs) > MAX_SUBMIT_MANY:
        raise click.BadParameter(
            f"a batch whose jobs have names goes in one transaction: at most {MAX_SUBMIT_MANY}"
            f" jobs, got {len(jobs)}",
            param_hint="--batch",
        )
    try:
        return c.submit_batch([params for _, params in jobs])
    except JobdError as exc:
        exc.message = name_line(exc, jobs)
        raise
