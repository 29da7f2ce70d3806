"""Configuration: the settings table, the loader's sources and errors, and the generated docs.

Every test passes its own `env`, so nothing here reads the real environment or home directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from jobd import config as cfg
from jobd.config import (
    SETTINGS,
    ConfigError,
    QueueConfig,
    default_socket_path,
    docs,
    load_config,
    mask_url,
    parse_duration,
    parse_size,
    state_dir,
)

ROOT = Path(__file__).resolve().parents[2]
HOME = {"HOME": "/home/ann"}


def write(tmp_path: Path, text: str, name: str = "jobd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(**kwargs: object) -> ConfigError:
    kwargs.setdefault("env", HOME)
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)  # type: ignore[arg-type]
    return info.value


# --- names users rely on (documented in docs/configuration.md) -----------------------------


@pytest.mark.parametrize(
    ("key", "env", "flag"),
    [
        ("database.url", "JOBD_DATABASE_URL", "--database-url"),
        ("control.socket", "JOBD_SOCKET", "--socket"),
        ("workers.count", "JOBD_WORKERS", "--workers"),
        ("handlers.modules", "JOBD_HANDLER_MODULES", "--handlers"),
        ("http.listen", "JOBD_HTTP_LISTEN", "--listen"),
        ("http.tokens", "JOBD_HTTP_TOKENS", None),
        ("logging.level", "JOBD_LOGGING_LEVEL", "--log-level"),
        ("logging.format", "JOBD_LOGGING_FORMAT", "--log-format"),
        ("smtp.host", "JOBD_SMTP_HOST", None),
        ("files.allowed_dirs", "JOBD_FILES_ALLOWED_DIRS", None),
        ("database.schema", "JOBD_DATABASE_SCHEMA", None),
    ],
)
def test_the_names_users_rely_on(key: str, env: str, flag: str | None) -> None:
    setting = cfg.setting(key)
    assert (setting.env, setting.flag) == (env, flag)


def test_every_key_the_issues_name_is_in_the_table() -> None:
    named = {
        "database": "url schema pool_min pool_max",
        "control": "socket socket_mode socket_group max_request_bytes",
        "workers": "count max_jobs_per_worker max_memory max_crashes prefetch",
        "handlers": "modules samples builtin",
        "jobs": "lease_seconds heartbeat_seconds poll_interval default_timeout"
        " default_max_attempts backoff_base backoff_factor backoff_max retention",
        "shutdown": "drain_timeout kill_grace",
        "http": "listen tokens max_body_bytes request_timeout",
        "logging": "level format",
        "smtp": "host port tls username password from",
        "files": "allowed_dirs",
    }
    keys = {f"{section}.{name}" for section, names in named.items() for name in names.split()}
    assert keys | {"queues"} <= set(cfg.SETTINGS_BY_KEY)


def test_environment_names_are_unique_and_follow_the_pattern() -> None:
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    short = {"JOBD_SOCKET", "JOBD_WORKERS", "JOBD_HANDLER_MODULES"}  # the documented short names
    for s in SETTINGS:
        if s.env not in short:
            assert s.env == "JOBD_" + s.key.replace(".", "_").upper()


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: s.key)
def test_every_default_round_trips_through_its_kind(s: cfg.Setting) -> None:
    default = s.default_for(HOME)
    if default is not None:
        assert s.parse(s.kind.dump(default)) == default
        assert s.parse(s.kind.show(default)) == default


# --- defaults ----------------------------------------------------------------------------------


def test_defaults() -> None:
    c = load_config(env=HOME)
    assert c.database.url == "sqlite:///home/ann/.local/state/jobd/jobd.db"
    assert c.database.schema == "jobd"
    assert c.control.socket_mode == 0o660
    assert c.control.max_request_bytes == 1024 * 1024
    assert c.workers.count == (os.cpu_count() or 1)
    assert (c.workers.max_jobs_per_worker, c.workers.max_memory) == (0, 0)
    assert (c.workers.max_crashes, c.workers.prefetch) == (3, 1)
    assert c.handlers.modules == () and c.handlers.samples == ()
    assert (c.jobs.lease_seconds, c.jobs.heartbeat_seconds, c.jobs.poll_interval) == (30, 10, 1)
    assert (c.jobs.default_timeout, c.jobs.default_max_attempts) == (3600, 3)
    assert (c.jobs.backoff_base, c.jobs.backoff_factor, c.jobs.backoff_max) == (1, 2, 300)
    assert c.jobs.retention == 7 * 86400 and c.jobs.prune_interval == 60
    assert c.queues == {}
    assert (c.shutdown.drain_timeout, c.shutdown.kill_grace) == (30, 5)
    assert c.http.listen is None and c.http.tokens == ()
    assert (c.http.max_body_bytes, c.http.request_timeout) == (1024 * 1024, 30)
    assert (c.logging.level, c.logging.format) == ("INFO", "json")
    assert (c.smtp.host, c.smtp.port, c.smtp.tls) == ("localhost", 25, "none")
    assert c.smtp.password is None and c.smtp.from_ is None
    assert c.files.allowed_dirs == ()
    assert c.path is None
    assert set(c.sources.values()) == {"default"}


def test_the_database_defaults_to_a_sqlite_file_under_xdg_state_home() -> None:
    env = {**HOME, "XDG_STATE_HOME": "/data/state"}
    assert load_config(env=env).database.url == "sqlite:///data/state/jobd/jobd.db"


def test_a_relative_xdg_state_home_is_ignored_as_the_spec_says() -> None:
    assert state_dir({**HOME, "XDG_STATE_HOME": "state"}) == Path("/home/ann/.local/state/jobd")


def test_a_system_service_keeps_its_state_in_systemds_state_directory() -> None:
    env = {**HOME, "XDG_STATE_HOME": "/data/state", "STATE_DIRECTORY": "/var/lib/jobd"}
    assert load_config(env=env).database.url == "sqlite:///var/lib/jobd/jobd.db"
    # A unit listing several StateDirectory= entries gets them colon-separated: the first wins.
    assert state_dir({"STATE_DIRECTORY": "/var/lib/jobd:/var/lib/other"}) == Path("/var/lib/jobd")


def test_the_socket_is_in_systemds_runtime_directory_for_a_service() -> None:
    env = {**HOME, "XDG_RUNTIME_DIR": "/run/user/1000", "RUNTIME_DIRECTORY": "/run/jobd"}
    assert load_config(env=env).control.socket == Path("/run/jobd/jobd.sock")


def test_the_socket_is_in_xdg_runtime_dir_for_a_user() -> None:
    env = {**HOME, "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert load_config(env=env).control.socket == Path("/run/user/1000/jobd.sock")


def test_without_a_runtime_directory_the_socket_is_in_the_state_directory() -> None:
    assert default_socket_path(HOME) == Path("/home/ann/.local/state/jobd/jobd.sock")
    assert default_socket_path({**HOME, "STATE_DIRECTORY": "/var/lib/jobd"}) == Path(
        "/var/lib/jobd/jobd.sock"
    )


def test_a_state_directory_too_long_for_a_socket_address_falls_back_to_tmp() -> None:
    env = {"HOME": "/home/" + "x" * 120}
    assert default_socket_path(env) == Path(f"/tmp/jobd-{os.getuid()}/jobd.sock")


def test_smtp_port_follows_tls_unless_set() -> None:
    assert load_config(env={**HOME, "JOBD_SMTP_TLS": "starttls"}).smtp.port == 587
    assert load_config(env={**HOME, "JOBD_SMTP_TLS": "implicit"}).smtp.port == 465
    env = {**HOME, "JOBD_SMTP_TLS": "implicit", "JOBD_SMTP_PORT": "2465"}
    assert load_config(env=env).smtp.port == 2465


# --- sources and precedence --------------------------------------------------------------------


def test_precedence_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "workers:\n  count: 2\n  max_crashes: 5\njobs:\n  retention: 1d\n")
    env = {**HOME, "JOBD_WORKERS": "3", "JOBD_JOBS_RETENTION": "2d"}
    c = load_config(path, env=env, overrides={"workers.count": "4"})
    assert c.workers.count == 4  # flag beats environment beats file
    assert c.jobs.retention == 2 * 86400  # environment beats file
    assert c.workers.max_crashes == 5  # file beats default
    assert c.workers.prefetch == 1  # default
    assert c.sources["workers.count"] == "flag --workers"
    assert c.sources["jobs.retention"] == "environment variable JOBD_JOBS_RETENTION"
    assert c.sources["workers.max_crashes"] == f"{path}:3"
    assert c.sources["workers.prefetch"] == "default"
    assert c.path == path


def test_the_file_can_be_named_by_jobd_config(tmp_path: Path) -> None:
    path = write(tmp_path, "workers:\n  count: 7\n")
    assert load_config(env={**HOME, "JOBD_CONFIG": str(path)}).workers.count == 7


def test_an_explicit_path_beats_jobd_config(tmp_path: Path) -> None:
    a = write(tmp_path, "workers:\n  count: 7\n", "a.yaml")
    b = write(tmp_path, "workers:\n  count: 8\n", "b.yaml")
    assert load_config(b, env={**HOME, "JOBD_CONFIG": str(a)}).workers.count == 8


def test_flags_that_were_not_given_are_none_and_change_nothing() -> None:
    c = load_config(env={**HOME, "JOBD_WORKERS": "3"}, overrides={"workers.count": None})
    assert c.workers.count == 3


def test_an_empty_value_puts_the_default_back(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  listen: 127.0.0.1:9000\nworkers:\n  prefetch: 0\n")
    c = load_config(path, env={**HOME, "JOBD_HTTP_LISTEN": "", "JOBD_WORKERS_PREFETCH": " "})
    assert c.http.listen is None and c.workers.prefetch == 1
    assert load_config(write(tmp_path, "smtp:\n  port:\nfiles:\n"), env=HOME).smtp.port == 25


def test_an_empty_file_sets_nothing(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing yet\n"), env=HOME) == load_config(env=HOME)


def test_lists_come_from_yaml_lists_or_comma_separated_text(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  modules: [myapp.jobs, myapp.reports]\n")
    assert load_config(path, env=HOME).handlers.modules == ("myapp.jobs", "myapp.reports")
    env = {
        **HOME,
        "JOBD_HANDLER_MODULES": "a.b, c ,",
        "JOBD_FILES_ALLOWED_DIRS": "/srv/in,/srv/out",
    }
    c = load_config(env=env)
    assert c.handlers.modules == ("a.b", "c")
    assert c.files.allowed_dirs == (Path("/srv/in"), Path("/srv/out"))
    c = load_config(env=HOME, overrides={"handlers.modules": "x.y"})
    assert c.handlers.modules == ("x.y",)


def test_queues_from_yaml_and_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "queues:\n  emails: {concurrency: 4}\n  reports:\n    concurrency: 1\n")
    expected = {"emails": QueueConfig(4), "reports": QueueConfig(1)}
    assert load_config(path, env=HOME).queues == expected
    assert load_config(env={**HOME, "JOBD_QUEUES": "emails=4, reports=1"}).queues == expected


def test_the_effective_configuration_printed_loads_back_to_the_same(tmp_path: Path) -> None:
    env = {**HOME, "JOBD_QUEUES": "a=2", "JOBD_HTTP_TOKENS": "t1", "JOBD_SMTP_PASSWORD": "pw"}
    c = load_config(env=env, overrides={"logging.level": "debug", "database.url": "memory://"})
    path = write(tmp_path, yaml.safe_dump(c.to_dict(mask_secrets=False)))
    assert load_config(path, env=HOME) == c


# --- errors name the key and the source ---------------------------------------------------------


def test_an_unknown_key_in_the_file_names_the_key_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  schema: jobd\n  urll: sqlite:///x.db\n")
    exc = error(path=path)
    assert (exc.key, exc.source) == ("database.urll", f"{path}:3")
    assert str(exc) == f"{path}:3: database.urll: unknown key (did you mean database.url?)"
    assert exc.exit_code == 2


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    exc = error(path=write(tmp_path, "worker:\n  count: 2\n"))
    assert exc.key == "worker" and "unknown section (did you mean workers?)" in str(exc)


def test_an_unknown_key_inside_a_queue_is_named_in_full(tmp_path: Path) -> None:
    path = write(tmp_path, "queues:\n  emails: {concurrancy: 4}\n")
    exc = error(path=path)
    assert exc.key == "queues.emails.concurrancy" and str(path) in exc.source
    assert "unknown key" in str(exc)


def test_a_bad_queue_concurrency_is_named_in_full(tmp_path: Path) -> None:
    exc = error(env={**HOME, "JOBD_QUEUES": "emails=0"})
    assert exc.key == "queues.emails.concurrency"
    assert exc.source == "environment variable JOBD_QUEUES"


def test_a_section_must_be_a_mapping(tmp_path: Path) -> None:
    exc = error(path=write(tmp_path, "database: sqlite:///x.db\n"))
    assert exc.key == "database" and "must be a mapping of settings (database.url" in str(exc)


def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(tmp_path: Path) -> None:
    exc = error(path=write(tmp_path, "workers:\n  count: 2\n  count: 3\n"))
    assert exc.key == "workers.count" and "appears twice (first on line 2)" in str(exc)


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "workers:\n  count: [2\n")
    exc = error(path=path)
    assert exc.source.startswith(f"{path}:") and "not valid YAML" in str(exc)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    exc = error(path=write(tmp_path, "- workers\n"))
    assert "must be a mapping of sections" in str(exc)


def test_a_missing_file_is_named_with_how_it_was_given(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(error(path=missing)) == (
        f"--config: cannot read the configuration file {missing}: no such file"
    )
    exc = error(env={**HOME, "JOBD_CONFIG": str(missing)})
    assert exc.source == "environment variable JOBD_CONFIG"


def test_a_bad_value_in_the_file_names_key_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "workers:\n  count: many\n")
    assert str(error(path=path)) == (f"{path}:2: workers.count: must be an integer, got 'many'")


def test_a_bad_value_in_the_environment_names_the_variable() -> None:
    exc = error(env={**HOME, "JOBD_WORKERS": "lots"})
    assert (
        str(exc)
        == "environment variable JOBD_WORKERS: workers.count: must be an integer, got 'lots'"
    )


def test_a_bad_flag_names_the_flag() -> None:
    exc = error(overrides={"logging.level": "LOUD"})
    assert (exc.key, exc.source) == ("logging.level", "flag --log-level")
    assert "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in str(exc)


@pytest.mark.parametrize(
    ("env_var", "value", "problem"),
    [
        ("JOBD_WORKERS", "0", "must be at least 1"),
        ("JOBD_JOBS_POLL_INTERVAL", "2", "must be more than 0 and at most 1"),
        ("JOBD_JOBS_LEASE_SECONDS", "soon", "must be a duration"),
        ("JOBD_WORKERS_MAX_MEMORY", "lots", "must be a size in bytes"),
        ("JOBD_CONTROL_SOCKET_MODE", "0999", "must be an octal file mode"),
        ("JOBD_HTTP_LISTEN", "localhost", "must be HOST:PORT"),
        ("JOBD_HTTP_LISTEN", "127.0.0.1:99999", "must be HOST:PORT"),
        ("JOBD_SOCKET", "relative/jobd.sock", "must be an absolute path"),
        ("JOBD_SOCKET", "/" + "s" * 120, "too long for a Unix socket"),
        ("JOBD_DATABASE_URL", "mysql://localhost/jobs", "must start with postgresql://"),
        ("JOBD_DATABASE_URL", "sqlite://jobd.db", "needs an absolute path"),
        ("JOBD_DATABASE_SCHEMA", "my schema", "must be an SQL identifier"),
        ("JOBD_HANDLER_MODULES", "myapp/jobs.py", "item 1: must be a dotted module name"),
        ("JOBD_HANDLERS_SAMPLES", "send_email,send_fax", "item 2: must be one of send_email"),
        ("JOBD_HANDLERS_BUILTIN", "send_email,send_fax", "item 2: must be one of send_email"),
        ("JOBD_SMTP_TLS", "ssl", "must be one of none, starttls, implicit"),
        ("JOBD_SMTP_FROM", "nobody", "must be an e-mail address"),
        ("JOBD_FILES_ALLOWED_DIRS", "/srv/ok,data", "item 2: must be an absolute path"),
        ("JOBD_JOBS_BACKOFF_FACTOR", "0.5", "must be at least 1"),
        ("JOBD_JOBS_RETENTION", "-1", "must be at least 0"),
        ("JOBD_JOBS_PRUNE_INTERVAL", "0.5", "must be at least 1"),
        ("JOBD_QUEUES", "emails", 'must be "name=concurrency'),
    ],
)
def test_bad_values_are_refused_with_a_reason(env_var: str, value: str, problem: str) -> None:
    exc = error(env={**HOME, env_var: value})
    assert exc.source == f"environment variable {env_var}"
    assert problem in exc.problem


def test_yaml_types_are_checked(tmp_path: Path) -> None:
    exc = error(path=write(tmp_path, "workers:\n  count: true\n"))
    assert "must be an integer" in str(exc)
    exc = error(path=write(tmp_path, "http:\n  tokens: {a: 1}\n"))
    assert exc.key == "http.tokens" and "must be a list of tokens" in str(exc)


def test_settings_that_must_agree_name_the_one_that_was_set() -> None:
    exc = error(env={**HOME, "JOBD_JOBS_LEASE_SECONDS": "5"})
    assert exc.key == "jobs.lease_seconds"
    assert exc.source == "environment variable JOBD_JOBS_LEASE_SECONDS"
    assert "heartbeat_seconds (10) must be less than jobs.lease_seconds (5)" in exc.problem
    exc = error(overrides={"database.pool_min": "10"})
    assert exc.key == "database.pool_min" and "is above database.pool_max (8)" in exc.problem


def test_listening_beyond_loopback_needs_a_token() -> None:
    exc = error(env={**HOME, "JOBD_HTTP_LISTEN": "0.0.0.0:8080"})
    assert exc.key == "http.listen" and "set http.tokens" in exc.problem
    env = {**HOME, "JOBD_HTTP_LISTEN": "0.0.0.0:8080", "JOBD_HTTP_TOKENS": "t"}
    assert load_config(env=env).http.listen == "0.0.0.0:8080"
    for loopback in ("127.0.0.1:8080", "localhost:0", "[::1]:8080"):
        assert load_config(env={**HOME, "JOBD_HTTP_LISTEN": loopback}).http.listen == loopback


def test_an_unknown_override_key_is_an_error() -> None:
    assert error(overrides={"workers.cnt": 2}).key == "workers.cnt"


def test_unknown_jobd_variables_are_reported_for_a_warning() -> None:
    env = {"JOBD_WORKERS": "2", "JOBD_WORKER": "2", "JOBD_CONFIG": "x", "JOBD_TEST_PG_URL": "x"}
    assert cfg.unknown_environment(env) == ["JOBD_WORKER"]


# --- sizes, durations, modes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("7d", 604800),
        ("2w", 1209600),
        ("1D", 86400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "5m s", "five", "1h-30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(cfg.Problem):
        parse_duration(text)


def test_non_finite_durations_are_refused() -> None:
    assert "finite" in error(env={**HOME, "JOBD_SHUTDOWN_DRAIN_TIMEOUT": "inf"}).problem


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("512MiB", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("512 mib", 512 * 1024**2),
        ("1GB", 10**9),
        ("4kB", 4000),
        ("4KiB", 4096),
        ("1.5KiB", 1536),
        ("10b", 10),
        ("2T", 2 * 1024**4),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "1.3B", "-1", "1 XB", "1e6"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(cfg.Problem):
        parse_size(text)


def test_sizes_and_durations_from_yaml(tmp_path: Path) -> None:
    text = "workers:\n  max_memory: 512MiB\njobs:\n  retention: 7d\n  lease_seconds: 45\n"
    c = load_config(write(tmp_path, text), env=HOME)
    assert c.workers.max_memory == 512 * 1024**2
    assert (c.jobs.retention, c.jobs.lease_seconds) == (604800, 45)


@pytest.mark.parametrize(
    ("yaml_value", "mode"), [('"0660"', 0o660), ("0o640", 0o640), ("0600", 0o600), ('"600"', 0o600)]
)
def test_socket_mode_is_octal(tmp_path: Path, yaml_value: str, mode: int) -> None:
    path = write(tmp_path, f"control:\n  socket_mode: {yaml_value}\n")
    assert load_config(path, env=HOME).control.socket_mode == mode


def test_an_unquoted_decimal_mode_is_refused_rather_than_misread(tmp_path: Path) -> None:
    # YAML reads an unquoted 660 as decimal 660 (0o1224): out of range, so refused.
    exc = error(path=write(tmp_path, "control:\n  socket_mode: 660\n"))
    assert "quote it in YAML" in exc.problem


def test_paths_expand_the_home_directory(tmp_path: Path) -> None:
    c = load_config(env={**HOME, "JOBD_FILES_ALLOWED_DIRS": "~/in"})
    assert c.files.allowed_dirs == (Path(os.path.expanduser("~/in")),)


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://jobd:s3cret@db:5432/jobs", "postgresql://jobd:***@db:5432/jobs"),
        ("postgresql://jobd:p@ss@db/jobs", "postgresql://jobd:***@db/jobs"),
        ("postgresql://jobd:p/s#s@db/jobs", "postgresql://jobd:***@db/jobs"),
        ("postgresql://jobd@db/jobs", "postgresql://jobd@db/jobs"),
        ("postgresql://db/jobs?password=s3cret&sslmode=require",
         "postgresql://db/jobs?password=***&sslmode=require"),
        ("postgresql://u:a@db/jobs?sslmode=require&password=b",
         "postgresql://u:***@db/jobs?sslmode=require&password=***"),
        ("sqlite:///var/lib/jobd/jobd.db", "sqlite:///var/lib/jobd/jobd.db"),
    ],
)  # fmt: skip
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_secrets_are_masked_when_the_configuration_is_printed() -> None:
    env = {
        **HOME,
        "JOBD_DATABASE_URL": "postgresql://jobd:s3cret@db/jobs",
        "JOBD_HTTP_TOKENS": "tok1,tok2",
        "JOBD_SMTP_PASSWORD": "hunter2",
    }
    c = load_config(env=env)
    printed = yaml.safe_dump(c.to_dict())
    for secret in ("s3cret", "tok1", "tok2", "hunter2"):
        assert secret not in printed
    shown = c.to_dict()
    assert shown["database"]["url"] == "postgresql://jobd:***@db/jobs"
    assert shown["http"]["tokens"] == ["***", "***"]
    assert shown["smtp"]["password"] == "***"
    assert c.to_dict(mask_secrets=False)["smtp"]["password"] == "hunter2"
    assert "hunter2" not in repr(c.to_dict())


def test_an_unset_secret_shows_as_unset_not_as_a_mask() -> None:
    shown = load_config(env=HOME).to_dict()
    assert shown["smtp"]["password"] is None and shown["http"]["tokens"] == []


def test_a_bad_secret_is_not_echoed_in_the_error() -> None:
    exc = error(env={**HOME, "JOBD_DATABASE_URL": "mysql://jobd:s3cret@db/jobs"})
    assert "s3cret" not in str(exc) and "mysql://jobd:***@db/jobs" in str(exc)
    exc = error(env={**HOME, "JOBD_HTTP_LISTEN": "0.0.0.0:80", "JOBD_HTTP_TOKENS": ","})
    assert exc.key == "http.listen"  # an all-empty token list is no token


def test_a_secret_with_a_bad_type_is_not_echoed(tmp_path: Path) -> None:
    exc = error(path=write(tmp_path, "smtp:\n  password: [hunter2]\n"))
    assert exc.key == "smtp.password" and "hunter2" not in str(exc)


# --- handlers.builtin, the deprecated name of handlers.samples -----------------------------------


def test_the_deprecated_name_still_enables_samples_with_a_warning() -> None:
    c = load_config(env={**HOME, "JOBD_HANDLERS_BUILTIN": "send_email"})
    assert c.handlers.samples == ("send_email",)
    assert c.warnings == (
        "handlers.builtin is deprecated (set by environment variable JOBD_HANDLERS_BUILTIN):"
        " use handlers.samples (JOBD_HANDLERS_SAMPLES) instead",
    )
    assert "builtin" not in c.to_dict()["handlers"]


def test_the_new_name_gives_no_warning() -> None:
    c = load_config(env={**HOME, "JOBD_HANDLERS_SAMPLES": "send_email"})
    assert c.handlers.samples == ("send_email",) and c.warnings == ()


def test_both_names_set_is_an_error_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path, "handlers:\n  samples: [send_email]\n")
    exc = error(path=path, env={**HOME, "JOBD_HANDLERS_BUILTIN": "process_file"})
    assert exc.key == "handlers.builtin"
    assert "handlers.samples" in str(exc) and "handlers.builtin" in str(exc)
    assert f"{path}:2" in str(exc)


# --- the docs and the example are generated from the table ------------------------------------


def test_docs_configuration_md_is_in_step_with_the_code() -> None:
    committed = (ROOT / cfg.DOCS_PATH).read_text(encoding="utf-8")
    assert committed == cfg.render_markdown(), (
        f"{cfg.DOCS_PATH} is out of date: run `python -m jobd.config --write`"
    )


def test_the_example_yaml_is_in_step_with_the_code() -> None:
    committed = (ROOT / cfg.EXAMPLE_PATH).read_text(encoding="utf-8")
    assert committed == cfg.render_example_yaml(), (
        f"{cfg.EXAMPLE_PATH} is out of date: run `python -m jobd.config --write`"
    )


def test_the_example_documents_every_key_and_loads_to_the_defaults() -> None:
    path = ROOT / cfg.EXAMPLE_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    top_level = {"queues", "schedules"}  # settings, not sections
    in_file = {
        f"{section}.{key}" if section not in top_level else section
        for section, keys in data.items()
        for key in (keys if section not in top_level else [None])
    }
    # Every key but the deprecated names, which would conflict with their new ones.
    assert in_file == {s.key for s in SETTINGS if not s.replaced_by}
    env = {**HOME, "XDG_RUNTIME_DIR": "/run/user/1000"}
    loaded = load_config(path, env=env)
    assert loaded == load_config(env=env)
    assert set(loaded.sources.values()) - {"default"}  # it really was read from the file


def test_the_docs_name_every_key_environment_variable_and_flag() -> None:
    text = (ROOT / cfg.DOCS_PATH).read_text(encoding="utf-8")
    for s in SETTINGS:
        assert f"`{s.key}`" in text and f"`{s.env}`" in text
        if s.flag:
            assert f"`{s.flag}`" in text


def test_the_generator_prints_what_is_committed(capsys: pytest.CaptureFixture[str]) -> None:
    assert docs.main(["--markdown"]) == 0
    assert capsys.readouterr().out == cfg.render_markdown()
    assert docs.main(["--example"]) == 0
    assert capsys.readouterr().out == cfg.render_example_yaml()
