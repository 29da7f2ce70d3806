"""The `jobctl` command: submit, inspect and control the jobs of a running jobd over its control
socket.  A thin layer over jobd.client; every operation is the daemon's.

Exit statuses (the same table, jobd.errors.CODES, gives each error code its status):
    0  success
    1  the job ended failed or canceled -- any end but completed -- (or was still running when
       --timeout ran out) under `wait` / `submit --wait`; a conflict (cancel of a finished job,
       retry of a running one); `health` found the node degraded
    2  bad usage or input: an unknown option, malformed --payload, unknown job type, …
    3  the daemon cannot be reached (the message names the socket) or its store is unavailable
    4  no such job

The options --socket and --json are accepted before and after the subcommand.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any, NoReturn, TypeVar

import click
from click.shell_completion import get_completion_class

from jobctl import output, workflows
from jobctl.inputs import name_line, parse_payload, read_batch
from jobctl.params import Duration, Time
from jobd import __version__
from jobd.client import Client, ListFilters, SubmitResult, WaitResult
from jobd.domain import State
from jobd.errors import CODES, JobdError
from jobd.limits import MAX_LIST_LIMIT, MAX_SUBMIT_MANY
from jobd.protocol import JobView

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILED = 1  # a job that ended failed or canceled, a degraded node
LIST_LIMIT = 50  # jobs `jobctl list` shows by default
_SETTINGS = "jobctl.settings"


class CliError(click.ClickException):
    """`jobctl: message` on stderr, and the exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"jobctl: {self.format_message()}", err=True)


def fail(error: JobdError) -> NoReturn:
    """Leave with the error's message and the exit status the CODES table gives its code."""
    raise CliError(error.message, CODES.get(error.code, CODES["internal_error"]).exit_status)


# --- options accepted on the group and on every subcommand ----------------------------------


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            ctx.meta.setdefault(_SETTINGS, {})[name] = value

    return callback


def common_options(command: F) -> F:
    command = click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=None,
        expose_value=False,
        callback=_remember("json"),
        help="Machine-readable output: the protocol's objects as JSON on stdout.",
    )(command)
    return click.option(
        "--socket",
        "socket_path",
        metavar="PATH",
        default=None,
        expose_value=False,
        callback=_remember("socket"),
        help="The daemon's control socket. [env: JOBD_SOCKET; default: the path `jobd run` uses]",
    )(command)


def settings(ctx: click.Context) -> dict[str, Any]:
    given: dict[str, Any] = ctx.meta.get(_SETTINGS, {})
    return given


def client(ctx: click.Context) -> Client:
    s = settings(ctx)
    return Client(s.get("socket"))


def as_json(ctx: click.Context) -> bool:
    return bool(settings(ctx).get("json"))


def emit(value: Any) -> None:
    click.echo(output.pretty_json(value))


def run(action: Callable[[], None]) -> None:
    """Run a command's body; a JobdError becomes its message and exit status."""
    try:
        action()
    except JobdError as exc:
        fail(exc)


# --- the group -----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(__version__, prog_name="jobctl")
def main() -> None:
    """Submit and control the jobs of a running jobd.

    \b
    Talks to the daemon over its control socket: --socket, else $JOBD_SOCKET, else
    control.socket of the file in $JOBD_CONFIG, else the default path `jobd run` uses.
    Exit status: 0 ok; 1 the job failed or was canceled (wait), a conflict, or the node is
    degraded (health); 2 bad usage or input; 3 the daemon cannot be reached; 4 no such job.

    \b
    Examples:
      jobctl submit send_email --wait \\
        --payload '{"to": "a@example.com", "subject": "Hi", "body": "Hello."}'
      jobctl list --state failed
      jobctl status 42 --json
    """


# --- submit --------------------------------------------------------------------------------


