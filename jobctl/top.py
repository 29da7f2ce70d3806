"""`jobctl top`: a live view of one daemon in the terminal -- its queues, the fleet's nodes and
their workers, the running jobs and the latest changes of state -- redrawn as changes come.

    subscription thread ── follow() ──► changes queue ──► wake-up pipe ──┐
    keyboard (stdin, cbreak) ────────────────────────────────────────────┤ select()
    slow timer (REFRESH seconds): queues, nodes, running jobs ───────────┘ → redraw

The changes are pushed by the daemon (`subscribe`); a burst of them is drawn at most
FRAMES_PER_SECOND times a second.  What changes do not carry -- the queues' counts, the nodes
and their workers -- is read on a slow timer, one call each (`queues`, `nodes`, and one `list`
of the running jobs that also catches what the subscription cannot see: another node's starts).
No curses: the screen is cleared and drawn with ANSI sequences, each line cut to the width.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import shutil
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import click

from jobctl import output
from jobctl.cli import as_json, client, common_options, emit, main, run
from jobd.client import Client
from jobd.errors import JobdError
from jobd.subscriptions import JobChange, SubscriptionLost, follow

REFRESH = 2.0  # seconds between two readings of the queues, nodes and running jobs
FRAMES_PER_SECOND = 4  # redraws at most, however many changes come
RECENT = 100  # changes kept for the "recent changes" table
RUNNING_LIMIT = 200  # running jobs read at each refresh
RESUBSCRIBE = 1.0  # seconds before subscribing again after losing the subscription
ENDS = frozenset({"completed", "failed", "canceled", "retried", "released", "recovered"})

CLEAR_TO_END = "\x1b[K"
ENTER = "\x1b[?1049h\x1b[?25l"  # the alternate screen, no cursor
LEAVE = "\x1b[?25h\x1b[?1049l"


class Running(NamedTuple):
    id: int
    type: str
    queue: str
    since: datetime | None  # None: claimed ahead, not started yet


@dataclass
class View:
    """What the screen shows; changed by readings and by changes, drawn by `frame`."""

    node: str = "?"
    queues: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    running: dict[int, Running] = field(default_factory=dict)
    recent: deque[JobChange] = field(default_factory=lambda: deque(maxlen=RECENT))
    note: str = ""  # trouble: the daemon unreachable, the subscription lost

    def read(self, c: Client) -> None:
        """The slow tables, one call each."""
        self.queues = c.call("queues")["queues"]
        self.nodes = c.call("nodes")["nodes"]
        page = c.list(state=["running"], limit=RUNNING_LIMIT)
        self.running = {
            j.id: Running(j.id, j.type, j.queue, j.started_at) for j in reversed(page.jobs)
        }

    def apply(self, change: JobChange) -> None:
        self.recent.appendleft(change)
        if change.event == "started" or change.state == "running":
            since = datetime.fromtimestamp(change.at, UTC)
            self.running[change.id] = Running(
                change.id, change.type or "?", change.queue or "?", since
            )
        elif change.event in ENDS or change.state != "running":
            self.running.pop(change.id, None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "queues": self.queues,
            "nodes": self.nodes,
            "running": [r._asdict() | {"since": _iso(r.since)} for r in self.running.values()],
        }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


# --- drawing ------------------------------------------------------------------------------------


def frame(view: View, width: int, height: int, now: datetime | None = None) -> list[str]:
    """The screen's lines, each at most `width` long, at most `height` of them: the header,
    queues, nodes, running jobs, then as many recent changes as fit."""
    now = now or datetime.now(UTC)
    clock = now.astimezone().strftime("%H:%M:%S")
    header = f"jobd top  node {view.node}  {clock}  {len(view.running)} running   q: quit"
    lines = [header]
    if view.note:
        lines.append(f"! {view.note}")
    lines += ["", *_queues(view.queues).splitlines()]
    lines += ["", *_nodes(view.nodes).splitlines()]
    lines += ["", *_running(view.running, now).splitlines()]
    lines += ["", "RECENT CHANGES"]
    lines += [_change(c) for c in view.recent] or ["none seen yet"]
    return [_cut(line, width) for line in lines[: max(height, 1)]]


def _queues(queues: list[dict[str, Any]]) -> str:
    if not queues:
        return "QUEUES: none with jobs"
    rows = [
        (
            q["name"],
            q.get("pending", 0),
            q.get("running", 0),
            "paused" if q.get("paused") else "-",
            _age(q.get("oldest_pending_age")),
            q.get("failed_last_hour", 0),
        )
        for q in queues
    ]
    headers = ("QUEUE", "PENDING", "RUNNING", "PAUSED", "OLDEST", "FAILED/1H")
    return output.table(headers, rows)


def _nodes(nodes: list[dict[str, Any]]) -> str:
    """A line per node, then its workers: each with the job it runs (`1:42 2:-`)."""
    if not nodes:
        return "NODES: none"
    rows = []
    for node in nodes:
        workers = node.get("workers") or []
        jobs = " ".join(f"{w['index']}:{w['job_id'] or '-'}" for w in workers)
        live = "live" if node.get("live") else "silent"
        busy = sum(w.get("job_id") is not None for w in workers)
        rows.append((node["id"], live, f"{busy}/{len(workers)}", jobs or "-"))
    return output.table(("NODE", "STATE", "BUSY", "WORKER:JOB"), rows)


def _running(running: dict[int, Running], now: datetime) -> str:
    if not running:
        return "RUNNING: none"
    rows = [
        (r.id, r.type, r.queue, "claimed" if r.since is None else output.duration(_seconds(r, now)))
        for r in sorted(running.values(), key=lambda r: r.id)
    ]
    return output.table(("RUNNING", "TYPE", "QUEUE", "FOR"), rows)


def _seconds(r: Running, now: datetime) -> float:
    return max((now - r.since).total_seconds(), 0.0) if r.since else 0.0


def _change(change: JobChange) -> str:
    when = datetime.fromtimestamp(change.at, UTC).astimezone().strftime("%H:%M:%S")
    what = output.state_change(change.state, change.event)
    return f"{when}  {change.id:>7}  {what:<17}  {change.type or '?'}  {change.queue or '?'}"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else output.duration(seconds)


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


# --- the live view ------------------------------------------------------------------------------


class Changes:
    """The subscription, on a thread of its own: each change into a queue, and a byte into a
    pipe so that the main loop's select() wakes up.  Subscribes again when it is lost."""

    def __init__(self, socket_path: str | os.PathLike[str]):
        self.socket_path = socket_path
        self.queue: queue.Queue[JobChange | str] = queue.Queue()
        self.wake_r, self.wake_w = os.pipe()
        thread = threading.Thread(target=self._run, name="jobctl-top-subscription", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._put("")  # subscribed: no trouble to show
                for change in follow(self.socket_path, on_ready=lambda: self._put("")):
                    self._put(change)
            except SubscriptionLost as exc:
                self._put(f"subscription lost ({exc}); subscribing again")
            except JobdError as exc:
                self._put(f"cannot subscribe: {exc.message}")
            except (OSError, ValueError) as exc:  # a reply it could not read: try again
                self._put(f"subscription failed: {exc}")
            time.sleep(RESUBSCRIBE)

    def _put(self, item: JobChange | str) -> None:
        self.queue.put(item)
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b".")

    def drain(self, view: View) -> bool:
        """Apply what came; whether anything did."""
        with contextlib.suppress(OSError):
            os.read(self.wake_r, 4096)
        came = False
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return came
            came = True
            if isinstance(item, str):
                view.note = item
            else:
                view.apply(item)


