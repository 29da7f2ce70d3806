"""A schedule as declared: when it ticks (a cron expression in a time zone, or an interval
anchored to the Unix epoch), the job each tick submits, and what to do about ticks that were
missed or that would overlap the previous run.

One reader (`parse_schedule`) serves the configuration file's `schedules:` section and
`jobd.schedule(...)` in a handler module, so both accept the same fields with the same checks.
Each refusal is a `ScheduleError` naming the schedule and the field.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobd.domain import DEFAULT_MAX_ATTEMPTS
from jobd.errors import InvalidParams
from jobd.jobspec import JobSpec, parse_job_spec

#: A schedule's job has no delay, so the time a delay would count from is never read.
_NO_DELAY_FROM = datetime(2000, 1, 1, tzinfo=UTC)

_E = TypeVar("_E", bound=enum.StrEnum)

#: The default of `catch_up_window`: missed ticks older than a day are skipped.
DEFAULT_CATCH_UP_WINDOW = 86400.0
#: The members of a definition that describe the job each tick submits.
JOB_FIELDS = ("type", "payload", "queue", "priority", "max_attempts", "timeout")
#: Every member a definition may have.
FIELDS = frozenset(
    ("cron", "every", "timezone", "catch_up", "catch_up_window", "overlap", *JOB_FIELDS)
)


class CatchUp(enum.StrEnum):
    """What a schedule does with the ticks it missed while no node was up."""

    SKIP = "skip"  # nothing: resume at the next tick
    ONCE = "once"  # one run for the whole missed period (the latest missed tick)
    ALL = "all"  # every missed tick within the window, the latest CATCH_UP_ALL_MAX of them


class Overlap(enum.StrEnum):
    ALLOW = "allow"  # a tick submits its job whatever the previous run is doing
    SKIP = "skip"  # no new run while the previous one is pending or running


class ScheduleError(ValueError):
    """A definition that is not valid: `field` is the member at fault ("" for the whole)."""

    def __init__(self, name: str, field: str, problem: str):
        self.name = name
        self.field = field
        self.problem = problem
        where = f"{name}.{field}" if field else name
        super().__init__(f"schedule {where}: {problem}")


@dataclass(frozen=True)
class Schedule:
    """One schedule: exactly one of `cron` and `every` is set."""

    name: str
    job: JobSpec
    cron: str | None = None
    every: int | None = None  # whole seconds
    timezone: str = "UTC"
    catch_up: CatchUp = CatchUp.ONCE
    catch_up_window: float = DEFAULT_CATCH_UP_WINDOW
    overlap: Overlap = Overlap.ALLOW

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def spec_text(self) -> str:
        """How the schedule ticks, as people write it: `cron 0 2 * * *` or `every 30s`."""
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every}s"

    def describe(self) -> dict[str, Any]:
        """The definition as plain JSON data (what the hash covers, and what operators see)."""
        return {
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "catch_up": self.catch_up.value,
            "catch_up_window": self.catch_up_window,
            "overlap": self.overlap.value,
            "job": self.job.to_params(),
        }

    def as_fields(self) -> dict[str, Any]:
        """The definition's members as a configuration file writes them (parse_schedule reads
        them back to an equal schedule)."""
        fields: dict[str, Any] = (
            {"cron": self.cron, "timezone": self.timezone}
            if self.cron is not None
            else {"every": f"{self.every}s"}
        )
        fields.update(
            catch_up=self.catch_up.value,
            catch_up_window=self.catch_up_window,
            overlap=self.overlap.value,
            **self.job.to_params(),
        )
        return fields

    @property
    def definition_hash(self) -> str:
        """A short digest of the definition: nodes whose hashes differ define it differently."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_schedule(name: object, fields: object) -> Schedule:
    """The schedule `name` from its definition's members; ScheduleError names the field."""
    if not isinstance(name, str) or not name or name != name.strip() or len(name) > 200:
        raise ScheduleError(str(name), "", "a name must be a non-empty string of 200 characters")
    if not isinstance(fields, Mapping):
        raise ScheduleError(name, "", "must be a mapping of fields (cron or every, type, …)")
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise ScheduleError(name, str(unknown[0]), f"unknown field (known: {_known()})")
    cron, every = _when(name, fields)
    return Schedule(
        name=name,
        job=_job(name, fields),
        cron=cron,
        every=every,
        timezone=_timezone(name, fields, cron),
        catch_up=_choice(name, fields, "catch_up", CatchUp, CatchUp.ONCE),
        catch_up_window=_duration(name, fields, "catch_up_window", DEFAULT_CATCH_UP_WINDOW),
        overlap=_choice(name, fields, "overlap", Overlap, Overlap.ALLOW),
    )


