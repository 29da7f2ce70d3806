"""jobd's configuration: one declarative table of settings, and the loader that fills typed
dataclasses from it.

Every setting is one row of `SETTINGS` (gunicorn's habit): its dotted YAML key, its `JOBD_*`
environment variable, its command-line flag, its kind (how a value is parsed and checked), its
default, whether it is a secret, and its help text.  The loader, `jobd config check`,
`config/jobd.example.yaml` and `docs/configuration.md` are all derived from that table, and tests
compare the committed files with what the table generates, so code and docs cannot drift.

Sources, later ones winning:

    defaults  <  YAML file (--config PATH / JOBD_CONFIG)  <  JOBD_* environment  <  flags

An empty value (YAML `null`, an empty environment variable) puts a setting back to its default.
An unknown key or a bad value raises `ConfigError`, whose message names the key and the source
(`/etc/jobd/jobd.yaml:7: database.urll: unknown key (did you mean database.url?)`); the CLI turns
it into exit status 2.

Regenerate the docs after changing the table:  python -m jobd.config --write
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import email.utils
import ipaddress
import keyword
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_ENV = "JOBD_CONFIG"
ENV_PREFIX = "JOBD_"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"  # where `jobd http` listens when http.listen is unset
MASK = "***"
MiB = 1024 * 1024
# A Unix socket path must fit in sun_path: 108 bytes on Linux, the terminating NUL included.
SUN_PATH_MAX = 107
BUILTIN_HANDLERS = ("send_email", "generate_report", "process_file")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SMTP_PORTS = {"none": 25, "starttls": 587, "implicit": 465}
# JOBD_* variables that are not settings but are not typos either.
_OTHER_ENV = (CONFIG_ENV, "JOBD_TEST_", "JOBD_REQUIRE_POSTGRES")


class ConfigError(ValueError):
    """The configuration is not valid.  The message names the key and where its value came from
    (a file and line, an environment variable, or a flag)."""

    exit_code = 2  # what the CLI exits with

    def __init__(self, key: str | None, source: str, problem: str):
        self.key = key
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


class Problem(ValueError):
    """A bad value, as a kind sees it.  The loader, which knows the key and the source, turns it
    into a ConfigError.  `subkey` names a part inside a mapping value (`emails.concurrency` in
    `queues`)."""

    def __init__(self, message: str, subkey: str | None = None):
        super().__init__(message)
        self.subkey = subkey


# --- kinds: how values are parsed, checked and written back ---------------------------------
#
# A kind's `parse` takes either a native YAML value or the text of an environment variable or
# a flag, so every source goes through the same checks.  Kinds never echo the bad value in
# their message: the loader adds it, unless the setting is a secret.


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


def _check_range(value: float, low: float | None, high: float | None, positive: bool = False):
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
    concurrency: int


@dataclass(frozen=True)
class Queues(Kind):
    """queue name -> {concurrency: N} in YAML; "emails=4,reports=1" in the environment."""

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
            raise Problem("must be a mapping {concurrency: N}", subkey=name)
        for key in spec:
            if key != "concurrency":
                raise Problem("unknown key (a queue has: concurrency)", subkey=f"{name}.{key}")
        if "concurrency" not in spec:
            raise Problem("is missing", subkey=f"{name}.concurrency")
        try:
            return QueueConfig(Integer(min=1).parse(spec["concurrency"]))
        except Problem as exc:
            raise Problem(str(exc), subkey=f"{name}.concurrency") from None

    def dump(self, value: dict[str, QueueConfig]) -> dict[str, dict[str, int]]:
        return {name: {"concurrency": q.concurrency} for name, q in value.items()}

    def describe(self) -> str:
        return "mapping: queue name → `{concurrency: N}`"


def _email_address(value: str) -> None:
    if "@" not in email.utils.parseaddr(value)[1]:
        raise Problem(
            'must be an e-mail address, e.g. "jobd@example.com" or "Jobs <j@example.com>"'
        )


# --- computed defaults: where jobd keeps its files ---------------------------------------------


def _first_dir(value: str | None) -> Path | None:
    # systemd sets STATE_DIRECTORY / RUNTIME_DIRECTORY to absolute paths, colon-separated when
    # the unit lists several; jobd uses the first.
    first = (value or "").split(":")[0]
    return Path(first) if os.path.isabs(first) else None


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "")
    return Path(home) if os.path.isabs(home) else Path.home()


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where jobd keeps its state: systemd's StateDirectory= (`$STATE_DIRECTORY`, usually
    /var/lib/jobd) for a system service, else `$XDG_STATE_HOME/jobd`, else ~/.local/state/jobd."""
    systemd = _first_dir(env.get("STATE_DIRECTORY"))
    if systemd:
        return systemd
    xdg = env.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "jobd"
    return _home(env) / ".local" / "state" / "jobd"


