"""The value types of jobctl's options: durations and times, read by the same parsers as the
rest of jobd, so `--timeout 1h` means what `jobs.retention: 1h` means in the configuration."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

import click

from jobd.config import parse_duration
from jobd.errors import InvalidParams
from jobd.fields import parse_time

if TYPE_CHECKING:
    _FloatType = click.ParamType[float]
    _TimeType = click.ParamType[datetime]
else:  # click before 8.4 (the dependency allows 8.1) has no generic ParamType to subscript
    _FloatType = _TimeType = click.ParamType


class Duration(_FloatType):
    """Seconds, given as a number (`90`, `0.5`) or with units (`500ms`, `5m`, `1h30m`, `7d`)."""

    name = "duration"

    def __init__(self, min: float | None = None):
        self.min = min

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value).strip())
            except ValueError as exc:
                self.fail(f"{value!r}: {exc}", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a duration", param, ctx)
        if self.min is not None and seconds < self.min:
            self.fail(f"{value!r} is less than {self.min:g}s", param, ctx)
        return seconds


class Time(_TimeType):
    """A point in time: ISO-8601 with a time zone (`2030-01-01T06:00:00Z`, `…+02:00`)."""

    name = "time"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value), param.name if param and param.name else "time")
        except InvalidParams as exc:
            self.fail(exc.problem or exc.message, param, ctx)
