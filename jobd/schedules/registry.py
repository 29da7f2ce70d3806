"""The schedules a node runs: those of its configuration file and those its handler modules
declare with `jobd.schedule(...)`, one definition per name.

A name defined twice -- twice in code, or in the file and in code -- is refused (ScheduleError,
which `jobd config check` and `jobd run` turn into exit status 2), as is a schedule whose job
type no handler of the node runs.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from jobd.schedules.definition import Schedule, ScheduleError, parse_schedule


@dataclass(frozen=True, slots=True)
class Declared:
    """A schedule declared in code, and the module that declared it (for messages)."""

    schedule: Schedule
    module: str


#: What handler modules declared, in the order they did; read by node_schedules.
declared: list[Declared] = []


def schedule(
    name: str,
    *,
    type: str,
    cron: str | None = None,
    every: str | float | None = None,
    **fields: Any,
) -> Schedule:
    """Declare a schedule next to its handler: the fields of a configuration file's schedule
    (cron or every, type, payload, timezone, queue, priority, max_attempts, timeout, catch_up,
    catch_up_window, overlap).  A bad field raises ScheduleError at once, naming it."""
    given = {"type": type, "cron": cron, "every": every, **fields}
    parsed = parse_schedule(name, {key: value for key, value in given.items() if value is not None})
    module = str(sys._getframe(1).f_globals.get("__name__", "?"))
    declared.append(Declared(parsed, module))
    return parsed


def node_schedules(
    from_file: Mapping[str, Schedule],
    from_code: Collection[Declared],
    types: Collection[str],
) -> dict[str, Schedule]:
    """Every schedule of the node by name; ScheduleError for a name defined twice or a job
    type that none of the node's handlers runs."""
    schedules = dict(from_file)
    origin = {name: "the configuration file" for name in from_file}
    for item in from_code:
        name = item.schedule.name
        where = f"module {item.module}"
        if name in schedules:
            raise ScheduleError(name, "", f"defined twice: in {origin[name]} and in {where}")
        schedules[name], origin[name] = item.schedule, where
    for name, found in schedules.items():
        if found.job.type not in types:
            raise ScheduleError(name, "type", f"no handler runs jobs of type {found.job.type!r}")
    return schedules