def default_database_url(env: Mapping[str, str] = os.environ) -> str:
    return f"sqlite://{state_dir(env) / 'jobd.db'}"


def default_socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """The control socket when none is configured; jobctl uses the same rule."""
    runtime = _first_dir(env.get("RUNTIME_DIRECTORY"))  # systemd's RuntimeDirectory=jobd
    if runtime:
        return runtime / "jobd.sock"
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "jobd.sock"
    # No runtime directory (a cron job, a container): the state directory, unless its path is
    # too long for a socket address.
    fallback = state_dir(env) / "jobd.sock"
    if len(os.fsencode(fallback)) <= SUN_PATH_MAX:
        return fallback
    return Path("/tmp") / f"jobd-{os.getuid()}" / "jobd.sock"


@dataclass(frozen=True)
class Computed:
    """A default that depends on the environment; `doc` says how, for the docs."""

    compute: Callable[[Mapping[str, str]], Any]
    doc: str


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str  # dotted YAML key: section.name (or a top-level name such as `queues`)
    kind: Kind
    default: Any  # a value of the kind, a Computed, or None (unset)
    help: str
    env: str = ""  # JOBD_ + the key in capitals with dots as underscores, unless given
    flag: str | None = None
    secret: bool = False
    check: Callable[[Any], None] | None = None  # more checks than the kind's; raises Problem
    default_doc: str = ""  # what an unset (None) default means, for the docs

    def __post_init__(self) -> None:
        if not self.env:
            object.__setattr__(self, "env", ENV_PREFIX + self.key.replace(".", "_").upper())

    @property
    def section(self) -> str | None:
        return self.key.split(".")[0] if "." in self.key else None

    @property
    def attr(self) -> str:
        """The dataclass field: the last part of the key (`from` becomes `from_`)."""
        name = self.key.rsplit(".", 1)[-1]
        return f"{name}_" if keyword.iskeyword(name) else name

    def default_for(self, env: Mapping[str, str]) -> Any:
        if isinstance(self.default, Computed):
            return self.default.compute(env)
        return self.default

    def parse(self, value: object) -> Any:
        parsed = self.kind.parse(value)
        if self.check:
            self.check(parsed)
        return parsed

    def masked(self, value: Any) -> Any:
        return self.kind.mask(value) if self.secret and value is not None else value


_MODULE = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,62}"

