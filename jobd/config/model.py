"""`Config`: the effective configuration, one typed section a field, as the loader builds it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobd.config.kinds import QueueConfig
from jobd.config.sections import (
    ControlConfig,
    DatabaseConfig,
    HandlersConfig,
    HttpConfig,
    JobsConfig,
    LoggingConfig,
    ShutdownConfig,
    WorkersConfig,
)
from jobd.config.table import table

if TYPE_CHECKING:  # jobd.schedules reads its durations with jobd.config's kinds
    from jobd.schedules.definition import Schedule


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
    # Periodic jobs by name, as the configuration file defines them (jobd.schedules).
    schedules: dict[str, Schedule] = field(default_factory=dict)
    # The sections the extension declares (the sample handlers' `smtp` and `files`), by name;
    # read them as attributes too: `config.smtp`.
    extensions: Mapping[str, Any] = field(default_factory=dict)
    # Provenance, not configuration: two configs with the same values are equal.
    path: Path | None = field(default=None, compare=False)  # the YAML file read, if any
    # Where each key's value came from ("default", "/etc/jobd/jobd.yaml:7", "environment
    # variable JOBD_WORKERS", "flag --workers"), for messages that must name it.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # What the user should change though it still works (a deprecated name), one line each.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are no field: an extension's section.  Looked up in
        # __dict__ so that unpickling (before the fields are set) gets an AttributeError.
        extensions = self.__dict__.get("extensions", {})
        if name in extensions:
            return extensions[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get(self, key: str) -> Any:
        """The value of a dotted key, e.g. `config.get("jobs.lease_seconds")`."""
        s = table().by_key[key]
        holder = getattr(self, s.section) if s.section else self
        return getattr(holder, s.attr)

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """The effective configuration as plain YAML-able data, in the table's order; secrets
        are masked unless asked otherwise.  Deprecated names are left out: their value is under
        the new name."""
        out: dict[str, Any] = {}
        for s in table().settings:
            if s.replaced_by:
                continue
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