def _known() -> str:
    return ", ".join(sorted(FIELDS))


def _when(name: str, fields: Mapping[str, Any]) -> tuple[str | None, int | None]:
    cron, every = fields.get("cron"), fields.get("every")
    if (cron is None) == (every is None):
        raise ScheduleError(name, "cron", "give exactly one of cron and every")
    if cron is not None:
        return _cron(name, cron), None
    seconds = _duration(name, fields, "every", None)
    if seconds is None or seconds < 1 or not float(seconds).is_integer():
        raise ScheduleError(name, "every", "must be a whole number of seconds, at least 1s")
    return None, int(seconds)


def _cron(name: str, cron: object) -> str:
    if not isinstance(cron, str):
        raise ScheduleError(name, "cron", "must be a cron expression (text)")
    if len(cron.split()) != 5:
        raise ScheduleError(name, "cron", "must have 5 fields: minute hour day month weekday")
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ScheduleError(name, "cron", f"not a valid cron expression: {exc}") from None
    return cron


def _timezone(name: str, fields: Mapping[str, Any], cron: str | None) -> str:
    zone = fields.get("timezone")
    if zone is None:
        return "UTC"
    if cron is None:
        raise ScheduleError(name, "timezone", "applies to cron only (every counts in UTC)")
    if not isinstance(zone, str):
        raise ScheduleError(name, "timezone", "must be an IANA time zone name")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(name, "timezone", f"unknown time zone {zone!r}") from None
    return zone


def _duration(name: str, fields: Mapping[str, Any], key: str, default: Any) -> Any:
    # Imported here: jobd.config's settings table reads its `schedules` with this module.
    from jobd.config.errors import Problem
    from jobd.config.kinds import parse_duration

    value = fields.get(key)
    if value is None:
        return default
    try:
        seconds = parse_duration(value.strip()) if isinstance(value, str) else value
    except Problem as exc:
        raise ScheduleError(name, key, str(exc)) from None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ScheduleError(name, key, "must be a positive duration, e.g. 30s, 1h, 1d")
    return float(seconds)


def _choice(name: str, fields: Mapping[str, Any], key: str, kind: type[_E], default: _E) -> _E:
    # Imported here: jobd.config's settings table reads its `schedules` with this module.

    value = fields.get(key)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        choices = " | ".join(member.value for member in kind)
        raise ScheduleError(name, key, f"must be one of {choices}") from None


def _job(name: str, fields: Mapping[str, Any]) -> JobSpec:
    """The job each tick submits, read and checked as a submit is (jobd.jobspec)."""
    members = {key: fields[key] for key in JOB_FIELDS if key in fields}
    try:
        spec = parse_job_spec(members)
        # The domain's rules of a stored job (name lengths, priority, attempts, timeout) now,
        # rather than at the first tick; the daemon's default stands in for max_attempts.
        spec.to_new_job(spec.max_attempts or DEFAULT_MAX_ATTEMPTS, None, _NO_DELAY_FROM)
    except InvalidParams as exc:
        raise ScheduleError(name, exc.field or "", exc.problem or str(exc)) from None
    return spec
