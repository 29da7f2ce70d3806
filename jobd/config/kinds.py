"""Value kinds: how one setting's values are parsed, checked and written back.

A kind's `parse` takes either a native YAML value or the text of an environment variable or a
flag, so every source goes through the same checks.  Kinds never echo the bad value in their
message: the loader adds it, unless the setting is a secret.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobd.config.errors import Problem
from jobd.queue_limits import FleetLimits, LimitError, Rate

MASK = "***"
MiB = 1024 * 1024


class Kind:
    """How one setting's values are parsed, checked and written back."""

    secret_note = "Secret: masked as `***` when printed."

    def parse(self, value: object) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        """The plain YAML form `jobd config check` prints (round-trips through `parse`)."""
        return value

    def show(self, value: Any) -> Any:
        """The form written in the docs and the example file: the friendliest for a human."""
        return self.dump(value)

    def mask(self, value: Any) -> Any:
        """The value with its secret part hidden."""
        return MASK if value else value

    def describe(self) -> str:
        raise NotImplementedError


def _range_text(
    low: float | None, high: float | None, positive: bool = False, words: bool = False
) -> str:
    """The allowed range: " ≥ 1" for the docs, " at least 1" (words=True) for messages."""
    at_least, at_most = ("at least", "at most") if words else ("≥", "≤")
    parts = []
    if positive:
        parts.append("more than 0" if words else "> 0")
    elif low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    elif low is not None:
        parts.append(f"{at_least} {low:g}")
    if high is not None:
        parts.append(f"{at_most} {high:g}")
    return " " + " and ".join(parts) if parts else ""


def _check_range(
    value: float, low: float | None, high: float | None, positive: bool = False
) -> float:
    if math.isnan(value) or math.isinf(value):
        raise Problem("must be a finite number")
    too_low = (positive and value <= 0) or (low is not None and value < low)
    if too_low or (high is not None and value > high):
        raise Problem(f"must be{_range_text(low, high, positive, words=True)}")
    return value


@dataclass(frozen=True)
class Text(Kind):
    choices: tuple[str, ...] = ()
    fold: Callable[[str], str] | None = None  # normalise case before checking choices
    pattern: str | None = None
    pattern_help: str = ""
    noun: str = "string"

    def parse(self, value: object) -> str:
        # A number is accepted as text: a group id, a numeric user name.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise Problem(f"must be a {self.noun}")
        text = str(value).strip()
        if self.fold:
            text = self.fold(text)
        if self.choices and text not in self.choices:
            raise Problem(f"must be one of {', '.join(self.choices)}")
        if self.pattern and not re.fullmatch(self.pattern, text):
            raise Problem(f"must be {self.pattern_help}")
        return text

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        return self.noun