@main.command()
@click.argument("job_type", metavar="[TYPE]", required=False)
@click.option("--payload", "-p", metavar="JSON|@FILE|-", help="The payload: a JSON object.")
@click.option("--queue", "-q", metavar="NAME", help="Queue (default: default).")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts allowed.")
@click.option(
    "--timeout",
    "job_timeout",
    type=Duration(),
    metavar="DURATION",
    help="How long one attempt may run (seconds, or 90s, 5m, 1h).",
)
@click.option(
    "--result-ttl",
    type=Duration(min=0),
    metavar="DURATION",
    help="Keep the job this long once ended, instead of jobs.retention (0: next prune).",
)
@click.option("--delay", type=Duration(min=0), metavar="DURATION", help="Run later (30s, 1h, 2d).")
@click.option(
    "--at", "run_at", type=Time(), metavar="ISO-8601", help="Run at this time (with a zone)."
)
@click.option("--key", "idempotency_key", metavar="KEY", help="Idempotency key.")
@click.option("--correlation-id", metavar="ID", help="Carried into the job's log lines.")
@workflows.submit_options
@click.option("--batch", metavar="FILE|-", help="Submit the jobs of a JSON-lines file.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job has finished.")
@click.option(
    "--wait-timeout",
    type=Duration(min=0),
    metavar="DURATION",
    help="With --wait: give up after this long (exit 1).",
)
@common_options
@click.pass_context
def submit(
    ctx: click.Context,
    /,
    job_type: str | None,
    payload: str | None,
    batch: str | None,
    wait_: bool,
    wait_timeout: float | None,
    **options: Any,
) -> None:
    """Submit a job of type TYPE (or a batch of jobs).

    \b
    Prints the job (with --json: the job object).  With --wait, waits until it has finished
    and exits 1 if it failed or was canceled.  --batch reads one job per line, each a JSON
    object of the submit fields (type, payload, queue, priority, max_attempts, run_at, delay,
    timeout, idempotency_key, correlation_id, after, on_parent_failure, result_ttl), and submits
    them 1,000 per transaction; jobs with a `name` (a workflow) go in one, `after` naming them.

    \b
    Examples:
      jobctl submit echo --payload '{"hello": "world"}'
      jobctl submit send_email -p @mail.json --key invoice-1234 --wait
      jobctl submit generate_report -p @report.json --at 2030-01-01T06:00:00Z --queue batch
      jobctl submit --batch jobs.jsonl
    """
    given = {k: v for k, v in options.items() if v is not None}
    if batch is not None:
        if job_type is not None or payload is not None or given:
            raise click.UsageError("--batch takes the jobs from the file: no TYPE or job options")
        run(lambda: _submit_batch(ctx, batch, wait_, wait_timeout))
        return
    if job_type is None:
        raise click.UsageError("missing TYPE (or --batch FILE)")
    if given.get("delay") is not None and given.get("run_at") is not None:
        raise click.UsageError("give --delay or --at, not both")
    if "job_timeout" in given:
        given["timeout"] = given.pop("job_timeout")
    body = parse_payload(payload)
    run(lambda: _submit_one(ctx, job_type, body, given, wait_, wait_timeout))


def _submit_one(
    ctx: click.Context,
    job_type: str,
    payload: dict[str, Any] | None,
    options: dict[str, Any],
    wait_: bool,
    wait_timeout: float | None,
) -> None:
    with client(ctx) as c:
        submitted = c.submit(job_type, payload, **options)
        if not submitted.created:
            click.echo(
                f"jobctl: job {submitted.job.id} already exists with idempotency key"
                f" {submitted.job.idempotency_key!r}; not submitted again",
                err=True,
            )
        if not wait_:
            _show_submitted(ctx, [submitted])
            return
        if not as_json(ctx):
            click.echo(f"job {submitted.job.id} submitted; waiting", err=True)
        _finish_wait(ctx, [c.wait(submitted.job.id, wait_timeout)])


def _submit_batch(ctx: click.Context, source: str, wait_: bool, wait_timeout: float | None) -> None:
    jobs = list(read_batch(source))
    submitted: list[SubmitResult] = []
    with client(ctx) as c:
        names = None
        if workflows.is_workflow(jobs):
            batch = workflows.submit_workflow(c, jobs, name_line)
            submitted, names = batch.results, batch.names
        for start in range(0 if names is None else len(jobs), len(jobs), MAX_SUBMIT_MANY):
            chunk = jobs[start : start + MAX_SUBMIT_MANY]
            try:
                submitted += c.submit_many([params for _, params in chunk])
            except JobdError as exc:
                exc.message = name_line(exc, chunk)
                if submitted:
                    exc.message += f" ({len(submitted)} jobs before it were submitted)"
                raise
        if not wait_:
            _show_submitted(ctx, submitted, names)
            return
        _finish_wait(ctx, _wait_all(c, [s.job.id for s in submitted], wait_timeout))