SETTINGS: tuple[Setting, ...] = (
    # --- database ---
    Setting(
        "database.url",
        DatabaseUrl(),
        Computed(
            default_database_url,
            "a SQLite file `jobd.db` in the state directory: `$STATE_DIRECTORY` (set by systemd's"
            " `StateDirectory=`, e.g. `/var/lib/jobd`), else `$XDG_STATE_HOME/jobd`, else"
            " `~/.local/state/jobd`",
        ),
        "Where jobs are kept: `postgresql://user:password@host:port/dbname` (production, many"
        " nodes), `sqlite:///absolute/path.db` (one node), or `memory://` (nothing is kept).",
        env="JOBD_DATABASE_URL",
        flag="--database-url",
        secret=True,
    ),
    Setting(
        "database.schema",
        Text(pattern=_IDENTIFIER, pattern_help="an SQL identifier (letters, digits, _)"),
        "jobd",
        "PostgreSQL schema holding everything jobd owns, so jobd can share an application's"
        " database. Ignored by SQLite.",
    ),
    Setting(
        "database.pool_min", Integer(min=1), 1, "PostgreSQL connections the daemon keeps open."
    ),
    Setting(
        "database.pool_max",
        Integer(min=1),
        8,
        "Most PostgreSQL connections in the daemon's pool; at least `database.pool_min`.",
    ),
    # --- control ---
    Setting(
        "control.socket",
        PathKind(max_bytes=SUN_PATH_MAX),
        Computed(
            default_socket_path,
            "`$RUNTIME_DIRECTORY/jobd.sock` (systemd's `RuntimeDirectory=`, e.g."
            " `/run/jobd/jobd.sock`), else `$XDG_RUNTIME_DIR/jobd.sock`, else `jobd.sock` in the"
            " state directory (or `/tmp/jobd-<uid>/jobd.sock` when that path is too long)",
        ),
        "Path of the control socket that jobctl and the HTTP shim connect to (jobctl reads the"
        " same environment variable).",
        env="JOBD_SOCKET",
        flag="--socket",
    ),
    Setting(
        "control.socket_mode",
        Mode(),
        0o660,
        "Permissions of the control socket: who may submit and cancel jobs. Quote it in YAML"
        ' ("0660").',
    ),
    Setting(
        "control.socket_group",
        Text(noun="group name or number"),
        None,
        "Group given to the control socket so that its members may use jobctl; unset: the"
        " daemon's own group.",
    ),
    Setting(
        "control.max_request_bytes",
        Size(min=1024),
        MiB,
        "Longest request line a client may send; a longer one is answered `payload_too_large`"
        " and its connection closed.",
    ),
    # --- workers ---
    Setting(
        "workers.count",
        Integer(min=1),
        Computed(lambda env: os.cpu_count() or 1, "the number of CPUs"),
        "Worker processes that run jobs.",
        env="JOBD_WORKERS",
        flag="--workers",
    ),
    Setting(
        "workers.max_jobs_per_worker",
        Integer(min=0),
        0,
        "A worker is replaced after this many jobs, which bounds leaks in handler code (0: never).",
    ),
    Setting(
        "workers.max_memory",
        Size(),
        0,
        'A worker whose resident memory passes this is replaced after its job, e.g. "512MiB"'
        " (0: no limit).",
    ),
    Setting(
        "workers.max_crashes",
        Integer(min=1),
        3,
        "A job that has killed its worker this many times is failed as a poison job, whatever"
        " attempts it has left.",
    ),
    Setting(
        "workers.prefetch",
        Integer(min=0),
        1,
        "Jobs a worker may hold queued behind the one it runs, so it never waits for the next"
        " (0: none); while short jobs have a backlog, jobd queues up to 8 more.",
    ),
    # --- handlers ---
    Setting(
        "handlers.modules",
        ListOf(
            Text(pattern=_MODULE, pattern_help="a dotted module name, e.g. myapp.jobs"),
            noun="module names",
        ),
        (),
        "Python modules imported once, in the fork server, to register handlers with `@handler`.",
        env="JOBD_HANDLER_MODULES",
        flag="--handlers",
    ),
    Setting(
        "handlers.builtin",
        ListOf(Text(choices=BUILTIN_HANDLERS), noun="handler names"),
        (),
        "Sample handlers shipped with jobd to enable: `send_email`, `generate_report`,"
        " `process_file` (`echo` and `sleep` are always there).",
    ),
    # --- jobs ---
    Setting(
        "jobs.lease_seconds",
        Duration(min=1),
        30.0,
        "How long a node owns a running job without a heartbeat; after that any node may"
        " recover the job.",
    ),
    Setting(
        "jobs.heartbeat_seconds",
        Duration(positive=True),
        10.0,
        "How often a node extends its leases; less than `jobs.lease_seconds`.",
    ),
    Setting(
        "jobs.poll_interval",
        Duration(positive=True, max=1.0),
        1.0,
        "Longest wait between looks for new jobs when no notification comes (at most 1 s).",
    ),
    Setting(
        "jobs.default_timeout",
        Duration(positive=True),
        3600.0,
        "How long one attempt may run, for jobs and job types that set no timeout.",
    ),
    Setting(
        "jobs.default_max_attempts",
        Integer(min=1),
        3,
        "Attempts a job gets, for jobs and job types that set no `max_attempts`.",
    ),
    Setting(
        "jobs.backoff_base",
        Duration(),
        1.0,
        "Retry delay ceiling after the first failed attempt: the delay is drawn at random (full"
        " jitter) below min(`backoff_max`, `backoff_base` * `backoff_factor` ** (attempt - 1)).",
    ),
    Setting(
        "jobs.backoff_factor",
        Number(min=1),
        2.0,
        "How much the retry delay ceiling grows with each failed attempt.",
    ),
    Setting("jobs.backoff_max", Duration(), 300.0, "The longest retry delay."),
    Setting(
        "jobs.retention",
        Duration(),
        7 * 86400.0,
        "Finished jobs (completed, failed, canceled) older than this are deleted (0: kept"
        " forever).",
    ),
    # --- queues ---
    Setting(
        "queues",
        Queues(),
        {},
        "The most jobs of each queue running at once on one node: queue name →"
        " `{concurrency: N}`. Queues not listed are limited by the workers only. In the"
        ' environment: "emails=4,reports=1".',
    ),
    # --- shutdown ---
    Setting(
        "shutdown.drain_timeout",
        Duration(),
        30.0,
        "On SIGTERM or SIGINT, how long running jobs may finish before they are stopped and"
        " returned to pending.",
    ),
    Setting(
        "shutdown.kill_grace",
        Duration(),
        5.0,
        "Time between SIGTERM and SIGKILL when a worker is stopped (timeout, cancel, drain).",
    ),
    # --- http ---
    Setting(
        "http.listen",
        HostPort(),
        None,
        f"Where the HTTP shim listens. Unset: `jobd run` starts no HTTP shim, and `jobd http`"
        f" listens on `{DEFAULT_HTTP_LISTEN}`.",
        env="JOBD_HTTP_LISTEN",
        flag="--listen",
    ),
    Setting(
        "http.tokens",
        ListOf(Text(), noun="tokens"),
        (),
        "Bearer tokens the HTTP shim accepts; at least one is needed to listen on a non-loopback"
        " address. Prefer the environment variable to the file.",
        env="JOBD_HTTP_TOKENS",
        secret=True,
    ),
    Setting(
        "http.max_body_bytes",
        Size(min=1024),
        MiB,
        "Largest request body the HTTP shim accepts (413 above it).",
    ),
    Setting(
        "http.request_timeout",
        Duration(positive=True),
        30.0,
        "How long the HTTP shim waits for a client to send its request.",
    ),
    # --- logging ---
    Setting(
        "logging.level",
        Text(choices=LOG_LEVELS, fold=str.upper),
        "INFO",
        "Least severe level logged.",
        flag="--log-level",
    ),
    Setting(
        "logging.format",
        Text(choices=("json", "text"), fold=str.lower),
        "json",
        "`json`: one JSON object a line (for journald and log shippers); `text`: for a human at"
        " a terminal.",
        flag="--log-format",
    ),
    Setting(
        "logging.job_events",
        Boolean(),
        False,
        "Log every job's transitions (submitted, started, and each end of an attempt, with"
        " `from` and `to`) at INFO; when false they are logged at DEBUG, keeping the hot path"
        " quiet at thousands of jobs a second.",
    ),
    # --- smtp (the send_email handler) ---
    Setting("smtp.host", Text(noun="host name"), "localhost", "SMTP server for `send_email`."),
    Setting(
        "smtp.port",
        Integer(min=1, max=65535),
        None,
        "SMTP port.",
        default_doc="25, or 587 with `starttls`, or 465 with `implicit`",
    ),
    Setting(
        "smtp.tls",
        Text(choices=("none", "starttls", "implicit"), fold=str.lower),
        "none",
        "`starttls`: upgrade the connection; `implicit`: TLS from the start; `none`: plain (a"
        " local relay only).",
    ),
    Setting("smtp.username", Text(), None, "Login for the SMTP server; unset: no login."),
    Setting(
        "smtp.password",
        Text(),
        None,
        "Password for the SMTP login. Prefer the environment variable to the file.",
        secret=True,
    ),
    Setting(
        "smtp.from",
        Text(noun="e-mail address"),
        None,
        '`From:` address of the e-mails `send_email` sends, e.g. "Jobs <jobs@example.com>".',
        check=_email_address,
    ),
    # --- files (the process_file handler) ---
    Setting(
        "files.allowed_dirs",
        ListOf(PathKind(), noun="directories"),
        (),
        "Directories `process_file` may read and write; any other path is refused (empty:"
        " every path is refused).",
    ),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
SETTINGS_BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}


