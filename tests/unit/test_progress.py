"""A handler's progress before it reaches a store: the check of what `ctx.progress` is given,
the worker's throttle (one report a second per job, the latest wins, the last one flushed),
the supervisor's write-back (the latest per job, ahead of the outcomes), and how the job
object and `jobctl status` show it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from jobctl.output import job_detail, progress_text
from jobd.domain import Job, NewJob, State
from jobd.limits import MAX_PROGRESS_BYTES
from jobd.metrics import Metrics
from jobd.progress import ProgressError, ProgressThrottle, checked_progress
from jobd.protocol import job_from_dict
from jobd.store import Outcome, OutcomeKind
from jobd.store.memory import MemoryStore
from jobd.supervisor.job_events import JobEvents
from jobd.supervisor.store_health import StoreHealth
from jobd.supervisor.writeback import WriteBack
from jobd.testing import make_context

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

# --- what ctx.progress accepts ------------------------------------------------------------


def test_progress_is_plain_json_as_the_database_gives_it_back() -> None:
    assert checked_progress({"current": 3, "total": 10, "steps": ("a", "b")}) == {
        "current": 3,
        "total": 10,
        "steps": ["a", "b"],
    }
    assert checked_progress(0.5) == 0.5 and checked_progress("half") == "half"


def test_progress_over_the_limit_is_refused_naming_the_limit() -> None:
    fits = "x" * (MAX_PROGRESS_BYTES - 2)  # its two quotes make the limit
    assert checked_progress(fits) == fits
    with pytest.raises(ProgressError, match="over the limit of 4096 bytes") as raised:
        checked_progress("é" * MAX_PROGRESS_BYTES)  # 2 bytes each in UTF-8
    assert "MAX_PROGRESS_BYTES" in str(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"when": datetime.now(UTC)}, "progress: not JSON"),
        (float("nan"), "progress: not JSON"),
        ({"message": "a\x00b"}, "progress.message: contains a NUL"),
        ({"message": "\ud800"}, "progress.message: contains a lone surrogate"),
    ],
)
def test_progress_no_store_can_hold_is_refused(value: Any, problem: str) -> None:
    with pytest.raises(ProgressError, match=problem):
        checked_progress(value)


def test_ctx_progress_checks_before_it_reports() -> None:
    got: list[Any] = []
    ctx = make_context(on_progress=got.append)
    ctx.progress({"current": 1, "total": 2})
    with pytest.raises(ProgressError):
        ctx.progress({"blob": "x" * MAX_PROGRESS_BYTES})
    assert got == [{"current": 1, "total": 2}]


# --- the worker's throttle ----------------------------------------------------------------


class FakeTimer:
    def __init__(self, delay: float, fn: Callable[[], None]):
        self.delay, self.fn = delay, fn
        self.started = self.cancelled = False

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True


class Throttled:
    def __init__(self) -> None:
        self.now = 100.0
        self.sent: list[Any] = []
        self.timers: list[FakeTimer] = []
        self.throttle = ProgressThrottle(
            self.sent.append, interval=1.0, clock=lambda: self.now, timer=self._timer
        )

    def _timer(self, delay: float, fn: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(delay, fn))
        return self.timers[-1]


def test_the_first_report_goes_at_once_and_the_latest_of_the_second_when_it_is_up() -> None:
    t = Throttled()
    t.throttle.report(1)
    t.now += 0.2
    t.throttle.report(2)
    t.now += 0.3
    t.throttle.report(3)  # replaces 2
    assert t.sent == [1]
    (timer,) = t.timers  # one timer for the second, however many reports
    assert timer.started and timer.delay == pytest.approx(0.8)
    t.now = 101.0
    timer.fn()
    assert t.sent == [1, 3]
    t.now = 101.5
    t.throttle.report(4)  # within the second after 3: kept
    assert t.sent == [1, 3] and len(t.timers) == 2
    t.now = 103.0
    t.throttle.report(5)  # a second after: at once, replacing the kept 4
    assert t.sent == [1, 3, 5]
    t.timers[1].fn()  # the timer of 4 finds nothing kept
    assert t.sent == [1, 3, 5]


def test_flush_sends_the_report_kept_when_the_job_ends() -> None:
    t = Throttled()
    t.throttle.report("a")
    t.throttle.report("b")
    t.throttle.flush()
    assert t.sent == ["a", "b"] and t.timers[0].cancelled
    t.throttle.flush()  # nothing kept: nothing sent
    assert t.sent == ["a", "b"]


def test_the_real_timer_sends_what_a_blocked_handler_reported_last() -> None:
    sent: list[Any] = []
    throttle = ProgressThrottle(sent.append, interval=0.05)
    throttle.report(1)
    throttle.report(2)

    async def wait() -> None:
        for _ in range(200):
            if sent == [1, 2]:
                return
            await asyncio.sleep(0.01)

    asyncio.run(wait())
    assert sent == [1, 2]


# --- the supervisor's write-back ------------------------------------------------------------


async def test_the_last_progress_is_written_ahead_of_the_outcome_of_the_same_batch() -> None:
    store = MemoryStore()
    job = (await store.submit(NewJob("echo"))).job
    (claimed,) = await store.claim("n", 1, lease=30)
    writes: list[str] = []

    async def finish(batch: list[Outcome], starts: list[Any]) -> dict[int, State]:
        writes.append("finish")
        return await store.finish("n", batch, starts)

    async def record(reports: list[Any]) -> list[int]:
        writes.append(f"progress {[r.progress for r in reports]}")
        return await store.record_progress("n", reports)

    health = StoreHealth(heartbeat_seconds=10)
    writeback = WriteBack(finish, JobEvents(Metrics(), verbose=False), health, record)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    writeback.progress(claimed, {"current": 1}, at)
    writeback.progress(claimed, {"current": 2}, at)  # the latest per job wins
    writeback.record(Outcome(job.id, 1, OutcomeKind.COMPLETED, result=None), claimed)
    writeback.close()
    await writeback.run()
    assert writes == ["progress [{'current': 2}]", "finish"]
    done = await store.get(job.id)
    assert (done.state, done.progress, done.progress_at) == (State.COMPLETED, {"current": 2}, at)


# --- the job object and jobctl ----------------------------------------------------------------


def reported_job(progress: Any) -> Job:
    new = Job.new(7, NewJob("echo"), NOW)
    return dataclasses.replace(
        new, progress=progress, progress_at=None if progress is None else NOW
    )


def test_the_job_object_carries_progress_and_its_time() -> None:
    wire = reported_job(None).to_dict()
    assert (wire["progress"], wire["progress_at"]) == (None, None)
    wire = reported_job({"current": 3}).to_dict()
    assert wire["progress"] == {"current": 3} and wire["progress_at"] == "2030-01-02T03:04:05Z"
    view = job_from_dict(wire)
    assert (view.progress, view.progress_at, view.extra) == ({"current": 3}, NOW, {})
    older = job_from_dict({k: v for k, v in wire.items() if not k.startswith("progress")})
    assert (older.progress, older.progress_at) == (None, None)  # a daemon before it


@pytest.mark.parametrize(
    ("progress", "shown"),
    [
        ({"current": 3, "total": 10, "message": "resizing"}, "3/10 (30%) resizing"),
        ({"current": 3}, "3"),
        ({"current": 2.5, "total": 0}, "2.5/0"),
        ({"current": 1, "total": 4, "file": "a.png"}, '1/4 (25%) {"file": "a.png"}'),
        ({"rows": 10}, '{"rows": 10}'),
        ("half way", '"half way"'),
    ],
)
def test_progress_as_jobctl_shows_it(progress: Any, shown: str) -> None:
    assert progress_text(progress) == shown


def test_jobctl_status_has_a_progress_line_after_finished() -> None:
    lines = job_detail(job_from_dict(reported_job({"current": 1, "total": 2}).to_dict()))
    labels = [line.split(":")[0] for line in lines.splitlines()]
    assert labels[labels.index("finished") + 1] == "progress"
    assert "1/2 (50%) at " in lines.splitlines()[labels.index("progress")]
    plain = job_detail(job_from_dict(reported_job(None).to_dict())).splitlines()
    assert "progress" not in [line.split(":")[0] for line in plain]
