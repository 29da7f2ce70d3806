"""Loading the configuration: defaults, then the YAML file, then `JOBD_*` variables, then flags.

    defaults  <  YAML file (--config PATH / JOBD_CONFIG)  <  JOBD_* environment  <  flags

An empty value (YAML `null`, an empty environment variable) puts a setting back to its default.
An unknown key or a bad value raises `ConfigError`, whose message names the key and the source
(`/etc/jobd/jobd.yaml:7: database.urll: unknown key (did you mean database.url?)`); the CLI turns
it into exit status 2.  A deprecated name still works, with a warning in `Config.warnings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobd.config.errors import ConfigError, Problem
from jobd.config.kinds import DatabaseUrl, is_loopback, mask_url, split_host_port
from jobd.config.model import Config
from jobd.config.table import CONFIG_ENV, ENV_PREFIX, Section, Setting, table

# JOBD_* variables that are not settings but are not typos either.
_OTHER_ENV = (CONFIG_ENV, "JOBD_TEST_", "JOBD_REQUIRE_POSTGRES")


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
    values = {s.key: s.default_for(env) for s in table().settings}
    sources = dict.fromkeys(values, "default")
    config_file = _config_file(path, env)
    raws: list[_Raw] = []
    if config_file:
        raws += read_yaml(config_file)
    raws += _from_env(env)
    raws += _from_overrides(overrides or {})
    for raw in raws:
        _apply(raw, values, sources, env)
    warnings = _follow_renames(values, sources)
    config = _build(values, sources, config_file, warnings)
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
        section = table().section(name)
        if name in table().by_key:  # a top-level setting (queues)
            raws.append(_Raw(name, _construct(value_node), where))
        elif section is not None:
            raws += _read_section(section, value_node, path)
        else:
            names = [s.name for s in table().sections]
            raise ConfigError(name, where, f"unknown section{_did_you_mean(name, names)}")
    return raws


def _read_section(section: Section, node: yaml.Node, path: Path) -> list[_Raw]:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []  # "smtp:" with nothing under it
    if not isinstance(node, yaml.MappingNode):
        keys = ", ".join(s.key for s in section.settings)
        raise ConfigError(
            section.name, _where(path, node.start_mark), f"must be a mapping of settings ({keys})"
        )
    raws = []
    for key_node, value_node in _entries(node, path, prefix=f"{section.name}."):
        key = f"{section.name}.{key_node.value}"
        where = _where(path, key_node.start_mark)
        if key not in table().by_key:
            raise ConfigError(key, where, f"unknown key{_did_you_mean(key, table().by_key)}")
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


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _from_env(env: Mapping[str, str]) -> list[_Raw]:
    return [
        _Raw(s.key, env[s.env], f"environment variable {s.env}")
        for s in table().settings
        if s.env in env
    ]


def _from_overrides(overrides: Mapping[str, Any]) -> list[_Raw]:
    raws = []
    for key, value in overrides.items():
        if value is None:
            continue  # a flag that was not given
        s = table().by_key.get(key)
        if s is None:
            raise ConfigError(key, "override", f"unknown key{_did_you_mean(key, table().by_key)}")
        raws.append(_Raw(key, value, f"flag {s.flag}" if s.flag else "override"))
    return raws


def _apply(
    raw: _Raw, values: dict[str, Any], sources: dict[str, str], env: Mapping[str, str]
) -> None:
    s = table().by_key[raw.key]
    sources[raw.key] = raw.source
    if raw.value is None or (isinstance(raw.value, str) and not raw.value.strip()):
        values[raw.key] = s.default_for(env)  # empty: back to the default
        return
    try:
        values[raw.key] = s.parse(raw.value)
    except Problem as exc:
        if exc.subkey:  # a field deep in a mapping: the message names it; no dump of the whole
            raise ConfigError(f"{raw.key}.{exc.subkey}", raw.source, str(exc)) from None
        raise ConfigError(raw.key, raw.source, f"{exc}{_got(s, raw.value)}") from None


def _got(s: Setting, value: object) -> str:
    """The bad value, for the message; never a secret."""
    if not s.secret:
        return f", got {value!r}"
    if isinstance(s.kind, DatabaseUrl) and isinstance(value, str):
        return f", got {mask_url(value)!r}"
    return ""


def _follow_renames(values: dict[str, Any], sources: dict[str, str]) -> tuple[str, ...]:
    """Move each deprecated name's value to the setting that replaced it, with a warning; both
    names set is an error that names both."""
    warnings = []
    for old in table().aliases:
        new = table().by_key[str(old.replaced_by)]
        if sources[old.key] == "default":
            continue
        if sources[new.key] != "default":
            raise ConfigError(
                old.key,
                sources[old.key],
                f"is the deprecated name of {new.key}, which is also set ({sources[new.key]}):"
                f" set only {new.key} ({new.env})",
            )
        values[new.key], sources[new.key] = values[old.key], sources[old.key]
        warnings.append(
            f"{old.key} is deprecated (set by {sources[old.key]}): use {new.key} ({new.env})"
            " instead"
        )
    return tuple(warnings)


def _build(
    values: dict[str, Any], sources: dict[str, str], path: Path | None, warnings: tuple[str, ...]
) -> Config:
    built: dict[str, Any] = {}
    for section in table().sections:
        if section.cls is None:
            built.update({s.attr: values[s.key] for s in section.fields})
        else:
            built[section.name] = section.build({s.attr: values[s.key] for s in section.fields})
    core = {f.name for f in dataclasses.fields(Config)}
    extensions = {name: value for name, value in built.items() if name not in core}
    jobd_own = {name: value for name, value in built.items() if name in core}
    return Config(**jobd_own, extensions=extensions, path=path, sources=sources, warnings=warnings)


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
    tokens = http.tokens or http.read_only_tokens
    if http.listen and not tokens and not is_loopback(split_host_port(http.listen)[0]):
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
        and name not in table().by_env
        and not name.startswith(_OTHER_ENV)
    )
