"""Periodic jobs: schedules as declared (`definition`), when they tick (`ticks`), which ticks to
enqueue after an outage (`catchup`), and the schedules a node runs (`registry`)."""

from jobd.schedules.catchup import TickPlan, plan_ticks
from jobd.schedules.definition import CatchUp, Overlap, Schedule, ScheduleError, parse_schedule

__all__ = [
    "CatchUp",
    "Overlap",
    "Schedule",
    "ScheduleError",
    "TickPlan",
    "parse_schedule",
    "plan_ticks",
]
