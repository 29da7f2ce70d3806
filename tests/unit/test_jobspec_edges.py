"""Hostile edge values at submit: refused by the job spec, as invalid_params naming the field,
the same way whichever path a job comes by (the control protocol, jobd.enqueue)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from jobd.control import Operations
from jobd.errors import InvalidParams
from jobd.handlers import HandlerSpec, Registry
from jobd.jobspec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    JobSpec,
    check_payload_size,
    parse_job_spec,
    payload_size,
)
from jobd.protocol import SubmitManyParams
from jobd.store.memory import MemoryStore

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def refusal(params: dict[str, Any]) -> InvalidParams:
    with pytest.raises(InvalidParams) as caught:
        parse_job_spec(params).to_new_job(3, None, NOW)
    return caught.value


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"type": "echo", "payload": {"s": "a\u0000b"}}, "payload.s"),
        ({"type": "echo", "payload": {"k\u0000": 1}}, "payload"),
        ({"type": "echo", "payload": {"l": ["\ud83d"]}}, "payload.l[0]"),
        ({"type": "echo", "run_at": "9999-12-31T23:59:59-23:59"}, "run_at"),
        ({"type": "echo", "run_at": "0001-01-01T00:00:00+01:00"}, "run_at"),
        ({"type": "echo", "idempotency_key": "k\u0000"}, "idempotency_key"),
        ({"type": "echo", "correlation_id": "\udc00"}, "correlation_id"),
        ({"type": "echo", "priority": 2**31}, "priority"),
        ({"type": "echo", "priority": -(2**31) - 1}, "priority"),
        ({"type": "echo", "priority": 10**400}, "priority"),
        ({"type": "e" * 201}, "type"),
        ({"type": "echo", "idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_a_value_no_store_can_hold_is_refused_naming_its_field(
    params: dict[str, Any], field: str
) -> None:
    assert refusal(params).field == field


def test_a_far_past_run_at_is_accepted() -> None:
    spec = parse_job_spec({"type": "echo", "run_at": "0001-01-01T00:00:00Z"})
    assert spec.to_new_job(3, None, NOW).run_at == datetime(1, 1, 1, tzinfo=UTC)


def test_payload_size_counts_compact_json_in_utf8() -> None:
    assert payload_size({"a": "é"}) == len('{"a":"é"}'.encode())


def test_a_payload_over_the_limit_names_the_limit() -> None:
    check_payload_size({"a": "x" * 90}, 100, "jobs.max_payload_bytes")
    with pytest.raises(InvalidParams) as caught:
        check_payload_size({"a": "x" * 100}, 100, "jobs.max_payload_bytes")
    assert caught.value.field == "payload"
    assert "100" in str(caught.value) and "jobs.max_payload_bytes" in str(caught.value)


def test_the_limits_are_one_and_sixteen_mib() -> None:
    assert (DEFAULT_MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES) == (2**20, 16 * 2**20)


# --- the control protocol's submit and submit_many ------------------------------------------


class _Supervisor:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.registry = Registry()
        self.registry.register(HandlerSpec("echo", lambda ctx, p: p))
        self.node = "node-a"
        self.settings = SimpleNamespace(workers=1)

    def job_events(self, event: str, jobs: list[Any], source: str | None) -> None:
        pass


@pytest.fixture
def ops() -> Operations:
    return Operations(_Supervisor(), max_payload_bytes=1000)  # type: ignore[arg-type]


async def test_submit_refuses_a_payload_over_the_configured_limit(ops: Operations) -> None:
    await ops.submit(JobSpec("echo", {"s": "x" * 900}))
    with pytest.raises(InvalidParams) as caught:
        await ops.submit(JobSpec("echo", {"s": "x" * 1000}))
    assert caught.value.field == "payload"
    assert "1000" in str(caught.value) and "jobs.max_payload_bytes" in str(caught.value)


async def test_submit_many_names_the_job_over_the_limit(ops: Operations) -> None:
    jobs = [JobSpec("echo", {}), JobSpec("echo", {"s": "x" * 1000})]
    with pytest.raises(InvalidParams) as caught:
        await ops.submit_many(SubmitManyParams(jobs))
    assert caught.value.field == "jobs[1].payload"
    assert (await ops.store.counts()).by_state()["pending"] == 0


async def test_submit_refuses_a_nul_before_the_store_sees_it(ops: Operations) -> None:
    with pytest.raises(InvalidParams) as caught:
        await ops.submit(JobSpec("echo", {"s": "\u0000"}))
    assert caught.value.field == "payload.s"


def test_the_default_limit_is_the_configured_default() -> None:
    assert Operations(_Supervisor()).max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES  # type: ignore[arg-type]


# --- jobd.enqueue: no daemon configuration, so the absolute limit ---------------------------


class _NoDatabase:
    def execute(self, *args: Any) -> Any:
        raise AssertionError("enqueue reached the database with an invalid job")


@pytest.mark.parametrize(
    ("payload", "options", "field"),
    [
        ({"s": "x" * MAX_PAYLOAD_BYTES}, {}, "payload"),
        ({"s": "\u0000"}, {}, "payload.s"),
        ({}, {"run_at": "9999-12-31T23:59:59-23:59"}, "run_at"),
        ({}, {"correlation_id": "c\u0000"}, "correlation_id"),
    ],
)
def test_enqueue_refuses_the_same_edge_values(
    payload: dict[str, Any], options: dict[str, Any], field: str
) -> None:
    import jobd

    with pytest.raises(InvalidParams) as caught:
        jobd.enqueue(_NoDatabase(), "echo", payload, **options)  # type: ignore[arg-type]
    assert caught.value.field == field
    if field == "payload":
        assert str(MAX_PAYLOAD_BYTES) in str(caught.value)


def test_enqueue_takes_a_payload_over_the_configurable_default() -> None:
    import jobd

    class _Recorder:
        def execute(self, query: str, params: dict[str, Any]) -> Any:
            return SimpleNamespace(fetchone=lambda: (7,))

    big = {"s": "x" * (2 * DEFAULT_MAX_PAYLOAD_BYTES)}
    assert jobd.enqueue(_Recorder(), "echo", big) == 7  # type: ignore[arg-type]
