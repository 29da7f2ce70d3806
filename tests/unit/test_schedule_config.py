"""Declaring schedules: the configuration file's `schedules:` section and `jobd.schedule(...)`
in code, read by one reader; a bad field names the schedule and the field (exit status 2), and
a name defined twice is refused."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobd
from jobd.config import ConfigError, load_config
from jobd.schedules import CatchUp, Overlap, ScheduleError, parse_schedule, registry

HOME = {"HOME": "/home/u"}


@pytest.fixture(autouse=True)
def no_declared() -> Iterator[None]:
    saved = list(registry.declared)
    registry.declared.clear()
    yield
    registry.declared[:] = saved


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobd.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_issue_s_example_loads(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """\
        schedules:
          nightly-report:
            cron: "0 2 * * *"
            timezone: Europe/Berlin
            type: generate_report
            payload: {input: sales.csv, group_by: region, output: reports/nightly.html}
            queue: reports
            catch_up: once
            catch_up_window: 1d
            overlap: allow
          heartbeat:
            every: 30s
            type: echo
            overlap: skip
            catch_up: all
        """,
    )
    schedules = load_config(path, env=HOME).schedules
    nightly, beat = schedules["nightly-report"], schedules["heartbeat"]
    assert (nightly.cron, nightly.timezone, nightly.job.queue) == (
        "0 2 * * *",
        "Europe/Berlin",
        "reports",
    )
    assert nightly.job.payload["group_by"] == "region"
    assert (nightly.catch_up, nightly.catch_up_window) == (CatchUp.ONCE, 86400.0)
    assert (beat.every, beat.overlap, beat.catch_up) == (30, Overlap.SKIP, CatchUp.ALL)


def test_no_schedules_by_default() -> None:
    assert load_config(env=HOME).schedules == {}


def test_a_bad_field_names_the_schedule_and_the_field(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """\
        schedules:
          nightly-report:
            cron: "0 25 * * *"
            type: echo
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=HOME)
    assert caught.value.key == "schedules.nightly-report.cron"
    assert caught.value.exit_code == 2
    assert "not a valid cron expression" in caught.value.problem
    assert "got {" not in caught.value.problem  # the field is named: no dump of the mapping


def test_a_schedule_round_trips_through_its_fields() -> None:
    s = parse_schedule(
        "n",
        {
            "cron": "0 2 * * *",
            "timezone": "Europe/Berlin",
            "type": "echo",
            "payload": {"a": 1},
            "priority": 3,
            "catch_up": "all",
        },
    )
    assert parse_schedule("n", s.as_fields()) == s


def test_jobd_schedule_declares_in_code() -> None:
    declared = jobd.schedule("cleanup", every="1h", type="echo", payload={"x": 1})
    assert declared.every == 3600
    assert [d.schedule for d in registry.declared] == [declared]
    assert registry.declared[0].module == __name__


def test_jobd_schedule_refuses_a_bad_field_at_once() -> None:
    with pytest.raises(ScheduleError) as caught:
        jobd.schedule("cleanup", every="1h", type="echo", timezone="Nowhere/Land")
    assert (caught.value.name, caught.value.field) == ("cleanup", "timezone")


def test_a_name_defined_in_the_file_and_in_code_is_refused() -> None:
    in_file = {"cleanup": parse_schedule("cleanup", {"every": "1h", "type": "echo"})}
    jobd.schedule("cleanup", every="2h", type="echo")
    with pytest.raises(
        ScheduleError, match="defined twice: in the configuration file and in module"
    ):
        registry.node_schedules(in_file, registry.declared, {"echo"})


def test_a_name_defined_twice_in_code_is_refused() -> None:
    jobd.schedule("cleanup", every="1h", type="echo")
    jobd.schedule("cleanup", every="2h", type="echo")
    with pytest.raises(ScheduleError, match="defined twice"):
        registry.node_schedules({}, registry.declared, {"echo"})


def test_a_type_no_handler_runs_is_refused() -> None:
    jobd.schedule("report", every="1h", type="generate_report")
    with pytest.raises(ScheduleError) as caught:
        registry.node_schedules({}, registry.declared, {"echo"})
    assert (caught.value.name, caught.value.field) == ("report", "type")


def test_the_node_s_schedules_by_name() -> None:
    in_file = {"a": parse_schedule("a", {"every": "1h", "type": "echo"})}
    b = jobd.schedule("b", cron="*/5 * * * *", type="echo")
    assert registry.node_schedules(in_file, registry.declared, {"echo"}) == {**in_file, "b": b}
