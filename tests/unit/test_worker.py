"""The worker's side of the pipe: what it says for the jobs it is given.  A real worker
process (jobd.worker.main, as the supervisor starts it) over a real pipe, with the built-in
handlers: `echo` returns its payload, and an unknown type fails."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from jobd import pipe
from jobd import worker as worker_module
from jobd.pipe import (
    AskParents,
    Cancel,
    Done,
    Failed,
    FailureKind,
    FromWorker,
    Many,
    ParentResults,
    Ready,
    Released,
    Report,
    Run,
    RunJob,
    Started,
    Stop,
)


def _job(job_id: int, job_type: str = "echo", payload: dict[str, Any] | None = None) -> RunJob:
    payload = {"n": job_id} if payload is None else payload
    return RunJob(job_id, 1, 3, job_type, "default", payload, f"c{job_id}", None)


def _flat(message: FromWorker) -> list[Report]:
    if isinstance(message, Many):
        return [part for m in message.messages for part in _flat(m)]
    return [message]


def _ids(reports: list[Report]) -> list[tuple[type, int]]:
    return [(type(r), getattr(r, "job_id", 0)) for r in reports]


@pytest.fixture
def worker() -> Iterator[Connection]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=worker_module.main, args=(1, theirs, ["jobd.handlers.builtin"]), daemon=True
    )
    process.start()
    theirs.close()
    try:
        assert ours.poll(30) and isinstance(pipe.receive_from_worker(ours), Ready)
        yield ours
        with contextlib.suppress(OSError):  # a test may have stopped it already
            pipe.send(ours, Stop())
        process.join(10)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
        ours.close()


def _receive(conn: Connection, count: int) -> tuple[list[Report], int]:
    """`count` reports (flattened) and how many messages carried them."""
    got: list[Report] = []
    messages = 0
    while len(got) < count:
        assert conn.poll(10), f"only {got} after 10 s"
        got += _flat(pipe.receive_from_worker(conn))
        messages += 1
    return got, messages


def test_jobs_sent_together_are_run_in_order_and_each_start_rides_with_the_last_report(
    worker: Connection,
) -> None:
    pipe.send(worker, Run((_job(1), _job(2, "nope"), _job(3))))
    got, messages = _receive(worker, 6)
    assert _ids(got) == [
        (Started, 1),
        (Done, 1),
        (Started, 2),
        (Failed, 2),
        (Started, 3),
        (Done, 3),
    ]
    assert got[1] == Done(1, {"n": 1}) and got[5] == Done(3, {"n": 3})
    assert isinstance(got[3], Failed)
    failure = got[3].failure
    assert failure.kind is FailureKind.PERMANENT
    assert "unknown job type 'nope'" in failure.error.message
    assert messages == 4  # start 1; done 1 + start 2; fail 2 + start 3; done 3


def test_the_last_report_is_sent_at_once_when_nothing_is_queued(worker: Connection) -> None:
    pipe.send(worker, Run((_job(7),)))
    got, _ = _receive(worker, 2)
    assert _ids(got) == [(Started, 7), (Done, 7)]  # not held for a next job


def test_a_stop_gives_back_queued_jobs_and_still_reports_the_running_one(
    worker: Connection,
) -> None:
    pipe.send(worker, Run((_job(1, "sleep", {"seconds": 1}), _job(2))))
    got, _ = _receive(worker, 1)
    assert got == [Started(1)]
    pipe.send(worker, Stop())  # job 1 runs to its end; job 2, queued behind it, goes back
    got, _ = _receive(worker, 2)
    assert _ids(got) == [(Released, 2), (Done, 1)]
    assert worker.poll(10)
    with pytest.raises(EOFError):  # and then nothing: the worker has left
        pipe.receive_from_worker(worker)


# --- ctx.parent_results(): asked over the pipe, answered by the supervisor --------------------


@pytest.fixture
def gatherer() -> Iterator[Connection]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    modules = ["tests.unit.parent_handlers"]
    process = context.Process(target=worker_module.main, args=(1, theirs, modules), daemon=True)
    process.start()
    theirs.close()
    try:
        assert ours.poll(30) and isinstance(pipe.receive_from_worker(ours), Ready)
        yield ours
    finally:
        process.kill()
        ours.close()


def test_a_handler_asks_for_its_parents_results_and_gets_the_answer(gatherer: Connection) -> None:
    pipe.send(gatherer, Run((_job(4, "wf_gather"),)))
    got, _ = _receive(gatherer, 2)
    assert got == [Started(4), AskParents(4)]
    pipe.send(gatherer, ParentResults(99, {1: "stale"}))  # another job's: ignored
    pipe.send(gatherer, ParentResults(4, {2: {"v": 1}, 3: None}))
    (done,), _ = _receive(gatherer, 1)
    assert done == Done(4, {"2": {"v": 1}, "3": None})


def test_an_unanswered_ask_fails_the_attempt_and_a_cancel_stops_the_wait(
    gatherer: Connection,
) -> None:
    pipe.send(gatherer, Run((_job(5, "wf_gather"), _job(6, "wf_gather"))))
    _receive(gatherer, 2)
    pipe.send(gatherer, ParentResults(5, {}, "store unavailable: timed out"))
    got, _ = _receive(gatherer, 3)
    assert isinstance(got[0], Failed) and got[0].failure.kind is FailureKind.ERROR
    assert got[0].failure.error.type == "ParentResultsUnavailable"
    assert got[1:] == [Started(6), AskParents(6)]
    pipe.send(gatherer, Cancel(6))
    (stopped,), _ = _receive(gatherer, 1)
    assert isinstance(stopped, Failed) and stopped.failure.kind is FailureKind.CANCELLED
