"""Reading typed members of a JSON object (a request's params, a job spec), each refusal an
InvalidParams that carries the member's name as `field` and what is wrong as `problem`.

Pure: no I/O.  A member set to null counts as absent, so clients may send their optional
members unconditionally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobd.domain import State
from jobd.errors import InvalidParams


def invalid(name: str, problem: str) -> InvalidParams:
    return InvalidParams.of_field(name, problem)


def required(params: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None:
        raise invalid(name, "required")
    return value


def integer(params: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, "must be an integer")
    return value


def number(params: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, "must be a number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer past the largest float: a number, but not a usable one
        raise invalid(name, "is out of range") from None
    if not finite:
        raise invalid(name, "must be a number")
    return value


def text(params: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def time(params: Mapping[str, Any], name: str) -> datetime | None:
    """A time: ISO-8601 text on the wire, or already a datetime from Python callers."""
    value = params.get(name)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise invalid(name, "needs a time zone")
        return value
    given = text(params, name)
    return None if given is None else parse_time(given, name)


def parse_time(value: str, name: str) -> datetime:
    """An ISO-8601 timestamp with a time zone (`2024-06-01T12:00:00Z`, `…+02:00`)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(name, f"not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise invalid(name, f"needs a time zone, e.g. {value}Z for UTC")
    return parsed


def states(params: Mapping[str, Any], name: str = "state") -> tuple[State, ...]:
    """A state name, or an array of them."""
    value = params.get(name)
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise invalid(name, "must be a state name or an array of them")
    try:
        return tuple(State(n) for n in names)
    except ValueError:
        known = ", ".join(s.value for s in State)
        raise invalid(name, f"unknown state in {names!r} (states: {known})") from None


def flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false")
    return value
