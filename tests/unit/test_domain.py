"""The job's state machine and retry policy, with no store and no clock of their own."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.domain import (
    PARENT_FAILED,
    TERMINAL_STATES,
    Backoff,
    ErrorInfo,
    IllegalTransition,
    InvalidJob,
    Job,
    NewJob,
    ParentFailure,
    PermanentError,
    RetryLater,
    State,
    build_job,
    failed_parent,
    is_poison,
    next_run_at,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ERR = ErrorInfo("ValueError", "boom", "Traceback (most recent call last): ...")


def new_job(**kw: object) -> Job:
    return Job.new(1, NewJob(type="echo", **kw), T0)  # type: ignore[arg-type]


def running(**kw: object) -> Job:
    return new_job(**kw).claim("n1", T0 + timedelta(seconds=30), T0)


# --- NewJob validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "a\nb"}, "type"),
        ({"type": " padded"}, "type"),
        ({"type": "x" * 201}, "type"),
        ({"queue": ""}, "queue"),
        ({"payload": [1, 2]}, "payload"),
        ({"priority": "high"}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 2**31}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1001}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "1"}, "timeout"),
        ({"timeout": 10**9}, "timeout"),
        ({"run_at": datetime(2026, 1, 1)}, "run_at"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"correlation_id": "c" * 256}, "correlation_id"),
    ],
)
def test_new_job_rejects_bad_fields_naming_them(changes: dict, field: str) -> None:
    fields = {"type": "echo", **changes}
    with pytest.raises(InvalidJob) as info:
        NewJob(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_new_job_defaults() -> None:
    job = new_job()
    assert job.state is State.PENDING
    assert (job.queue, job.priority, job.attempts, job.max_attempts) == ("default", 0, 0, 3)
    assert job.run_at == T0 and job.created_at == T0
    assert job.attempts_left == 3


# --- transitions ------------------------------------------------------------------------


def test_claim_counts_attempt_and_sets_lease() -> None:
    job = running()
    assert job.state is State.RUNNING and job.attempts == 1
    assert job.lease_owner == "n1" and job.lease_expires_at == T0 + timedelta(seconds=30)
    assert job.started_at is None  # claimed is not started: its worker says when it starts
    started = job.start(T0 + timedelta(seconds=2))
    assert started.state is State.RUNNING and started.started_at == T0 + timedelta(seconds=2)


def test_claim_refused_when_no_attempts_left() -> None:
    job = dataclasses.replace(new_job(max_attempts=1), attempts=1)
    with pytest.raises(IllegalTransition, match="no attempts left"):
        job.claim("n1", T0, T0)


def test_complete_clears_lease() -> None:
    job = running().complete({"ok": True}, T0)
    assert job.state is State.COMPLETED and job.result == {"ok": True}
    assert job.lease_owner is None and job.finished_at == T0


def test_fail_attempt_with_retry_time_returns_to_pending() -> None:
    later = T0 + timedelta(seconds=5)
    job = running().fail_attempt(ERR, later, T0)
    assert job.state is State.PENDING and job.run_at == later and job.last_error == ERR
    assert job.attempts == 1 and job.lease_owner is None


def test_fail_attempt_without_retry_or_attempts_fails() -> None:
    assert running().fail_attempt(ERR, None, T0).state is State.FAILED
    last = running(max_attempts=1).fail_attempt(ERR, T0, T0)
    assert last.state is State.FAILED and last.finished_at == T0


def test_fail_attempt_counts_crashes() -> None:
    assert running().fail_attempt(ERR, T0, T0, crashed=True).crashes == 1


def test_cancel_request_wins_over_retry_and_release() -> None:
    job = running().request_cancel(T0)
    assert job.state is State.RUNNING and job.cancel_requested
    assert job.fail_attempt(ERR, T0, T0).state is State.CANCELED
    released = job.release(T0)
    assert released.state is State.CANCELED and not released.cancel_requested


def test_release_gives_attempt_back() -> None:
    job = running().release(T0)
    assert job.state is State.PENDING and job.attempts == 0


def test_recover_spends_attempt() -> None:
    job = running().recover(T0)
    assert job.state is State.PENDING and job.attempts == 1
    assert job.last_error is not None and job.last_error.type == "LeaseExpired"
    assert running(max_attempts=1).recover(T0).state is State.FAILED


def test_request_cancel_pending_cancels_at_once() -> None:
    job = new_job().request_cancel(T0)
    assert job.state is State.CANCELED and job.finished_at == T0


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_request_cancel_of_finished_job_is_illegal(state: State) -> None:
    job = dataclasses.replace(new_job(), state=state)
    with pytest.raises(IllegalTransition, match=f"cannot cancel job 1: it is {state.value}"):
        job.request_cancel(T0)


def test_operator_retry_resets_attempts() -> None:
    failed = running().fail_attempt(ERR, None, T0, crashed=True)
    again = failed.operator_retry(T0 + timedelta(1))
    assert again.state is State.PENDING and again.attempts == 0 and again.crashes == 0
    assert again.finished_at is None and again.run_at == T0 + timedelta(1)


@pytest.mark.parametrize("state", [State.PENDING, State.RUNNING, State.COMPLETED])
def test_operator_retry_only_from_failed_or_canceled(state: State) -> None:
    with pytest.raises(IllegalTransition):
        dataclasses.replace(new_job(), state=state).operator_retry(T0)


def test_illegal_transitions_are_refused() -> None:
    with pytest.raises(IllegalTransition):
        new_job().complete(None, T0)
    with pytest.raises(IllegalTransition):
        new_job().fail_attempt(ERR, None, T0)
    with pytest.raises(IllegalTransition):
        running().claim("n", T0, T0)
    with pytest.raises(IllegalTransition):
        new_job().release(T0)


def test_to_dict_is_json_friendly() -> None:
    data = running(correlation_id="c1").fail_attempt(ERR, T0, T0).to_dict()
    assert data["state"] == "pending"
    assert data["run_at"] == "2026-01-01T00:00:00Z"
    assert data["last_error"] == ERR.to_dict()
    assert data["correlation_id"] == "c1"
    assert data["finished_at"] is None
    assert ErrorInfo.from_dict(data["last_error"]) == ERR
    assert ErrorInfo.from_dict(None) is None


# --- backoff and retry decisions ----------------------------------------------------------


def test_backoff_grows_exponentially_and_caps() -> None:
    b = Backoff(base=1, factor=2, max_delay=10, jitter=False)
    assert [b.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert Backoff(base=1, factor=10, max_delay=5).ceiling(10_000) == 5


def test_backoff_full_jitter_is_deterministic_under_injected_random() -> None:
    b = Backoff(base=2, factor=3, max_delay=100)
    assert b.delay(3, rng=lambda: 0.5) == 9.0
    assert b.delay(3, rng=lambda: 0.0) == 0.0
    r1, r2 = random.Random(7), random.Random(7)
    assert [b.delay(4, r1.random) for _ in range(5)] == [b.delay(4, r2.random) for _ in range(5)]


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
    with pytest.raises(ValueError):
        Backoff(base=-1)
    with pytest.raises(ValueError):
        RetryLater(-1)


def test_next_run_at() -> None:
    b = Backoff(base=4, factor=2, jitter=False)
    job = running()
    assert next_run_at(job, ValueError("x"), b, T0) == T0 + timedelta(seconds=4)
    assert next_run_at(job, RetryLater(42), b, T0) == T0 + timedelta(seconds=42)
    assert next_run_at(job, PermanentError("no"), b, T0) is None
    assert next_run_at(running(max_attempts=1), ValueError("x"), b, T0) is None


def test_poison_job() -> None:
    job = running()
    for _ in range(3):
        job = job.fail_attempt(ERR, T0, T0, crashed=True)
        if job.state is State.PENDING:
            job = job.claim("n1", T0, T0)
    assert is_poison(job, 3) and not is_poison(job, 4)


# --- property: no sequence of operations breaks the invariants ---------------------------

OPS = st.sampled_from(
    [
        "claim",
        "complete",
        "fail_retry",
        "fail_final",
        "crash",
        "release",
        "recover",
        "cancel",
        "operator_retry",
    ]
)


def apply(job: Job, op: str, now: datetime) -> Job:
    later = now + timedelta(seconds=1)
    match op:
        case "claim":
            return job.claim("n1", later, now)
        case "complete":
            return job.complete({"r": 1}, now)
        case "fail_retry":
            return job.fail_attempt(ERR, later, now)
        case "fail_final":
            return job.fail_attempt(ERR, None, now)
        case "crash":
            return job.fail_attempt(ERR, later, now, crashed=True)
        case "release":
            return job.release(now)
        case "recover":
            return job.recover(now)
        case "cancel":
            return job.request_cancel(now)
        case _:
            return job.operator_retry(now)


def check_invariants(job: Job) -> None:
    assert job.state in set(State)
    assert 0 <= job.attempts <= job.max_attempts
    assert job.crashes >= 0
    holds_lease = job.lease_owner is not None
    assert holds_lease == (job.state is State.RUNNING)
    assert (job.lease_expires_at is not None) == holds_lease
    assert (job.finished_at is not None) == job.state.terminal
    assert not job.cancel_requested or job.state is State.RUNNING


@settings(max_examples=400, deadline=None)
@given(max_attempts=st.integers(1, 5), ops=st.lists(OPS, max_size=40))
def test_no_sequence_of_operations_breaks_the_invariants(max_attempts: int, ops: list[str]) -> None:
    job = new_job(max_attempts=max_attempts)
    now = T0
    for op in ops:
        now += timedelta(seconds=1)
        before = job
        try:
            job = apply(job, op, now)
        except IllegalTransition as exc:
            assert exc.current is before.state
            job = before
        check_invariants(job)


# --- workflows: a job that waits for its parents ------------------------------------------


def waiting(parents: int = 2, **kw: object) -> Job:
    job = Job.new(9, NewJob(type="echo", after=tuple(range(1, parents + 1)), **kw), T0)  # type: ignore[arg-type]
    return job.initial_wait(parents, None, T0)


def test_a_job_with_parents_starts_waiting_and_is_pending_when_the_last_ends() -> None:
    job = waiting(2)
    assert (job.state, job.pending_parents) == (State.WAITING, 2)
    job = job.parent_ended(1, State.COMPLETED, T0)
    assert (job.state, job.pending_parents) == (State.WAITING, 1)
    job = job.parent_ended(2, State.COMPLETED, T0 + timedelta(seconds=5))
    assert (job.state, job.pending_parents) == (State.PENDING, 0)
    assert job.run_at == T0 + timedelta(seconds=5)  # not ahead of jobs submitted meanwhile


def test_a_failed_parent_cancels_its_dependent_naming_it() -> None:
    job = waiting(2).parent_ended(2, State.FAILED, T0)
    assert job.state is State.CANCELED and job.finished_at == T0
    assert job.last_error is not None and job.last_error.type == PARENT_FAILED
    assert job.canceled_by_parent() == 2 and failed_parent(job.last_error) == 2


def test_on_parent_failure_run_runs_anyway() -> None:
    job = waiting(2, on_parent_failure=ParentFailure.RUN)
    job = job.parent_ended(1, State.CANCELED, T0).parent_ended(2, State.FAILED, T0)
    assert job.state is State.PENDING


def test_initial_wait_with_parents_already_ended() -> None:
    new = Job.new(9, NewJob(type="echo", after=(1, 2)), T0)
    assert new.initial_wait(0, None, T0).state is State.PENDING
    assert new.initial_wait(1, (2, State.FAILED), T0).state is State.CANCELED
    run = Job.new(9, NewJob(type="echo", after=(1,), on_parent_failure=ParentFailure.RUN), T0)
    assert run.initial_wait(0, (1, State.FAILED), T0).state is State.PENDING


def test_retry_of_the_failed_parent_brings_its_dependent_back_to_waiting() -> None:
    job = waiting(1).parent_ended(1, State.FAILED, T0)
    job = job.parent_retried(1, T0)
    assert (job.state, job.pending_parents, job.finished_at) == (State.WAITING, 1, None)
    other = waiting(1).request_cancel(T0)
    assert other.canceled_by_parent() is None
    with pytest.raises(IllegalTransition):
        other.parent_retried(1, T0)


def test_operator_retry_of_a_job_whose_parents_are_unfinished_waits() -> None:
    job = waiting(1).request_cancel(T0)
    assert job.state is State.CANCELED
    assert job.operator_retry(T0, unfinished_parents=1).state is State.WAITING
    assert job.operator_retry(T0).state is State.PENDING


@pytest.mark.parametrize(
    ("after", "field"),
    [((0,), "after[0]"), ((True,), "after[0]"), ((1, 1), "after"), ([1], "after")],
)
def test_after_is_checked_naming_the_field(after: object, field: str) -> None:
    with pytest.raises(InvalidJob) as info:
        NewJob(type="echo", after=after)  # type: ignore[arg-type]
    assert info.value.field == field


WORKFLOW_OPS = st.sampled_from(
    [
        "claim",
        "complete",
        "fail_final",
        "cancel",
        "operator_retry",
        "parent_completes",
        "parent_fails",
        "parent_retried",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    parents=st.integers(1, 3),
    policy=st.sampled_from(list(ParentFailure)),
    ops=st.lists(st.tuples(WORKFLOW_OPS, st.integers(0, 2)), max_size=40),
)
def test_a_dependent_never_runs_before_its_parents_ended(
    parents: int, policy: ParentFailure, ops: list[tuple[str, int]]
) -> None:
    """The stores call parent_ended on a waiting job for each parent that ends, and on a
    parent's retry parent_reopened (waiting) or parent_retried (canceled by it): whatever the
    order, a waiting job's count is its unfinished parents, it leaves `waiting` only when
    none is left (or by failure or cancel), and never runs while a parent is unfinished."""
    ended: dict[int, State | None] = {p: None for p in range(1, parents + 1)}
    job = waiting(parents, on_parent_failure=policy)
    now = T0
    for op, which in ops:
        now += timedelta(seconds=1)
        parent = 1 + which % parents
        before = job
        try:
            job = apply_workflow(job, op, parent, ended, now)
        except IllegalTransition as exc:
            assert exc.current is before.state
            job = before
        check_invariants(job)
        unfinished = sum(1 for state in ended.values() if state is None)
        if job.state is State.WAITING:
            assert job.pending_parents == unfinished
        if job.state in (State.PENDING, State.RUNNING) and before.state is State.WAITING:
            assert unfinished == 0


def apply_workflow(
    job: Job, op: str, parent: int, ended: dict[int, State | None], now: datetime
) -> Job:
    unfinished = sum(1 for state in ended.values() if state is None)
    match op:
        case "parent_completes" | "parent_fails" if ended[parent] is None:
            ended[parent] = State.COMPLETED if op == "parent_completes" else State.FAILED
            if job.state is State.WAITING:
                return job.parent_ended(parent, ended[parent], now)  # type: ignore[arg-type]
            return job
        case "parent_retried" if ended[parent] is State.FAILED:
            ended[parent] = None
            if job.state is State.WAITING:
                return job.parent_reopened(now)
            if job.canceled_by_parent() == parent:
                return job.parent_retried(unfinished + 1, now)
            return job
        case "operator_retry":
            return job.operator_retry(now, unfinished)
        case "parent_completes" | "parent_fails" | "parent_retried":
            return job
        case _:
            return apply(job, op, now)


def test_only_a_pending_job_can_be_made_due_or_reprioritised_and_the_refusal_says_so() -> None:
    done = dataclasses.replace(new_job(), state=State.COMPLETED)
    with pytest.raises(IllegalTransition, match="only a pending job's run time or priority"):
        done.adjust(T0, priority=5)


# --- building a Job by its slots (the hot paths' constructor) ---------------------------------


def test_build_job_makes_the_job_its_constructor_makes() -> None:
    """Every field set to a value of its own, none left at its default: a field set out of
    place, or not at all, shows."""
    values = [f"value of {f.name}" for f in dataclasses.fields(Job)]
    built = build_job(values)
    assert built == Job(*values)
    assert [getattr(built, f.name) for f in dataclasses.fields(Job)] == values


def test_build_job_refuses_a_wrong_count_and_stays_frozen() -> None:
    values = [None] * len(dataclasses.fields(Job))
    with pytest.raises(TypeError, match=f"Job has {len(values)} fields, not {len(values) - 1}"):
        build_job(values[:-1])
    with pytest.raises(TypeError, match="not " + str(len(values) + 1)):
        build_job([*values, None])
    with pytest.raises(dataclasses.FrozenInstanceError):
        build_job(values).id = 2  # type: ignore[misc]
