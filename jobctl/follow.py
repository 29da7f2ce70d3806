"""`jobctl status ID --follow`: the job as it is, then a line for each change of its state, as
the daemon pushes them (`subscribe`, filtered to the one job), until it ends; the exit status is
`jobctl wait`'s for that end.

No polling: the lines come from the subscription.  Each change is completed by one `get` of the
job (the notification says the state; the attempt, the error and any progress are the job's).
The order avoids losing a change: subscribe first, then read the job.  What the subscription
cannot see is looked for at each of its heartbeats (one `get`): a change made on another node of
the fleet (a node pushes only its own), or one lost while subscribing again after the daemon
dropped the subscription or restarted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import click

from jobctl import output
from jobctl.cli import EXIT_FAILED, CliError, as_json, settings
from jobd.client import Client
from jobd.domain import TERMINAL_STATES, State
from jobd.errors import DaemonUnreachable, Unavailable
from jobd.protocol import JobView
from jobd.subscriptions import JobChange, SubscriptionLost, follow

#: Seconds to keep trying to reach a daemon that went away (a restart) before giving up (exit 3).
RECONNECT_PATIENCE = 60.0
#: Seconds between two tries to reach it again, or to subscribe when the daemon is at its
#: subscriptions' limit (then the job is read at each try instead).
RETRY_INTERVAL = 1.0


def follow_status(ctx: click.Context, job_id: int) -> None:
    """`jobctl status ID --follow`: exit 0 once the job completed, 1 once it failed or was
    canceled (as `jobctl wait`), 130 on Ctrl-C."""
    follower = JobFollower(settings(ctx).get("socket"), job_id, as_json(ctx))
    try:
        job = follower.run()
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    if job.state is not State.COMPLETED:
        raise CliError(f"job {job.id} {job.state_name}", EXIT_FAILED)


class Shown(NamedTuple):
    """What the last line said: a change is shown once, whichever way it was learnt."""

    state: str
    attempts: int


class _Ended(Exception):
    """The job has ended: leave the subscription."""


class JobFollower:
    """Follows one job on one daemon; `run` returns the job once it has ended."""

    def __init__(
        self,
        socket_path: str | None,
        job_id: int,
        as_json: bool = False,
        echo: Callable[[str], None] = click.echo,
    ):
        self.client = Client(socket_path)
        self.job_id = job_id
        self.as_json = as_json
        self.echo = echo
        self.job: JobView | None = None
        self.shown: Shown | None = None

    def run(self) -> JobView:
        unreachable_since: float | None = None
        refused = False  # the daemon is at its limit of subscriptions: read the job meanwhile
        with self.client:
            while True:
                try:
                    if refused:
                        self._look()
                    self._subscription()
                except _Ended:
                    assert self.job is not None
                    return self.job
                except SubscriptionLost as exc:
                    self._say(f"subscription lost ({exc}); subscribing again")
                    unreachable_since = None
                except DaemonUnreachable as exc:  # (an Unavailable: before it)
                    if self.job is None:
                        raise  # never reached: say so at once, as every command does
                    now = time.monotonic()
                    if unreachable_since is None:
                        unreachable_since = now
                        self._say(f"{exc.message}; trying again for {RECONNECT_PATIENCE:g}s")
                    elif now - unreachable_since > RECONNECT_PATIENCE:
                        raise
                except Unavailable as exc:
                    if not refused:
                        self._say(f"cannot subscribe ({exc.message}); reading the job meanwhile")
                    refused = True
                time.sleep(RETRY_INTERVAL)

    def _subscription(self) -> None:
        changes = follow(
            self.client.socket_path,
            ids=[self.job_id],
            on_ready=self._look,  # subscribed first, then read: no change in between is lost
            on_heartbeat=self._look,
        )
        for change in changes:
            self._look(change)

    def _look(self, change: JobChange | None = None) -> None:
        """Read the job; show it the first time, else show what changed; _Ended once it has."""
        if change is not None and change.event == "progress" and self.job is not None:
            self._progress(change)  # the report itself came with it: nothing to read
            return
        job = self.client.get(self.job_id)
        if self.job is None:
            self._show_first(job)
        else:
            if change is not None:
                self._line(job, change.state, change.at, change.event)
            if change is None or job.state in TERMINAL_STATES:  # a change seen by reading
                self._line(job, job.state_name, job.updated_at.timestamp(), None)
        self.job = job
        if job.state in TERMINAL_STATES:
            raise _Ended

    def _show_first(self, job: JobView) -> None:
        self.shown = Shown(job.state_name, job.attempts)
        if self.as_json:
            self.echo(json.dumps(job.to_dict(), ensure_ascii=False))
        else:
            self.echo(output.job_detail(job))

    def _line(self, job: JobView, state: str, at: float, event: str | None) -> None:
        shown = Shown(state, job.attempts)
        if shown == self.shown:
            return
        self.shown = shown
        if self.as_json:
            self.echo(json.dumps({**job.to_dict(), "state": state}, ensure_ascii=False))
        else:
            self.echo(change_line(job, state, at, event))

    def _progress(self, change: JobChange) -> None:
        if self.as_json:
            self.echo(json.dumps(change.to_params(), ensure_ascii=False))
            return
        when = datetime.fromtimestamp(change.at, UTC).astimezone().strftime("%H:%M:%S")
        self.echo(f"{when}  {'progress':<10}  {output.progress_text(change.progress)}")

    def _say(self, message: str) -> None:
        click.echo(f"jobctl: {message}", err=True)


def change_line(job: JobView, state: str, at: float, event: str | None) -> str:
    """`14:03:09  failed     attempt 1 of 3  ValueError` -- one change, for a person."""
    when = datetime.fromtimestamp(at, UTC).astimezone().strftime("%H:%M:%S")
    what = output.state_change(state, event)
    parts = [when, f"{what:<10}", f"attempt {job.attempts} of {job.max_attempts}"]
    failing = state == State.FAILED or event in ("retried", "failed")
    if failing and job.last_error is not None:
        parts.append(job.last_error.type)
    progress = job.extra.get("progress")
    if progress is not None:
        parts.append(f"progress {output.compact(progress)}")
    return "  ".join(parts)