@dataclass(frozen=True)
class Boolean(Kind):
    _words = {
        "true": True,
        "yes": True,
        "on": True,
        "1": True,
        "false": False,
        "no": False,
        "off": False,
        "0": False,
    }

    def parse(self, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in self._words:
            return self._words[value.strip().lower()]
        raise Problem("must be true or false")

    def describe(self) -> str:
        return "boolean (`true`/`false`)"


@dataclass(frozen=True)
class Integer(Kind):
    min: int | None = None
    max: int | None = None

    def parse(self, value: object) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10)
            except ValueError:
                raise Problem("must be an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise Problem("must be an integer")
        return int(_check_range(value, self.min, self.max))

    def describe(self) -> str:
        return "integer" + _range_text(self.min, self.max)


@dataclass(frozen=True)
class Number(Kind):
    min: float | None = None
    max: float | None = None

    def parse(self, value: object) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise Problem("must be a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Problem("must be a number")
        return float(_check_range(float(value), self.min, self.max))

    def describe(self) -> str:
        return "number" + _range_text(self.min, self.max)


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)"
_DURATION = re.compile(rf"\s*(?:{_DURATION_PART}\s*)+", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds from `"30"`, `"1.5"`, `"250ms"`, `"90s"`, `"5m"`, `"1h30m"`, `"7d"`, `"2w"`."""
    try:
        return float(text)
    except ValueError:
        pass
    if not _DURATION.fullmatch(text):
        raise Problem(
            "must be a duration: seconds, or numbers with units (ms, s, m, h, d, w),"
            ' e.g. "30s", "1h30m", "7d"'
        )
    parts = re.findall(_DURATION_PART, text, re.IGNORECASE)
    return sum(float(n) * _DURATION_UNITS[unit.lower()] for n, unit in parts)


@dataclass(frozen=True)
class Duration(Kind):
    """Seconds, as a float.  Written as a number of seconds or with units ("7d")."""

    min: float | None = 0
    max: float | None = None
    positive: bool = False

    def parse(self, value: object) -> float:
        if isinstance(value, str):
            value = parse_duration(value.strip())
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Problem("must be a duration in seconds")
        return float(_check_range(float(value), self.min, self.max, self.positive))

    def dump(self, value: float) -> int | float:
        return int(value) if float(value).is_integer() else value

    def show(self, value: float) -> int | float | str:
        # Long round durations read better with a unit: 604800 -> "7d".
        for unit in ("d", "h", "m"):
            size = _DURATION_UNITS[unit]
            if value >= 60 and value % size == 0:
                return f"{int(value // size)}{unit}"
        return self.dump(value)

    def describe(self) -> str:
        return "duration" + _range_text(self.min if self.min else None, self.max, self.positive)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)(b?)|(b))?\s*", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes from `"1048576"`, `"512MiB"`, `"512M"` (binary), `"1GB"` (decimal), `"4kB"`."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise Problem('must be a size in bytes, e.g. 1048576, "512KiB", "1MiB", "2GB"')
    number, prefix, binary, has_b, _ = match.groups()
    if prefix is None:
        multiplier = 1
    else:
        # "KiB" and a bare "K" are powers of 1024 (as systemd reads them); "kB" is 1000.
        base = 1000 if has_b and not binary else 1024
        multiplier = base ** _SIZE_POWERS[prefix.lower()]
    size = float(number) * multiplier
    if not size.is_integer():
        raise Problem("must be a whole number of bytes")
    return int(size)


@dataclass(frozen=True)
class Size(Kind):
    """Bytes, as an int.  Written as a number or with a unit ("512MiB")."""

    min: int = 0

    def parse(self, value: object) -> int:
        if isinstance(value, str):
            value = parse_size(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Problem("must be a size in bytes")
        return int(_check_range(value, self.min, None))

    def show(self, value: int) -> int | str:
        for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
            if value and value % 1024**power == 0:
                return f"{value // 1024**power}{unit}"
        return value

    def describe(self) -> str:
        return "size in bytes" + _range_text(self.min if self.min else None, None)


@dataclass(frozen=True)
class Mode(Kind):
    """A file mode, written in octal.  In YAML, quote it ("0660"): an unquoted 660 is decimal."""

    def parse(self, value: object) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip().removeprefix("0o").removeprefix("0O") or "x", 8)
            except ValueError:
                raise Problem('must be an octal file mode, e.g. "0660"') from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise Problem('must be an octal file mode, e.g. "0660"')
        if not 0 <= value <= 0o777:
            raise Problem('must be an octal file mode from "0000" to "0777" (quote it in YAML)')
        return value

    def dump(self, value: int) -> str:
        return f"0{value:03o}"

    def describe(self) -> str:
        return "octal file mode"


@dataclass(frozen=True)
class HostPort(Kind):
    def parse(self, value: object) -> str:
        if not isinstance(value, str):
            raise Problem("must be HOST:PORT, e.g. 127.0.0.1:8080")
        host, port = split_host_port(value.strip())
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def describe(self) -> str:
        return "`HOST:PORT`"


def split_host_port(text: str) -> tuple[str, int]:
    """("127.0.0.1", 8080) from "127.0.0.1:8080"; IPv6 hosts in brackets ("[::1]:8080")."""
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise Problem("must be HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:8080")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


@dataclass(frozen=True)
class PathKind(Kind):
    absolute: bool = True
    max_bytes: int | None = None

    def parse(self, value: object) -> Path:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise Problem("must be a path")
        path = Path(os.path.expanduser(str(value).strip()))
        if self.absolute and not path.is_absolute():
            # The daemon and jobctl may not share a working directory, so relative is ambiguous.
            raise Problem("must be an absolute path")
        if self.max_bytes is not None and len(os.fsencode(path)) > self.max_bytes:
            raise Problem(f"is too long for a Unix socket (at most {self.max_bytes} bytes)")
        return path

    def dump(self, value: Path) -> str:
        return str(value)

    def describe(self) -> str:
        return "absolute path" if self.absolute else "path"


@dataclass(frozen=True)
class ListOf(Kind):
    """A YAML list, or one comma-separated string (how environment variables carry lists)."""

    item: Kind
    noun: str = "strings"

    def parse(self, value: object) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if not isinstance(value, list | tuple):
            raise Problem(f"must be a list of {self.noun} (or a comma-separated string)")
        parsed = []
        for index, item in enumerate(value):
            try:
                parsed.append(self.item.parse(item))
            except Problem as exc:
                raise Problem(f"item {index + 1}: {exc}") from None
        return tuple(parsed)

    def dump(self, value: tuple[Any, ...]) -> list[Any]:
        return [self.item.dump(v) for v in value]

    def mask(self, value: tuple[Any, ...]) -> list[str]:
        return [MASK for _ in value]  # how many tokens there are is not a secret

    def describe(self) -> str:
        return f"list of {self.noun}"


_URL_SCHEMES = ("postgresql://", "postgres://", "sqlite://", "memory://")


@dataclass(frozen=True)
class DatabaseUrl(Kind):
    secret_note = "Secret: the password in it is masked as `***` when printed."

    def parse(self, value: object) -> str:
        if not isinstance(value, str):
            raise Problem("must be a URL")
        url = value.strip()
        if not url.startswith(_URL_SCHEMES):
            raise Problem("must start with postgresql://, sqlite:/// or memory://")
        if url.startswith("sqlite://"):
            path = url.removeprefix("sqlite://")
            if not path.startswith("/") or not path.strip("/"):
                raise Problem("needs an absolute path, e.g. sqlite:///var/lib/jobd/jobd.db")
        return url

    def mask(self, value: str) -> str:
        return mask_url(value)

    def describe(self) -> str:
        return "URL"


_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@?#]*):(.*)@", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password (after `user:`, or a `password=` parameter) replaced by ***."""
    base, sep, query = url.partition("?")
    # Up to the last "@" before the query: a password with an unescaped "@" is still covered.
    base = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", base, count=1)
    if sep:
        query = re.sub(r"(^|&)(password=)[^&]*", rf"\g<1>\g<2>{MASK}", query)
    return base + sep + query


@dataclass(frozen=True)
class QueueConfig:
    """A queue's limits: `concurrency` on this node, `global_concurrency` and `rate` across
    the fleet (jobd.queue_limits); None: not limited that way."""

    concurrency: int | None = None
    global_concurrency: int | None = None
    rate: Rate | None = None

    @property
    def fleet(self) -> FleetLimits:
        return FleetLimits(self.global_concurrency, self.rate)


#: The keys of a queue's entry, in the order the docs give them.
QUEUE_KEYS = ("concurrency", "global_concurrency", "rate")


@dataclass(frozen=True)
class Queues(Kind):
    """queue name -> {concurrency: N, global_concurrency: N, rate: 10/s} in YAML;
    "emails=4,reports=1" (the per-node concurrency only) in the environment."""

    def parse(self, value: object) -> dict[str, QueueConfig]:
        if isinstance(value, str):
            return self._parse_text(value)
        if not isinstance(value, Mapping):
            raise Problem("must be a mapping of queue name to {concurrency: N}")
        return {self._name(name): self._queue(name, spec) for name, spec in value.items()}

    def _parse_text(self, text: str) -> dict[str, QueueConfig]:
        queues = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            if not sep:
                raise Problem('must be "name=concurrency,…", e.g. "emails=4,reports=1"')
            queues[self._name(name.strip())] = self._queue(name.strip(), {"concurrency": number})
        return queues

    @staticmethod
    def _name(name: object) -> str:
        # The same rule as a job's queue name (jobd.domain), so every configured queue is usable.
        if not isinstance(name, str) or not name or name != name.strip() or len(name) > 200:
            raise Problem("a queue name must be a non-empty string of at most 200 characters")
        if not name.isprintable():
            raise Problem("a queue name must not contain control characters")
        return name

    @staticmethod
    def _queue(name: str, spec: object) -> QueueConfig:
        if not isinstance(spec, Mapping):
            raise Problem(
                "must be a mapping {concurrency: N, global_concurrency: N, rate: N/s}",
                subkey=name,
            )
        for key in spec:
            if key not in QUEUE_KEYS:
                known = ", ".join(QUEUE_KEYS)
                raise Problem(f"unknown key (a queue has: {known})", subkey=f"{name}.{key}")
        if not spec:
            raise Problem(f"needs at least one of {', '.join(QUEUE_KEYS)}", subkey=name)
        values: dict[str, Any] = {}
        for key in ("concurrency", "global_concurrency"):
            if key in spec:
                try:
                    values[key] = Integer(min=1).parse(spec[key])
                except Problem as exc:
                    raise Problem(str(exc), subkey=f"{name}.{key}") from None
        if "rate" in spec:
            try:
                values["rate"] = Rate.parse(spec["rate"])
            except LimitError as exc:
                raise Problem(str(exc), subkey=f"{name}.rate") from None
        return QueueConfig(**values)

    def dump(self, value: dict[str, QueueConfig]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, q in value.items():
            entry: dict[str, Any] = {}
            if q.concurrency is not None:
                entry["concurrency"] = q.concurrency
            if q.global_concurrency is not None:
                entry["global_concurrency"] = q.global_concurrency
            if q.rate is not None:
                entry["rate"] = str(q.rate)
            out[name] = entry
        return out

    def describe(self) -> str:
        return "mapping: queue name → `{concurrency: N, global_concurrency: N, rate: N/s}`"
