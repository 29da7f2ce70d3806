"""The schedule methods of the control server in-process (over a memory store and a stand-in
supervisor), and the warning a node gives when another node defines one of its schedules
differently.  tests/integration/test_schedule_ops.py does it through a real `jobd run`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jobd.control import Operations
from jobd.errors import CODES, Conflict, UnknownSchedule
from jobd.protocol import NoParams, ScheduleParams, parse_list
from jobd.schedules import Schedule, parse_schedule
from jobd.store.memory import MemoryStore
from jobd.supervisor.schedules import DIFFERENCE_SHOWN, ScheduleMetrics, ScheduleRunner
from tests.unit.test_control import FakeSupervisor, make_registry

NIGHTLY = parse_schedule(
    "nightly", {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "type": "echo", "queue": "q"}
)
PULSE = parse_schedule("pulse", {"every": "30s", "type": "echo"})


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def sup(store: MemoryStore) -> FakeSupervisor:
    supervisor = FakeSupervisor(store, make_registry())
    supervisor.warnings = []  # type: ignore[attr-defined]
    supervisor.status = SimpleNamespace(  # type: ignore[attr-defined]
        schedule_warnings=lambda: list(supervisor.warnings)  # type: ignore[attr-defined]
    )
    return supervisor


@pytest.fixture
def ops(sup: FakeSupervisor) -> Operations:
    operations = Operations(sup, default_max_attempts=4, schedules=(NIGHTLY, PULSE))
    operations.open()
    return operations


async def call(ops: Operations, method: str, params: Any = None) -> Any:
    return await ops._handlers[method](params if params is not None else NoParams())


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {view["name"]: view for view in result["schedules"]}


async def test_schedules_lists_this_nodes_definitions_and_the_databases_rows(
    ops: Operations, store: MemoryStore
) -> None:
    other = parse_schedule("elsewhere", {"every": "1m", "type": "echo"})
    await store.enqueue_ticks(other)  # a row written by a node that defines it (not this one)
    views = by_name(await call(ops, "schedules"))
    assert list(views) == ["elsewhere", "nightly", "pulse"]

    nightly = views["nightly"]
    assert nightly["defined_here"] and nightly["spec"] == "cron 0 2 * * *"
    assert (nightly["cron"], nightly["every"]) == ("0 2 * * *", None)
    assert (nightly["timezone"], nightly["type"], nightly["queue"]) == (
        "Europe/Berlin",
        "echo",
        "q",
    )
    assert nightly["definition"] == NIGHTLY.definition_hash
    next_tick = datetime.fromisoformat(nightly["next_tick"])
    assert next_tick > datetime.now(UTC) and next_tick.astimezone(NIGHTLY.zone).hour == 2
    # No node has written its row yet: the fleet's members are empty.
    assert (nightly["last_tick"], nightly["last_job_id"], nightly["paused"]) == (None, None, False)
    assert views["pulse"]["every"] == 30 and views["pulse"]["spec"] == "every 30s"

    removed = views["elsewhere"]
    assert removed["defined_here"] is False
    assert removed["spec"] is None and removed["next_tick"] is None
    assert removed["fleet_definition"] == other.definition_hash


async def test_pause_and_resume_are_the_fleets_and_shown(
    ops: Operations, store: MemoryStore
) -> None:
    paused = await call(ops, "schedule_pause", ScheduleParams("pulse"))
    assert paused["schedule"]["paused"] is True and paused["schedule"]["name"] == "pulse"
    (record,) = await store.schedule_records()
    assert record.paused
    assert by_name(await call(ops, "schedules"))["pulse"]["paused"] is True
    again = await call(ops, "schedule_pause", ScheduleParams("pulse"))  # no error, no change
    assert again["schedule"]["paused"] is True

    resumed = await call(ops, "schedule_resume", ScheduleParams("pulse"))
    assert resumed["schedule"]["paused"] is False
    assert not (await store.schedule_records())[0].paused


async def test_a_schedule_only_in_the_database_can_be_paused_here(
    ops: Operations, store: MemoryStore
) -> None:
    await store.enqueue_ticks(parse_schedule("elsewhere", {"every": "1m", "type": "echo"}))
    result = await call(ops, "schedule_pause", ScheduleParams("elsewhere"))
    assert result["schedule"]["paused"] and not result["schedule"]["defined_here"]


@pytest.mark.parametrize("method", ["schedule_pause", "schedule_resume", "schedule_trigger"])
async def test_an_unknown_schedule_is_named_with_the_known_ones(
    ops: Operations, store: MemoryStore, method: str
) -> None:
    with pytest.raises(UnknownSchedule) as caught:
        await call(ops, method, ScheduleParams("nightley"))
    error = caught.value
    assert error.field == "name" and "'nightley'" in error.message and "'nightly'" in error.message
    assert error.data["known"] == ["nightly", "pulse"]
    assert (error.info.exit_status, error.info.http_status) == (2, 404)
    assert CODES["unknown_schedule"] is error.info
    assert await store.schedule_records() == []  # nothing written for a mistyped name


async def test_trigger_creates_one_job_now_even_while_paused(
    ops: Operations, sup: FakeSupervisor
) -> None:
    await call(ops, "schedule_pause", ScheduleParams("nightly"))
    job = (await call(ops, "schedule_trigger", ScheduleParams("nightly")))["job"]
    assert (job["type"], job["queue"], job["schedule"], job["state"]) == (
        "echo",
        "q",
        "nightly",
        "pending",
    )
    assert job["max_attempts"] == 4  # the node's default, as for its ticks
    assert ("submitted", "echo", "q") in sup.metrics.events
    view = by_name(await call(ops, "schedules"))["nightly"]
    assert (view["last_job_id"], view["last_job_state"]) == (job["id"], "pending")


async def test_a_schedule_this_node_does_not_define_cannot_be_triggered_here(
    ops: Operations, store: MemoryStore
) -> None:
    await store.enqueue_ticks(parse_schedule("elsewhere", {"every": "1m", "type": "echo"}))
    with pytest.raises(Conflict, match="not defined on this node"):
        await call(ops, "schedule_trigger", ScheduleParams("elsewhere"))


async def test_list_filters_by_schedule_page_after_page(ops: Operations) -> None:
    ids = [
        (await call(ops, "schedule_trigger", ScheduleParams("pulse")))["job"]["id"] for _ in "abc"
    ]
    await call(ops, "schedule_trigger", ScheduleParams("nightly"))
    first = await ops.list(parse_list({"schedule": "pulse", "limit": 2}))
    rest = await ops.list(parse_list({"schedule": "pulse", "cursor": first["next_cursor"]}))
    listed = [job["id"] for job in first["jobs"] + rest["jobs"]]
    assert listed == sorted(ids, reverse=True) and rest["next_cursor"] is None


async def test_health_warns_of_a_schedule_defined_differently_elsewhere(
    ops: Operations, sup: FakeSupervisor
) -> None:
    assert "warnings" not in await ops.health(NoParams())  # none, and no fleet to ask
    warning = "schedule pulse: defined differently on another node"
    sup.warnings.append(warning)  # type: ignore[attr-defined]
    health = await ops.health(NoParams())
    assert health["status"] == "ok"  # a warning: each node still enqueues once per tick
    assert health["warnings"] == [warning]


# --- the runner's side: detecting the difference ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def runner(store: MemoryStore, schedule: Schedule, clock: Clock) -> ScheduleRunner:
    metrics = ScheduleMetrics(CollectorRegistry())
    return ScheduleRunner(store, [schedule], 3, metrics, trouble=lambda *_: None, clock=clock)


async def test_a_runner_warns_once_per_other_definition_and_health_forgets_it_later(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    old = parse_schedule("pulse", {"every": "30s", "type": "echo"})
    new = parse_schedule("pulse", {"every": "30s", "type": "echo", "priority": 5})
    clock = Clock()
    here = runner(store, new, clock)
    await store.enqueue_ticks(old)  # the other node wrote the row last
    assert here.warnings() == []

    with caplog.at_level(logging.WARNING, "jobd.schedules"):
        for _ in range(3):
            await here.ask(new)
            await store.enqueue_ticks(old)
    logged = [r for r in caplog.records if "defined differently" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].__dict__["schedule"] == "pulse"
    assert logged[0].__dict__["definition"] == new.definition_hash
    assert logged[0].__dict__["other_definition"] == old.definition_hash

    (warning,) = here.warnings()
    assert warning.startswith("schedule pulse: defined differently on another node")
    assert old.definition_hash in warning and new.definition_hash in warning

    clock.now += DIFFERENCE_SHOWN + timedelta(seconds=1)
    assert here.warnings() == []  # not met again for an hour: the deploy finished


async def test_pause_resume_and_trigger_are_in_the_audit_trail(
    ops: Operations, store: MemoryStore
) -> None:
    await call(ops, "schedule_pause", ScheduleParams("nightly"))
    await call(ops, "schedule_resume", ScheduleParams("nightly"))
    job = (await call(ops, "schedule_trigger", ScheduleParams("pulse")))["job"]
    entries = [record.entry for record in await store.audit_records(10)]
    actions = sorted((e.action, e.target) for e in entries)
    assert actions == [
        ("schedule_pause", "nightly"),
        ("schedule_resume", "nightly"),
        ("schedule_trigger", "pulse"),
    ]
    trigger = next(e for e in entries if e.action == "schedule_trigger")
    assert trigger.details["job"] == job["id"]


async def test_an_ask_that_fails_unexpectedly_is_logged_and_the_next_one_goes_on(
    store: MemoryStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only an unreachable store: any fault of one ask (a constraint the database refuses,
    say) must leave the runner, and so the node, running."""
    here = runner(store, PULSE, Clock())
    real = store.enqueue_ticks

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("duplicate key value violates unique constraint")

    monkeypatch.setattr(store, "enqueue_ticks", refused)
    with caplog.at_level(logging.ERROR, "jobd.schedules"):
        await here.ask(PULSE)
    (logged,) = [r for r in caplog.records if "schedule ask failed" in r.getMessage()]
    assert logged.__dict__["schedule"] == "pulse" and logged.exc_info

    monkeypatch.setattr(store, "enqueue_ticks", real)
    await here.ask(PULSE)
    assert [record.name for record in await store.schedule_records()] == ["pulse"]
