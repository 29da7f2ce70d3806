"""The settings the sample handlers read (`smtp.*`, `files.*`), in the worker processes.

Workers are not given the daemon's `Config`: they come from a fork server that only imports
modules.  So the daemon hands each worker a snapshot of these two sections through the worker
set-up hook it already passes to the supervisor (`WorkerSetup`, built by
`jobd.daemon.worker_setup`), and a handler asks `current()` for them.  A snapshot, not a
second `load_config()` in every worker, so that every worker of a daemon runs with the
configuration the daemon started with — even when the YAML file is edited while it runs, or
was named by `--config` rather than in the environment (docs/adr/0012-handler-settings.md).

Outside the daemon (a script or a test calling a handler directly) nothing has been configured;
`current()` then loads the configuration from the usual sources once (`JOBD_CONFIG`, `JOBD_*`).
Tests set their own with `configure()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from jobd.config import Config, load_config
from jobd.samples.sections import FILES, SMTP, FilesConfig, SmtpConfig


@dataclass(frozen=True)
class HandlerSettings:
    smtp: SmtpConfig
    files: FilesConfig

    @classmethod
    def from_config(cls, config: Config) -> HandlerSettings:
        return cls(smtp=config.extensions[SMTP.name], files=config.extensions[FILES.name])


_lock = threading.Lock()
_current: HandlerSettings | None = None


def configure(settings: HandlerSettings | None) -> None:
    """Set this process's handler settings (None: forget them, so the next `current()`
    loads them again)."""
    global _current
    with _lock:
        _current = settings


def current() -> HandlerSettings:
    """This process's handler settings: the daemon's snapshot, else loaded once from the
    environment (a ConfigError names the bad key)."""
    global _current
    with _lock:
        if _current is None:
            _current = HandlerSettings.from_config(load_config())
        return _current


@dataclass(frozen=True)
class WorkerSetup:
    """The worker set-up hook the daemon gives the supervisor when sample handlers are enabled:
    the logging set-up, then `configure(settings)`.  Pickled to each worker as it starts."""

    setup_logging: Callable[[], None]
    settings: HandlerSettings = field(repr=False)  # holds smtp.password

    def __call__(self) -> None:
        self.setup_logging()
        configure(self.settings)


def startup_problems(config: Config) -> list[str]:
    """Why the enabled sample handlers cannot work with `config`: found when jobd starts,
    rather than by every job failing later."""
    problems = []
    samples = config.handlers.samples
    settings = HandlerSettings.from_config(config)
    if "send_email" in samples and not settings.smtp.from_:
        problems.append(
            "handlers.samples enables send_email but smtp.from is not set (JOBD_SMTP_FROM):"
            " e-mails need a From address"
        )
    file_handlers = [name for name in ("process_file", "generate_report") if name in samples]
    if file_handlers and not settings.files.allowed_dirs:
        problems.append(
            f"handlers.samples enables {' and '.join(file_handlers)} but files.allowed_dirs is"
            " empty (JOBD_FILES_ALLOWED_DIRS): every path would be refused"
        )
    return problems
