"""The settings table: every setting one row (gunicorn's habit).

A row (`Setting`) holds a setting's dotted YAML key, its `JOBD_*` environment variable, its
command-line flag, its kind (how a value is parsed and checked), its default, whether it is a
secret, and its help text.  Rows are grouped in sections (`Section`), each filling one frozen
dataclass.  The loader, `jobd config check`, `config/jobd.example.yaml` and
`docs/configuration.md` are all derived from the table, and tests compare the committed files
with what the table generates, so code and docs cannot drift.

jobd's own sections are in jobd.config.core.  The sample handlers declare theirs (and their job
types) in an `Extension`; the table gains them from `EXTENSION_MODULE`, so the configuration
knows no sample by name.  The table is built on first use rather than at import, because the
extension's module imports the kinds from this package.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jobd.config.kinds import Kind

CONFIG_ENV = "JOBD_CONFIG"
ENV_PREFIX = "JOBD_"

#: The module whose `EXTENSION` declares the sample handlers' settings and job types.
EXTENSION_MODULE = "jobd.samples.sections"


@dataclass(frozen=True)
class Computed:
    """A default that depends on the environment; `doc` says how, for the docs."""

    compute: Callable[[Mapping[str, str]], Any]
    doc: str


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
    # A deprecated name: its value goes to this setting, and it is no field of its own.
    replaced_by: str | None = None

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


#: Fills a section's defaults that depend on its other settings (attribute -> value).
Completion = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Section:
    """A group of settings, and the dataclass they fill (None: the settings sit at the top level
    of the configuration, as `queues` does)."""

    name: str
    about: str  # one line, for the docs
    settings: tuple[Setting, ...]
    cls: type[Any] | None = None
    complete: Completion | None = None

    @property
    def fields(self) -> tuple[Setting, ...]:
        """The settings that are fields of the dataclass: all but the deprecated names."""
        return tuple(s for s in self.settings if s.replaced_by is None)

    def build(self, fields: dict[str, Any]) -> Any:
        """The section's dataclass from its fields' values (attribute -> value)."""
        assert self.cls is not None, f"{self.name} has no dataclass"
        return self.cls(**(self.complete(fields) if self.complete else fields))


@dataclass(frozen=True)
class Extension:
    """What a part of jobd outside the core declares for the configuration: its sections, and
    the job types that `handlers.samples` may enable."""

    sections: tuple[Section, ...]
    sample_types: tuple[str, ...]


class Table:
    """Every section and setting, in the order of the docs; indexed by key and by variable."""

    def __init__(self, sections: tuple[Section, ...]):
        self.sections = sections
        self.settings = tuple(s for section in sections for s in section.settings)
        self.by_key = {s.key: s for s in self.settings}
        self.by_env = {s.env: s for s in self.settings}
        self.aliases = tuple(s for s in self.settings if s.replaced_by)
        for section in sections:
            _check_section(section)

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


def _check_section(section: Section) -> None:
    """A section's dataclass and its rows must hold the same keys, so that a setting added to
    one and not the other fails when the table is built, not at the first load."""
    for s in section.settings:
        if (s.section or s.key) != section.name:
            raise RuntimeError(f"config: {s.key} is not in the {section.name} section")
    if section.cls is not None:
        declared = {s.attr for s in section.fields}
        if declared != {f.name for f in dataclasses.fields(section.cls)}:
            raise RuntimeError(f"config: {section.cls.__name__} does not match the settings table")


@functools.cache
def table() -> Table:
    """The settings table: jobd's own sections, then the extension's."""
    from jobd.config.core import core_sections

    extension: Extension = importlib.import_module(EXTENSION_MODULE).EXTENSION
    return Table((*core_sections(extension.sample_types), *extension.sections))


def setting(key: str) -> Setting:
    return table().by_key[key]
