"""What `jobd run` refuses to start with before it touches a database, in one place, so that
`jobd config check` refuses exactly the same things with exactly the same messages.

`check_handlers(config)` is the handler half: an enabled sample handler whose settings are
missing (`smtp.from` for `send_email`, `files.allowed_dirs` for the file handlers), a handler
module that does not import, a job type registered twice.  The configuration's own rules (a bad
value, an unknown key, two settings that contradict each other) are jobd.config's, checked by
`load_config` before this runs.
"""

from __future__ import annotations

from jobd.config import Config
from jobd.handlers import HandlerImportError, Registry, load_modules
from jobd.samples import enabled_modules
from jobd.samples.settings import startup_problems

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


class StartupError(Exception):
    """jobd cannot start; the message says why and what to do, `exit_code` how to exit."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


def handler_modules(config: Config) -> tuple[str, ...]:
    """The modules that register this node's job types: the enabled sample handlers'
    (`handlers.samples`), then `handlers.modules`."""
    return enabled_modules(config.handlers.samples, config.handlers.modules)


def check_handlers(config: Config) -> Registry:
    """The registry of the job types this node would run, or StartupError (exit 2) naming
    what stops it."""
    problems = startup_problems(config)
    if problems:
        raise StartupError("; ".join(problems), EXIT_CONFIG)
    try:
        return load_modules(handler_modules(config))
    except HandlerImportError as exc:
        raise StartupError(str(exc), EXIT_CONFIG) from exc
