"""jobd's configuration: one declarative table of settings, and the loader that fills typed
dataclasses from it.

    kinds     how a value is parsed, checked and written back (durations, sizes, paths, …)
    table     the table's rows and sections, and the table itself (`table()`, `setting()`)
    core      jobd's own sections (the sample handlers declare theirs in jobd.samples)
    sections  the typed dataclasses of jobd's own sections
    model     `Config`, the effective configuration
    loader    `load_config`: defaults < YAML file < JOBD_* environment < flags
    docs      docs/configuration.md and config/jobd.example.yaml, generated from the table

Regenerate the docs after changing the table:  python -m jobd.config --write
"""

from __future__ import annotations

from typing import Any

from jobd.config.core import DEFAULT_HTTP_LISTEN, LOG_LEVELS
from jobd.config.docs import DOCS_PATH, EXAMPLE_PATH, render_example_yaml, render_markdown
from jobd.config.errors import ConfigError, Problem
from jobd.config.kinds import (
    MASK,
    QueueConfig,
    is_loopback,
    mask_url,
    parse_duration,
    parse_size,
    split_host_port,
)
from jobd.config.loader import load_config, read_yaml, unknown_environment
from jobd.config.model import Config
from jobd.config.paths import SUN_PATH_MAX, default_database_url, default_socket_path, state_dir
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
from jobd.config.table import (
    CONFIG_ENV,
    ENV_PREFIX,
    Computed,
    Extension,
    Section,
    Setting,
    setting,
    table,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_HTTP_LISTEN",
    "DOCS_PATH",
    "ENV_PREFIX",
    "EXAMPLE_PATH",
    "LOG_LEVELS",
    "MASK",
    "SETTINGS",
    "SETTINGS_BY_ENV",
    "SETTINGS_BY_KEY",
    "SUN_PATH_MAX",
    "Computed",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DatabaseConfig",
    "Extension",
    "HandlersConfig",
    "HttpConfig",
    "JobsConfig",
    "LoggingConfig",
    "Problem",
    "QueueConfig",
    "Section",
    "Setting",
    "ShutdownConfig",
    "WorkersConfig",
    "default_database_url",
    "default_socket_path",
    "is_loopback",
    "load_config",
    "mask_url",
    "parse_duration",
    "parse_size",
    "read_yaml",
    "render_example_yaml",
    "render_markdown",
    "setting",
    "split_host_port",
    "state_dir",
    "table",
    "unknown_environment",
]


def __getattr__(name: str) -> Any:
    # The table is built on first use (see jobd.config.table), so these are looked up then.
    if name == "SETTINGS":
        return table().settings
    if name == "SETTINGS_BY_KEY":
        return table().by_key
    if name == "SETTINGS_BY_ENV":
        return table().by_env
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