def _wait_all(c: Client, ids: list[int], timeout: float | None) -> list[WaitResult]:
    """Wait for every job, `timeout` being for all of them together."""
    deadline = None if timeout is None else time.monotonic() + timeout
    return [
        c.wait(job_id, None if deadline is None else max(deadline - time.monotonic(), 0.0))
        for job_id in ids
    ]


def _show_submitted(
    ctx: click.Context, submitted: list[SubmitResult], names: dict[str, int] | None = None
) -> None:
    if as_json(ctx):
        jobs = [s.job.to_dict() for s in submitted]
        single = len(jobs) == 1 and ctx.params.get("batch") is None
        emit(jobs[0] if single else jobs if names is None else {"jobs": jobs, "names": names})
        return
    if len(submitted) == 1:
        job = submitted[0].job
        verb = "submitted" if submitted[0].created else "exists"
        click.echo(f"job {job.id} {verb}: {job.type} in queue {job.queue}, {job.state_name}")
        return
    rows = [
        (s.job.id, s.job.type, s.job.queue, s.job.state_name, "new" if s.created else "existing")
        for s in submitted
    ]
    click.echo(output.table(("ID", "TYPE", "QUEUE", "STATE", "SUBMITTED"), rows))


# --- one job ---------------------------------------------------------------------------------


@main.command()
@click.argument("job_id", metavar="ID", type=int)
@click.option(
    "--follow", "-f", is_flag=True, help="Then a line per change of its state, until it ends."
)
@common_options
@click.pass_context
def status(ctx: click.Context, job_id: int, follow: bool) -> None:
    """Show job ID: its state, attempts, times, payload, result and last error.

    \b
    With --follow, then one line for each change of its state (time, state, attempt, the
    error's type on a failure), pushed by the daemon, until the job ends; exit status as
    `wait`: 0 completed, 1 failed or canceled.  Exits 4 if there is no such job.

    \b
    Examples:
      jobctl status 42
      jobctl status 42 --follow
    """
    if follow:
        run(lambda: follow_status(ctx, job_id))
        return

    def show() -> None:
        with client(ctx) as c:
            _show_job(ctx, c.get(job_id))

    run(show)


@main.command()
@click.argument("job_id", metavar="ID", type=int)
@click.option(
    "--timeout",
    "wait_timeout",
    type=Duration(min=0),
    metavar="DURATION",
    help="Give up after this long: seconds, or 30s, 5m, 1h (default: as long as it takes).",
)
@common_options
@click.pass_context
def wait(ctx: click.Context, job_id: int, wait_timeout: float | None) -> None:
    """Wait until job ID has finished, then show it.

    \b
    The daemon does the waiting (no polling from here).  Exits 0 if the job completed, 1 if it
    failed or was canceled or is still running when --timeout runs out, 4 if there is no such
    job.

    \b
    Example:
      jobctl wait 42 --timeout 300 && echo done
    """
    run(lambda: _wait(ctx, job_id, wait_timeout))


def _wait(ctx: click.Context, job_id: int, wait_timeout: float | None) -> None:
    with client(ctx) as c:
        _finish_wait(ctx, [c.wait(job_id, wait_timeout)])


def _finish_wait(ctx: click.Context, results: list[WaitResult]) -> None:
    """Show the jobs waited for; exit 1 unless every one of them completed."""
    jobs = [r.job for r in results]
    if as_json(ctx):
        emit(jobs[0].to_dict() if len(jobs) == 1 else [j.to_dict() for j in jobs])
    elif len(jobs) == 1:
        _show_job(ctx, jobs[0])
    else:
        click.echo(output.job_table(jobs))
    unfinished = [r.job.id for r in results if r.timed_out]
    # The daemon said these finished (timed_out false): any end but `completed` is a failure,
    # also one in a state this version does not know.
    failed = [j for j in jobs if j.state is not State.COMPLETED]
    if unfinished:
        ids = ", ".join(map(str, unfinished))
        raise CliError(f"timed out waiting for job {ids}: not finished yet", EXIT_FAILED)
    if failed:
        ids = ", ".join(str(j.id) for j in failed)
        states = {j.state_name for j in failed}
        raise CliError(f"job {ids} {' or '.join(sorted(states))}", EXIT_FAILED)