def setting(key: str) -> Setting:
    return SETTINGS_BY_KEY[key]


# --- the typed configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    schema: str
    pool_min: int
    pool_max: int


@dataclass(frozen=True)
class ControlConfig:
    socket: Path
    socket_mode: int
    socket_group: str | None
    max_request_bytes: int


@dataclass(frozen=True)
class WorkersConfig:
    count: int
    max_jobs_per_worker: int
    max_memory: int
    max_crashes: int
    prefetch: int


@dataclass(frozen=True)
class HandlersConfig:
    modules: tuple[str, ...]
    builtin: tuple[str, ...]


@dataclass(frozen=True)
class JobsConfig:
    lease_seconds: float
    heartbeat_seconds: float
    poll_interval: float
    default_timeout: float
    default_max_attempts: int
    backoff_base: float
    backoff_factor: float
    backoff_max: float
    retention: float


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout: float
    kill_grace: float


@dataclass(frozen=True)
class HttpConfig:
    listen: str | None
    tokens: tuple[str, ...]
    max_body_bytes: int
    request_timeout: float


@dataclass(frozen=True)
class LoggingConfig:
    level: str
    format: str
    job_events: bool


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: str
    username: str | None
    password: str | None
    from_: str | None


@dataclass(frozen=True)
class FilesConfig:
    allowed_dirs: tuple[Path, ...]


