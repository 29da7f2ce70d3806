"""The `jobd` command: `jobd migrate`, `jobd config check`, `jobd run`, `jobd http`.

Exit statuses:  0 success;  1 the command's own "no" (pending migrations under `--check`;
the daemon's workers failed to start);  2 bad usage or configuration (the message names the
key and where it came from);  3 the database cannot be reached.

The flags that set configuration (`--database-url`, `--workers`, …) are made from the settings
table in jobd.config, so their names and help match docs/configuration.md.  The global ones are
accepted both before and after the subcommand (`jobd --database-url URL migrate` and
`jobd migrate --database-url URL`); the later one wins.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import yaml

from jobd import __version__
from jobd.config import Config, ConfigError, load_config, mask_url, setting, unknown_environment
from jobd.errors import Unavailable
from jobd.store import Store, create_store

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

F = TypeVar("F", bound=Callable[..., Any])

# Where the options' callbacks leave their values, in click's per-invocation `ctx.meta` (shared
# by the group's context and the subcommand's), so a subcommand's flag overrides the group's.
_OVERRIDES = "jobd.overrides"
_CONFIG_PATH = "jobd.config_path"


class CliError(click.ClickException):
    """A failure reported as `jobd: message` on stderr, with its exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"jobd: {self.format_message()}", err=True)


def fail(message: str, exit_code: int) -> NoReturn:
    raise CliError(message, exit_code)


# --- options built from the settings table ---------------------------------------------------


