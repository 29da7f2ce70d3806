"""The schedule methods of the control protocol (jobd.protocol): `schedules`, `schedule_pause`,
`schedule_resume` and `schedule_trigger`, for jobd.control.Operations.

A schedule is known to the fleet by its row in the store (its last tick, whether it is paused,
the hash of the definition that last wrote it, its history) and to a node by its definition
(the `schedules:` section and `jobd.schedule`).  `schedules` shows both: every row, and every
schedule this node defines that has no row yet.  A row whose schedule this node does not define
is shown with `defined_here` false: removed from this node's configuration (or defined only on
other nodes); it no longer ticks here, and its history stays.

Pause and resume are the fleet's (the row's `paused`, read by every node's ticks under the
row's lock) and persist across restarts.  A trigger needs the definition, so only a node that
defines the schedule can trigger it (docs/adr/0026-periodic-jobs.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from jobd.clock import utcnow
from jobd.domain import DEFAULT_MAX_ATTEMPTS, Job
from jobd.errors import Conflict, UnknownSchedule
from jobd.protocol import NoParams, ScheduleParams
from jobd.schedules import Schedule
from jobd.schedules.ticks import next_tick
from jobd.store import Store
from jobd.store.schedules import ScheduleRecord

__all__ = ["ScheduleOperations", "schedule_view"]

StoreCall = Callable[[Awaitable[Any]], Awaitable[Any]]
#: Records an operator's action (action, target, details) in the audit trail.
Audit = Callable[[str, str | None, dict[str, Any] | None], Awaitable[None]]


def schedule_view(
    name: str, schedule: Schedule | None, record: ScheduleRecord | None, now: datetime
) -> dict[str, Any]:
    """A schedule as `schedules` shows it: this node's definition (null members when it has
    none) and the fleet's row (null members when no node has written one yet)."""
    view: dict[str, Any] = {"name": name, "defined_here": schedule is not None}
    view |= _definition(schedule, now)
    view |= {
        "last_tick": _time(record.last_tick if record else None),
        "last_job_id": record.last_job_id if record else None,
        "last_job_state": (
            record.last_job_state.value if record and record.last_job_state else None
        ),
        "paused": bool(record and record.paused),
        "fleet_definition": record.definition_hash if record else None,
    }
    return view


def _definition(schedule: Schedule | None, now: datetime) -> dict[str, Any]:
    if schedule is None:
        names = ("spec", "cron", "every", "timezone", "type", "queue", "catch_up")
        return dict.fromkeys((*names, "catch_up_window", "overlap", "next_tick", "definition"))
    return {
        "spec": schedule.spec_text,
        "cron": schedule.cron,
        "every": schedule.every,
        "timezone": schedule.timezone,
        "type": schedule.job.type,
        "queue": schedule.job.queue,
        "catch_up": schedule.catch_up.value,
        "catch_up_window": schedule.catch_up_window,
        "overlap": schedule.overlap.value,
        "next_tick": _time(next_tick(schedule, now)),
        "definition": schedule.definition_hash,
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class ScheduleOperations:
    """The four schedule methods over the store (each call through `call`, Operations' store
    call under a deadline) and this node's definitions."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        store: Store,
        call: StoreCall,
        created: Callable[[Job], None],
        audit: Audit,
        default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.defined = {schedule.name: schedule for schedule in schedules}
        self.store = store
        self._call = call
        self._created = created  # a job created here, counted and logged as a submit's
        self._audit = audit  # an operator's action, recorded with its caller
        self.default_max_attempts = default_max_attempts
        self._clock = clock

    def handlers(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        return {
            "schedules": self.schedules,
            "schedule_pause": self.pause,
            "schedule_resume": self.resume,
            "schedule_trigger": self.trigger,
        }

    async def _records(self) -> dict[str, ScheduleRecord]:
        records: list[ScheduleRecord] = await self._call(self.store.schedule_records())
        return {record.name: record for record in records}

    async def schedules(self, _: NoParams) -> dict[str, Any]:
        records = await self._records()
        now = self._clock()
        names = sorted(set(records) | set(self.defined))
        views = [schedule_view(n, self.defined.get(n), records.get(n), now) for n in names]
        return {"schedules": views}

    async def pause(self, params: ScheduleParams) -> dict[str, Any]:
        return await self._set_paused(params.name, True)

    async def resume(self, params: ScheduleParams) -> dict[str, Any]:
        return await self._set_paused(params.name, False)

    async def _set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        self._check_known(name, await self._records())
        record: ScheduleRecord = await self._call(self.store.set_schedule_paused(name, paused))
        await self._audit("schedule_pause" if paused else "schedule_resume", name, None)
        return {"schedule": schedule_view(name, self.defined.get(name), record, self._clock())}

    async def trigger(self, params: ScheduleParams) -> dict[str, Any]:
        """One job of the schedule now, whatever its ticks, pause or overlap policy: an
        operator asked for this run."""
        schedule = self.defined.get(params.name)
        if schedule is None:
            self._check_known(params.name, await self._records())
            raise Conflict(
                f"schedule {params.name!r} is not defined on this node (it is no longer in its"
                " configuration, or only other nodes define it): trigger it on a node that"
                " defines it",
                schedule=params.name,
            )
        trigger = self.store.trigger_schedule(schedule, self.default_max_attempts)
        job: Job = await self._call(trigger)
        self._created(job)
        await self._audit("schedule_trigger", params.name, {"job": job.id})
        return {"job": job.to_dict()}

    def _check_known(self, name: str, records: dict[str, ScheduleRecord]) -> None:
        if name in records or name in self.defined:
            return
        known = sorted(set(records) | set(self.defined))
        listed = ", ".join(repr(n) for n in known) if known else "none"
        raise UnknownSchedule.of_field(
            "name",
            f"unknown schedule {name!r}: neither the database nor this node's configuration"
            f" has it (schedules: {listed})",
            schedule=name,
            known=known,
        )