@contextlib.contextmanager
def terminal(keys: int | None) -> Iterator[None]:
    """The alternate screen, and the keyboard a key at a time (cbreak) when there is one;
    both given back as they were, whatever happens."""
    saved = termios.tcgetattr(keys) if keys is not None else None
    try:
        if keys is not None:
            tty.setcbreak(keys)
        _write(ENTER)
        yield
    finally:
        _write(LEAVE)
        if keys is not None and saved is not None:
            termios.tcsetattr(keys, termios.TCSADRAIN, saved)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def draw(view: View) -> None:
    size = shutil.get_terminal_size()
    lines = frame(view, size.columns, size.lines)
    _write("\x1b[H" + "".join(line + CLEAR_TO_END + "\r\n" for line in lines[:-1]))
    _write((lines[-1] if lines else "") + CLEAR_TO_END + "\x1b[J")


def live(c: Client, view: View) -> None:
    """Until `q` (or Ctrl-C): redraw on changes (coalesced) and on the slow timer."""
    changes = Changes(c.socket_path)
    keys = sys.stdin.fileno() if sys.stdin.isatty() else None
    watched = [changes.wake_r] + ([keys] if keys is not None else [])
    next_read = time.monotonic() + REFRESH
    drawn_at, dirty = 0.0, True
    with terminal(keys):
        while True:
            now = time.monotonic()
            if now >= next_read:
                _read(c, view)
                next_read, dirty = now + REFRESH, True
            if dirty and now - drawn_at >= 1 / FRAMES_PER_SECOND:
                draw(view)
                drawn_at, dirty = now, False
            wait = next_read - now
            if dirty:
                wait = min(wait, drawn_at + 1 / FRAMES_PER_SECOND - now)
            readable, _, _ = select.select(watched, [], [], max(wait, 0.0))
            if keys is not None and keys in readable and b"q" in os.read(keys, 64).lower():
                return
            if changes.wake_r in readable:
                dirty = changes.drain(view) or dirty


def _read(c: Client, view: View) -> None:
    try:
        view.read(c)
    except JobdError as exc:
        view.note = exc.message


@main.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and tests).")
@common_options
@click.pass_context
def top(ctx: click.Context, once: bool) -> None:
    """A live view of the daemon: queues, nodes, running jobs, recent changes.

    \b
    Redrawn as the daemon pushes changes of state (a few times a second at most) and every
    2 seconds for the queues' counts and the nodes.  q or Ctrl-C quits.  --once prints one
    frame (with --json: the queues, nodes and running jobs) and exits.

    \b
    Examples:
      jobctl top
      jobctl top --once
    """

    def show() -> None:
        with client(ctx) as c:
            view = View()
            view.node = c.hello().node or "?"
            view.read(c)
            if once:
                if as_json(ctx):
                    emit(view.as_dict())
                else:
                    size = shutil.get_terminal_size()
                    click.echo("\n".join(frame(view, size.columns, 10_000)).rstrip())
                return
            live(c, view)

    try:
        run(show)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