# Section name -> (its dataclass, one line for the docs).  Top-level settings (queues) are
# fields of Config itself.
SECTIONS: dict[str, tuple[type | None, str]] = {
    "database": (DatabaseConfig, "Where jobs are kept."),
    "control": (ControlConfig, "The control socket that jobctl and the HTTP shim use."),
    "workers": (WorkersConfig, "The worker processes that run handler code."),
    "handlers": (HandlersConfig, "Which job types this node can run."),
    "jobs": (JobsConfig, "Leases, polling, and the defaults for timeouts and retries."),
    "queues": (None, "Per-queue concurrency limits."),
    "shutdown": (ShutdownConfig, "How the daemon drains on SIGTERM or SIGINT."),
    "http": (HttpConfig, "The HTTP shim (`jobd http`, or started by `jobd run`)."),
    "logging": (LoggingConfig, "Logs, written to stderr."),
    "smtp": (SmtpConfig, "The SMTP server the `send_email` handler uses."),
    "files": (FilesConfig, "What the `process_file` handler may touch."),
}


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig
    control: ControlConfig
    workers: WorkersConfig
    handlers: HandlersConfig
    jobs: JobsConfig
    queues: dict[str, QueueConfig]
    shutdown: ShutdownConfig
    http: HttpConfig
    logging: LoggingConfig
    smtp: SmtpConfig
    files: FilesConfig
    # Provenance, not configuration: two configs with the same values are equal.
    path: Path | None = field(default=None, compare=False)  # the YAML file read, if any
    # Where each key's value came from ("default", "/etc/jobd/jobd.yaml:7", "environment
    # variable JOBD_WORKERS", "flag --workers"), for messages that must name it.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str) -> Any:
        """The value of a dotted key, e.g. `config.get("jobs.lease_seconds")`."""
        s = SETTINGS_BY_KEY[key]
        holder = getattr(self, s.section) if s.section else self
        return getattr(holder, s.attr)

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """The effective configuration as plain YAML-able data, in the table's order; secrets
        are masked unless asked otherwise."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            value = self.get(s.key)
            if value is None:
                plain = None
            elif mask_secrets and s.secret:
                plain = s.kind.mask(value)
            else:
                plain = s.kind.dump(value)
            if s.section:
                out.setdefault(s.section, {})[s.key.split(".", 1)[1]] = plain
            else:
                out[s.key] = plain
        return out


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """One value as a source gave it, before parsing."""

    key: str
    value: object
    source: str


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then the YAML file (`path`, or `$JOBD_CONFIG`), then `JOBD_*` variables from
    `env`, then `overrides` (dotted key -> value; the CLI's flags; None means "not given")."""
    values = {s.key: s.default_for(env) for s in SETTINGS}
    sources = dict.fromkeys(values, "default")
    config_file = _config_file(path, env)
    raws: list[_Raw] = []
    if config_file:
        raws += read_yaml(config_file)
    raws += _from_env(env)
    raws += _from_overrides(overrides or {})
    for raw in raws:
        _apply(raw, values, sources, env)
    if values["smtp.port"] is None:
        values["smtp.port"] = SMTP_PORTS[values["smtp.tls"]]
    config = _build(values, sources, config_file)
    _check_together(config)
    return config