def _show_job(ctx: click.Context, job: JobView) -> None:
    if as_json(ctx):
        emit(job.to_dict())
    else:
        click.echo(output.job_detail(job))


# --- many jobs -------------------------------------------------------------------------------


def _states(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    known = [s.value for s in State]
    for name in names:
        if name not in known:
            raise click.BadParameter(f"{name!r} is not a state ({', '.join(known)})")
    return names


@main.command("list")
@click.option(
    "--state",
    "-s",
    multiple=True,
    callback=_states,
    metavar="STATE[,STATE]",
    help="Only jobs in these states (waiting, pending, running, completed, failed, canceled).",
)
@workflows.list_option
@click.option("--type", "-t", "job_type", metavar="TYPE", help="Only jobs of this type.")
@click.option("--queue", "-q", metavar="NAME", help="Only jobs in this queue.")
@click.option("--schedule", metavar="NAME", help="Only jobs this schedule created.")
@click.option(
    "--created-after", type=Time(), metavar="ISO-8601", help="Only jobs created after this time."
)
@click.option(
    "--created-before", type=Time(), metavar="ISO-8601", help="Only jobs created before this time."
)
@click.option(
    "--limit", "-n", type=click.IntRange(1, MAX_LIST_LIMIT), default=LIST_LIMIT, show_default=True
)
@click.option("--all", "all_", is_flag=True, help="Every matching job, page after page.")
@click.option("--cursor", metavar="CURSOR", help="Continue after a previous page (same filters).")
@common_options
@click.pass_context
def list_jobs(
    ctx: click.Context,
    /,
    state: list[str],
    job_type: str | None,
    queue: str | None,
    schedule: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    all_: bool,
    cursor: str | None,
    workflow: int | None,
) -> None:
    """List jobs, newest first.

    \b
    Shows --limit jobs; when there are more it says how to get the next page (--cursor, with
    the same filters), and --all fetches every page.  With --json, prints the protocol's list
    result: {"jobs": [...], "next_cursor": ...}.

    \b
    Examples:
      jobctl list --state failed,canceled --type send_email
      jobctl list --schedule nightly-report -n 5
      jobctl list --created-after 2030-01-01T00:00:00Z --created-before 2030-01-02T00:00:00Z
      jobctl list --all --json | jq '.jobs[].id'
    """
    filters: ListFilters = {
        "state": state or None,
        "type": job_type,
        "queue": queue,
        "schedule": schedule,
        "created_after": created_after,
        "created_before": created_before,
        "workflow": workflow,
    }

    def show() -> None:
        with client(ctx) as c:
            if all_:
                jobs, next_cursor = list(c.iter_jobs(**filters)), None
            else:
                page = c.list(limit=limit, cursor=cursor, **filters)
                jobs, next_cursor = page.jobs, page.next_cursor
        if as_json(ctx):
            emit({"jobs": [j.to_dict() for j in jobs], "next_cursor": next_cursor})
            return
        click.echo(output.job_table(jobs) if jobs else "no jobs")
        if next_cursor:
            again = _list_command(ctx, filters, limit, next_cursor)
            click.echo(f"more: {again} (or --all)", err=True)

    run(show)


def _list_command(ctx: click.Context, filters: ListFilters, limit: int, cursor: str) -> str:
    """The command that lists the next page: the same filters (the daemon refuses a cursor
    without them), the same page size and daemon, and the cursor."""
    words = ["jobctl", "list"]
    if "socket" in settings(ctx):
        words += ["--socket", str(settings(ctx)["socket"])]
    state = filters.get("state")
    if state:
        words += ["--state", ",".join(state)]
    for name in ("type", "queue", "schedule", "workflow"):
        value = filters.get(name)
        if value:
            words += [f"--{name}", str(value)]
    for name in ("created_after", "created_before"):
        when = filters.get(name)
        if isinstance(when, datetime):
            words += ["--" + name.replace("_", "-"), when.isoformat()]
    if limit != LIST_LIMIT:
        words += ["--limit", str(limit)]
    return shlex.join([*words, "--cursor", cursor])


# --- the daemon ------------------------------------------------------------------------------


@main.command()
@common_options
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Job counts by state, queue and type; workers busy and idle; the node.

    \b
    Example:
      jobctl stats
    """

    def show() -> None:
        with client(ctx) as c:
            s = c.stats()
        if as_json(ctx):
            emit(s.raw)
            return
        w = s.workers
        click.echo(f"node      {s.node}{'  (draining)' if s.draining else ''}")
        click.echo(f"uptime    {output.duration(s.uptime)}")
        click.echo(
            f"workers   {w.get('busy', 0)} busy, {w.get('idle', 0)} idle"
            f" ({w.get('total', 0)} of {w.get('expected', 0)})"
        )
        rates = s.raw.get("rates") or {}
        shown = ("submitted", "started", "completed", "retried", "failed", "canceled")
        click.echo(
            "rates     "
            + ", ".join(f"{rates.get(name, 0):.1f} {name}/s" for name in shown)
            + "  (last minute)"
        )
        click.echo("")
        click.echo(output.table(("STATE", "JOBS"), list(s.by_state.items())))
        for title, groups in (("QUEUE", s.by_queue), ("TYPE", s.by_type)):
            click.echo("")
            click.echo(output.by_state_table(title, groups))

    run(show)


@main.command()
@common_options
@click.pass_context
def workers(ctx: click.Context) -> None:
    """The worker processes: pid, state, current job, jobs done, memory.

    \b
    Example:
      jobctl workers
    """

    def show() -> None:
        with client(ctx) as c:
            views = c.workers()
        if as_json(ctx):
            emit([w.raw for w in views])
            return
        rows = [(w.index, w.pid, w.state, w.job_id, w.jobs_done, output.size(w.rss)) for w in views]
        click.echo(output.table(("WORKER", "PID", "STATE", "JOB", "DONE", "RSS"), rows))

    run(show)


@main.command()
@common_options
@click.pass_context
def nodes(ctx: click.Context) -> None:
    """The nodes of the fleet: version, last heartbeat, busy workers, the types each runs.

    \b
    A node is live while its heartbeat is newer than jobs.lease_seconds; the rows of nodes
    silent for a day are gone.

    \b
    Example:
      jobctl nodes
    """

    def show() -> None:
        with client(ctx) as c:
            result = c.call("nodes")
        if as_json(ctx):
            emit(result["nodes"])
            return
        click.echo(output.node_table(result["nodes"]))

    run(show)


@main.command()
@common_options
@click.pass_context
def health(ctx: click.Context) -> None:
    """Whether this node can work: its store answers and its workers are up.

    \b
    Exits 0 when healthy, 1 when degraded (the problems are listed), 3 if the daemon cannot be
    reached -- usable as a liveness check.

    \b
    Example:
      jobctl health || echo "jobd needs attention" >&2
    """

    def show() -> None:
        with client(ctx) as c:
            h = c.health()
        if as_json(ctx):
            emit(h.raw)
        else:
            click.echo(output.health_text(h.raw))
        if not h.ok:
            ctx.exit(EXIT_FAILED)

    run(show)


# --- the shell --------------------------------------------------------------------------------

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_JOBCTL_COMPLETE"  # what click's completion sets when the shell asks


@main.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    Load it from the shell's start-up file, or save it where the shell looks for completions.

    \b
    Examples:
      jobctl completion bash > ~/.local/share/bash-completion/completions/jobctl
      jobctl completion zsh > "${fpath[1]}/_jobctl"
      jobctl completion fish > ~/.config/fish/completions/jobctl.fish
      eval "$(jobctl completion bash)"        # this shell only
    """
    complete = get_completion_class(shell)
    assert complete is not None  # click knows every shell SHELLS lists
    click.echo(complete(main, {}, "jobctl", COMPLETE_VAR).source())


# cancel, retry, purge, run-now, priority, queues, audit: defined on `main` by jobctl.queues,
# which builds on the helpers above.
from jobctl import queues as _queues  # noqa: E402, F401
from jobctl import top as _top  # noqa: E402, F401  (`top`, on `main` too)
from jobctl.follow import follow_status  # noqa: E402
from jobctl.schedules import schedules  # noqa: E402  (it builds on the options above)

main.add_command(schedules)

if __name__ == "__main__":
    main(prog_name="jobctl")