def _remember_override(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault(_OVERRIDES, {})[key] = value

    return callback


def setting_option(key: str, metavar: str) -> Callable[[F], F]:
    """A flag for a setting, named and documented by its row in the table.  Its value goes to
    the loader as text, so a bad one is reported like any other: naming the key and the flag."""
    s = setting(key)
    assert s.flag, f"{key} has no flag in the settings table"
    return click.option(
        s.flag,
        key.replace(".", "_"),
        default=None,
        expose_value=False,
        callback=_remember_override(key),
        metavar=metavar,
        help=f"{s.help.replace('`', '')} [env: {s.env}]",
    )


def _remember_path(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[_CONFIG_PATH] = value


def global_options(command: F) -> F:
    """--config, --database-url, --log-level, --log-format: on the group and each subcommand."""
    command = setting_option("logging.format", "json|text")(command)
    command = setting_option("logging.level", "LEVEL")(command)
    command = setting_option("database.url", "URL")(command)
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        default=None,
        expose_value=False,
        callback=_remember_path,
        help="YAML configuration file. [env: JOBD_CONFIG]",
    )(command)


def load(ctx: click.Context) -> Config:
    """The configuration from the file, the environment and this invocation's flags."""
    try:
        return load_config(ctx.meta.get(_CONFIG_PATH), os.environ, ctx.meta.get(_OVERRIDES, {}))
    except ConfigError as exc:
        fail(f"invalid configuration: {exc}", EXIT_CONFIG)


# --- the commands ---------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(__version__, prog_name="jobd")
def main() -> None:
    """jobd: a durable multiprocess job daemon.

    \b
    Configuration comes from a YAML file (--config, JOBD_CONFIG), then JOBD_* environment
    variables, then flags; `jobd config check` shows the result.  See docs/configuration.md.
    """


@main.command()
@click.option("--check", is_flag=True, help="List pending migrations without applying them.")
@global_options
@click.pass_context
def migrate(ctx: click.Context, check: bool) -> None:
    """Bring the database schema up to date.

    \b
    Applies the pending migrations, each in its own transaction (PostgreSQL: under an advisory
    lock, so several nodes may run this at once).  Running it again does nothing.
    With --check, exits 1 and lists the pending migrations if there are any.

    \b
    Example:
      jobd migrate --database-url postgresql://jobd@db.internal/jobs
    """
    config = load(ctx)
    names = _with_store(config, _pending if check else _apply)
    if not names:
        click.echo("database is up to date")
        return
    for name in names:
        click.echo(f"{'pending' if check else 'applied'} {name}")
    if check:
        ctx.exit(EXIT_FAILURE)


async def _apply(store: Store) -> list[str]:
    return await store.migrate()


async def _pending(store: Store) -> list[str]:
    return await store.pending_migrations()


def _with_store(config: Config, action: Callable[[Any], Any]) -> Any:
    """Open the configured store, run `action` on it, close it; Unavailable is exit 3."""

    async def run() -> Any:
        store = create_store(config.database.url, schema=config.database.schema)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except Unavailable as exc:
        url = mask_url(config.database.url)
        fail(f"cannot use the database {url}: {exc.message}", EXIT_UNAVAILABLE)
    except ConfigError as exc:  # e.g. a SQLite file in a directory that does not exist
        fail(f"invalid configuration: {exc}", exc.exit_code)


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@global_options
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the configuration and print it, secrets masked.

    \b
    Prints the effective configuration (defaults, then the file, then JOBD_* variables, then
    flags) as YAML.  Exits 2 with a message naming the key and its source if anything is wrong,
    or with the message `jobd run` would stop with: an enabled sample handler without its
    settings, a handler module that does not import or registers a job type twice.

    \b
    Example:
      JOBD_CONFIG=/etc/jobd/jobd.yaml jobd config check
    """
    config = load(ctx)
    for name in unknown_environment(os.environ):
        click.echo(f"jobd: warning: {name} is not a jobd setting; ignored", err=True)
    for warning in config.warnings:
        click.echo(f"jobd: warning: {warning}", err=True)
    _check_startup(config)
    origin = f" < {config.path}" if config.path else ""
    click.echo(f"# effective jobd configuration: defaults{origin} < environment < flags;")
    click.echo("# secrets masked")
    click.echo(yaml.safe_dump(config.to_dict(mask_secrets=True), sort_keys=False), nl=False)


def _check_startup(config: Config) -> None:
    """What `jobd run` would refuse before touching the database, refused the same way: the
    handlers (jobd.startup.check_handlers) and the schedules they and the file declare."""
    from jobd.schedules import ScheduleError
    from jobd.schedules.registry import declared, node_schedules
    from jobd.startup import StartupError, check_handlers

    try:
        registry = check_handlers(config)
        node_schedules(config.schedules, declared, registry.types())
    except StartupError as exc:
        fail(str(exc), exc.exit_code)
    except ScheduleError as exc:
        fail(f"invalid configuration: {exc}", EXIT_CONFIG)


@main.command()
@click.option("--migrate", "migrate_first", is_flag=True, help="Migrate the database first.")
@setting_option("workers.count", "N")
@setting_option("handlers.modules", "MODULE,...")
@setting_option("control.socket", "PATH")
@global_options
@click.pass_context
def run(ctx: click.Context, migrate_first: bool) -> None:
    """Run the daemon: the supervisor, its workers and the control socket.

    \b
    Example:
      jobd run --workers 4 --handlers myapp.jobs
    """
    from jobd import daemon
    from jobd.startup import StartupError

    config = load(ctx)
    try:
        status = daemon.run(config, migrate=migrate_first)
    except StartupError as exc:
        fail(str(exc), exc.exit_code)
    except ConfigError as exc:  # found when the store opens (a missing SQLite directory)
        fail(f"invalid configuration: {exc}", exc.exit_code)
    ctx.exit(status)


@main.command("http")
@setting_option("http.listen", "HOST:PORT")
@setting_option("control.socket", "PATH")
@global_options
@click.pass_context
def http_command(ctx: click.Context) -> None:
    """Run the HTTP shim: REST over the control socket of a running `jobd run`.

    \b
    Listens on http.listen (default 127.0.0.1:8080); a non-loopback address needs
    http.tokens (JOBD_HTTP_TOKENS).  Stops on SIGTERM or SIGINT.  See docs/http.md, and
    GET /openapi.json for the API.

    \b
    Example:
      JOBD_HTTP_TOKENS=s3cret jobd http --listen 0.0.0.0:8080
    """
    from jobd import http

    config = load(ctx)
    try:
        status = http.serve(http.settings_from_config(config))
    except http.StartError as exc:
        fail(str(exc), exc.exit_code)
    ctx.exit(status)


if __name__ == "__main__":
    main(prog_name="jobd")