def _config_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    source = "--config"
    if path is None and env.get(CONFIG_ENV):
        path, source = env[CONFIG_ENV], f"environment variable {CONFIG_ENV}"
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        problem = "is a directory" if file.is_dir() else "no such file"
        raise ConfigError(None, source, f"cannot read the configuration file {file}: {problem}")
    return file


def read_yaml(path: Path) -> list[_Raw]:
    """Every setting the file sets, each with its file:line.  Unknown keys and duplicate keys
    are errors here, before any value is looked at."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, str(path), f"cannot read the configuration file: {exc}") from None
    try:
        # compose, not load: the node tree keeps the line of every key for the messages.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(None, _where(path, mark), f"not valid YAML: {problem}") from None
    if root is None:
        return []  # an empty file (or only comments) sets nothing
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(None, _where(path, root.start_mark), "must be a mapping of sections")
    raws = []
    for key_node, value_node in _entries(root, path, prefix=""):
        name = key_node.value
        where = _where(path, key_node.start_mark)
        if name in SETTINGS_BY_KEY:  # a top-level setting (queues)
            raws.append(_Raw(name, _construct(value_node), where))
        elif name in SECTIONS:
            raws += _read_section(name, value_node, path)
        else:
            raise ConfigError(name, where, f"unknown section{_did_you_mean(name, SECTIONS)}")
    return raws


def _read_section(section: str, node: yaml.Node, path: Path) -> list[_Raw]:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []  # "smtp:" with nothing under it
    if not isinstance(node, yaml.MappingNode):
        keys = ", ".join(s.key for s in SETTINGS if s.section == section)
        raise ConfigError(
            section, _where(path, node.start_mark), f"must be a mapping of settings ({keys})"
        )
    raws = []
    for key_node, value_node in _entries(node, path, prefix=f"{section}."):
        key = f"{section}.{key_node.value}"
        where = _where(path, key_node.start_mark)
        if key not in SETTINGS_BY_KEY:
            raise ConfigError(key, where, f"unknown key{_did_you_mean(key, SETTINGS_BY_KEY)}")
        raws.append(_Raw(key, _construct(value_node), where))
    return raws


def _entries(node: yaml.MappingNode, path: Path, prefix: str) -> Iterator[tuple[Any, yaml.Node]]:
    """The (key node, value node) pairs of a mapping; a key that is not a plain string or that
    appears twice is an error (PyYAML would silently keep the last one)."""
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        where = _where(path, key_node.start_mark)
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            raise ConfigError(None, where, "keys must be plain names")
        key = prefix + key_node.value
        if key in seen:
            raise ConfigError(key, where, f"appears twice (first on line {seen[key]})")
        seen[key] = key_node.start_mark.line + 1
        yield key_node, value_node


def _construct(node: yaml.Node) -> object:
    return yaml.SafeLoader("").construct_document(node)


def _where(path: Path, mark: Any) -> str:
    return f"{path}:{mark.line + 1}" if mark is not None else str(path)


def _did_you_mean(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _from_env(env: Mapping[str, str]) -> list[_Raw]:
    return [
        _Raw(s.key, env[s.env], f"environment variable {s.env}") for s in SETTINGS if s.env in env
    ]


def _from_overrides(overrides: Mapping[str, Any]) -> list[_Raw]:
    raws = []
    for key, value in overrides.items():
        if value is None:
            continue  # a flag that was not given
        s = SETTINGS_BY_KEY.get(key)
        if s is None:
            raise ConfigError(key, "override", f"unknown key{_did_you_mean(key, SETTINGS_BY_KEY)}")
        raws.append(_Raw(key, value, f"flag {s.flag}" if s.flag else "override"))
    return raws


def _apply(raw: _Raw, values: dict[str, Any], sources: dict[str, str], env: Mapping[str, str]):
    s = SETTINGS_BY_KEY[raw.key]
    sources[raw.key] = raw.source
    if raw.value is None or (isinstance(raw.value, str) and not raw.value.strip()):
        values[raw.key] = s.default_for(env)  # empty: back to the default
        return
    try:
        values[raw.key] = s.parse(raw.value)
    except Problem as exc:
        key = f"{raw.key}.{exc.subkey}" if exc.subkey else raw.key
        raise ConfigError(key, raw.source, f"{exc}{_got(s, raw.value)}") from None


def _got(s: Setting, value: object) -> str:
    """The bad value, for the message; never a secret."""
    if not s.secret:
        return f", got {value!r}"
    if isinstance(s.kind, DatabaseUrl) and isinstance(value, str):
        return f", got {mask_url(value)!r}"
    return ""


def _build(values: dict[str, Any], sources: dict[str, str], path: Path | None) -> Config:
    fields: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for s in SETTINGS:
        if s.section:
            fields[s.section][s.attr] = values[s.key]
        else:
            top[s.attr] = values[s.key]
    sections = {name: cls(**fields[name]) for name, (cls, _) in SECTIONS.items() if cls}
    return Config(**sections, **top, path=path, sources=sources)


def _check_together(config: Config) -> None:
    """Rules that involve two settings; the error names the one the user set."""
    db, jobs, http = config.database, config.jobs, config.http
    if db.pool_min > db.pool_max:
        _conflict(
            config,
            ("database.pool_min", "database.pool_max"),
            f"database.pool_min ({db.pool_min}) is above database.pool_max ({db.pool_max})",
        )
    if jobs.heartbeat_seconds >= jobs.lease_seconds:
        _conflict(
            config,
            ("jobs.heartbeat_seconds", "jobs.lease_seconds"),
            f"jobs.heartbeat_seconds ({jobs.heartbeat_seconds:g}) must be less than"
            f" jobs.lease_seconds ({jobs.lease_seconds:g}), or leases expire between heartbeats",
        )
    if http.listen and not http.tokens and not is_loopback(split_host_port(http.listen)[0]):
        _conflict(
            config,
            ("http.listen", "http.tokens"),
            f"{http.listen} is not a loopback address: set http.tokens (JOBD_HTTP_TOKENS)"
            " so that strangers cannot submit jobs",
        )


def _conflict(config: Config, keys: tuple[str, str], problem: str) -> None:
    # Name the key the user set (the first one when both were set), with its source.
    key = next((k for k in keys if config.sources.get(k, "default") != "default"), keys[0])
    raise ConfigError(key, config.sources.get(key, "default"), problem)


def unknown_environment(env: Mapping[str, str] = os.environ) -> list[str]:
    """JOBD_* variables that are no setting: probably typos, which `config check` warns about."""
    return sorted(
        name
        for name in env
        if name.startswith(ENV_PREFIX)
        and name not in SETTINGS_BY_ENV
        and not name.startswith(_OTHER_ENV)
    )


def _check_table() -> None:
    """The dataclasses and the table must hold the same keys; checked at import so a setting
    added to one and not the other fails at once, not at the first load."""
    for section, (cls, _) in SECTIONS.items():
        declared = {s.attr for s in SETTINGS if s.section == section}
        if cls is not None and declared != {f.name for f in dataclasses.fields(cls)}:
            raise RuntimeError(f"config: {cls.__name__} does not match the settings table")
    top = {s.attr for s in SETTINGS if s.section is None}
    config_fields = {f.name for f in dataclasses.fields(Config)} - {"path", "sources"}
    if top | {name for name, (cls, _) in SECTIONS.items() if cls} != config_fields:
        raise RuntimeError("config: Config does not match the settings table")


_check_table()


# --- documentation generated from the table -------------------------------------------------

DOCS_PATH = "docs/configuration.md"
EXAMPLE_PATH = "config/jobd.example.yaml"


def _inline(value: Any) -> str:
    """A value as it would be written in YAML on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _default_text(s: Setting) -> str:
    if isinstance(s.default, Computed):
        return s.default.doc
    if s.default is None:
        return s.default_doc or "unset"
    return f"`{_inline(s.kind.show(s.default))}`"


