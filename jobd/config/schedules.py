"""The `schedules` setting: schedule name -> its definition, read by jobd.schedules'
one reader so that the file and `jobd.schedule(...)` accept the same fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobd.config.errors import Problem
from jobd.config.kinds import Kind
from jobd.schedules.definition import Schedule, ScheduleError, parse_schedule


@dataclass(frozen=True)
class Schedules(Kind):
    """name -> {cron or every, type, payload, …} in YAML (no environment form: a schedule's
    payload is a document, not a line)."""

    def parse(self, value: object) -> dict[str, Schedule]:
        if isinstance(value, Mapping) and all(isinstance(s, Schedule) for s in value.values()):
            return dict(value)  # a default, or values already read
        if not isinstance(value, Mapping):
            raise Problem("must be a mapping of schedule name to {cron or every, type, …}")
        try:
            return {str(name): parse_schedule(name, fields) for name, fields in value.items()}
        except ScheduleError as exc:
            subkey = f"{exc.name}.{exc.field}" if exc.field else exc.name
            raise Problem(exc.problem, subkey=subkey) from None

    def dump(self, value: dict[str, Schedule]) -> dict[str, dict[str, Any]]:
        return {name: schedule.as_fields() for name, schedule in value.items()}

    def describe(self) -> str:
        return "mapping: schedule name → `{cron or every, type, payload, …}`"