def _by_section() -> Iterator[tuple[str, str, list[Setting]]]:
    for name, (_, about) in SECTIONS.items():
        yield name, about, [s for s in SETTINGS if (s.section or s.key) == name]


_MARKDOWN_INTRO = f"""\
# Configuration

<!-- Generated from the settings table in jobd/config.py by `python -m jobd.config --write`.
     Do not edit: a test fails when this file and the code disagree. -->

jobd reads its configuration from four sources; a later one overrides an earlier one, key by key:

1. the built-in defaults below;
2. a YAML file, given by `jobd --config PATH` or the `{CONFIG_ENV}` environment variable
   (no file is read unless one is named; `{EXAMPLE_PATH}` shows every key with its default);
3. `JOBD_*` environment variables (the name is `JOBD_` and the key in capitals with dots as
   underscores, except the few short names in the tables);
4. command-line flags: `--config`, `--database-url`, `--log-level` and `--log-format` go with
   every `jobd` command; `--workers`, `--handlers` and `--socket` with `jobd run`; `--listen`
   with `jobd http`.

`jobd config check` validates the result and prints it as YAML, with secrets masked as `{MASK}`.
It prints a warning for each `JOBD_*` variable that is not a setting.

Rules:

- An unknown key (also inside a section, such as `database.urll`) or a bad value is an error that
  names the key and where it came from — the file and line, the environment variable, or the
  flag — and `jobd` exits with status 2.
- An empty value (YAML `null`, an empty environment variable) puts a setting back to its default.
- **Durations** are seconds (`30`, `1.5`) or numbers with units `ms`, `s`, `m`, `h`, `d`, `w`
  (`"250ms"`, `"1h30m"`, `"7d"`).
- **Sizes** are bytes (`1048576`) or numbers with units: `KiB`, `MiB`, `GiB` and bare `K`, `M`,
  `G` are powers of 1024; `kB`, `MB`, `GB` powers of 1000 (`"512MiB"`).
- **Lists** are YAML lists in the file and comma-separated in the environment
  (`JOBD_HANDLER_MODULES=myapp.jobs,myapp.reports`).
- **Secrets** (`http.tokens`, `smtp.password`, the password inside `database.url`) are never
  printed, nor echoed in error messages; pass them in the environment (a systemd
  `EnvironmentFile=` readable by jobd only) rather than in the YAML file.
"""


def render_markdown() -> str:
    """docs/configuration.md, from the table."""
    out = [_MARKDOWN_INTRO]
    for name, about, settings in _by_section():
        out += [f"## `{name}`", "", about, ""]
        out += ["| YAML key | environment | flag | type | default | meaning |"]
        out += ["|---|---|---|---|---|---|"]
        for s in settings:
            meaning = s.help + (f" **{s.kind.secret_note}**" if s.secret else "")
            cells = [
                f"`{s.key}`",
                f"`{s.env}`",
                f"`{s.flag}`" if s.flag else "—",
                s.kind.describe(),
                _default_text(s),
                meaning,
            ]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


_EXAMPLE_INTRO = f"""\
# jobd configuration: every key, set to its default.
#
# Generated from the settings table in jobd/config.py by `python -m jobd.config --write`;
# a test fails when this file and the code disagree.  docs/configuration.md says more.
#
# Use it with `jobd --config PATH` or {CONFIG_ENV}=PATH.  JOBD_* environment variables
# override the file, and command-line flags override both.  A key set to null (or left
# empty) takes its default.  Keep secrets (http.tokens, smtp.password, the database
# password) in the environment rather than here.
"""


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text.replace("`", ""), 92)]


def render_example_yaml() -> str:
    """config/jobd.example.yaml, from the table: loading it gives the defaults."""
    out = [_EXAMPLE_INTRO]
    for name, about, settings in _by_section():
        top_level = settings[0].section is None
        indent = "" if top_level else "  "
        out += _comment(about, "")
        if not top_level:
            out.append(f"{name}:")
        for s in settings:
            where = f"Environment: {s.env}" + (f"; flag: {s.flag}" if s.flag else "") + "."
            secret = f" {s.kind.secret_note}" if s.secret else ""
            out += _comment(f"{s.help} {where}{secret}", indent)
            if isinstance(s.default, Computed) or s.default_doc:
                out += _comment(f"Default: {_default_text(s)}.", indent)
                value = "null"
            else:
                value = "null" if s.default is None else _inline(s.kind.show(s.default))
            if s.key == "queues":
                out += _comment("For example:  queues: {emails: {concurrency: 4}}", indent)
            out.append(f"{indent}{s.key.split('.')[-1]}: {value}")
        out.append("")
    return "\n".join(out)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobd.config", description="Generate jobd's configuration docs."
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help=f"print {DOCS_PATH}")
    what.add_argument("--example", action="store_true", help=f"print {EXAMPLE_PATH}")
    what.add_argument("--write", action="store_true", help="write both into the repository")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(render_markdown())
    elif args.example:
        sys.stdout.write(render_example_yaml())
    else:
        root = Path(__file__).resolve().parent.parent
        (root / DOCS_PATH).write_text(render_markdown(), encoding="utf-8")
        (root / EXAMPLE_PATH).write_text(render_example_yaml(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
