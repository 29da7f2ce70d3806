"""`jobd config check` and `jobd migrate` as a user runs them: real subprocesses, real exit
statuses, real databases (a SQLite file here, a PostgreSQL schema of the test run's database).

Each run gets a clean environment: no JOBD_* variable of the caller's, and XDG folders and HOME
inside the test's tmp_path, so no real configuration or state is read or written.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def jobd(tmp_path: Path):
    """Run `python -m jobd.cli ARGS` with extra environment variables; return the result."""
    home = tmp_path / "home"
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "XDG_"))}
    base.update(
        HOME=str(home),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        base.pop(name, None)

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobd.cli", *args],
            cwd=tmp_path,
            env={**base, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def migrations(dialect: str) -> list[str]:
    return sorted(
        p.stem for p in (ROOT / "migrations" / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql")
    )


# --- jobd config check -----------------------------------------------------------------------


def test_config_check_prints_the_effective_configuration(jobd, tmp_path: Path) -> None:
    config = tmp_path / "jobd.yaml"
    config.write_text("workers:\n  count: 2\njobs:\n  retention: 1d\n", encoding="utf-8")
    result = jobd("--config", str(config), "config", "check", JOBD_JOBS_LEASE_SECONDS="45")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["workers"]["count"] == 2
    assert shown["jobs"]["retention"] == 86400
    assert shown["jobs"]["lease_seconds"] == 45
    assert shown["database"]["url"] == f"sqlite://{tmp_path / 'state' / 'jobd' / 'jobd.db'}"
    assert shown["control"]["socket"] == str(tmp_path / "run" / "jobd.sock")


def test_config_check_masks_every_secret(jobd) -> None:
    result = jobd(
        "config",
        "check",
        JOBD_DATABASE_URL="postgresql://jobd:s3cret-pw@db.internal/jobs",
        JOBD_HTTP_TOKENS="token-one,token-two",
        JOBD_SMTP_PASSWORD="hunter2",
    )
    assert result.returncode == 0, result.stderr
    for secret in ("s3cret-pw", "token-one", "token-two", "hunter2"):
        assert secret not in result.stdout + result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["database"]["url"] == "postgresql://jobd:***@db.internal/jobs"
    assert shown["http"]["tokens"] == ["***", "***"]
    assert shown["smtp"]["password"] == "***"


def test_flags_after_the_subcommand_beat_the_environment(jobd) -> None:
    result = jobd("config", "check", "--log-level", "debug", JOBD_LOGGING_LEVEL="ERROR")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["logging"]["level"] == "DEBUG"


def test_config_check_warns_about_a_misspelt_variable(jobd) -> None:
    result = jobd("config", "check", JOBD_WORKER="4")
    assert result.returncode == 0
    assert "JOBD_WORKER is not a jobd setting" in result.stderr


def test_config_check_warns_about_the_deprecated_handlers_builtin(jobd, tmp_path: Path) -> None:
    # process_file with a directory to work in: without one, jobd run (and so config check)
    # refuses the configuration.
    result = jobd(
        "config",
        "check",
        JOBD_HANDLERS_BUILTIN="process_file",
        JOBD_FILES_ALLOWED_DIRS=str(tmp_path),
    )
    assert result.returncode == 0
    assert "handlers.builtin is deprecated" in result.stderr
    assert "use handlers.samples (JOBD_HANDLERS_SAMPLES)" in result.stderr
    assert yaml.safe_load(result.stdout)["handlers"]["samples"] == ["process_file"]


def test_handlers_builtin_and_handlers_samples_together_exit_2_naming_both(jobd) -> None:
    result = jobd(
        "config", "check", JOBD_HANDLERS_BUILTIN="send_email", JOBD_HANDLERS_SAMPLES="send_email"
    )
    assert result.returncode == 2
    assert "handlers.builtin" in result.stderr and "handlers.samples" in result.stderr


def test_an_unknown_key_exits_2_naming_the_key_and_the_file(jobd, tmp_path: Path) -> None:
    config = tmp_path / "jobd.yaml"
    config.write_text("database:\n  urll: sqlite:///tmp/x.db\n", encoding="utf-8")
    result = jobd("--config", str(config), "config", "check")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{config}:2: database.urll: unknown key (did you mean database.url?)" in result.stderr


def test_a_bad_value_in_the_environment_exits_2_naming_the_variable(jobd) -> None:
    result = jobd("config", "check", JOBD_WORKERS="lots")
    assert result.returncode == 2
    assert "environment variable JOBD_WORKERS: workers.count: must be an integer" in result.stderr


def test_a_bad_flag_exits_2_naming_the_flag(jobd) -> None:
    result = jobd("--log-format", "xml", "config", "check")
    assert result.returncode == 2
    assert "flag --log-format: logging.format: must be one of json, text" in result.stderr


def test_a_missing_config_file_exits_2(jobd, tmp_path: Path) -> None:
    result = jobd("config", "check", JOBD_CONFIG=str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "JOBD_CONFIG" in result.stderr and "nope.yaml" in result.stderr


def test_bad_configuration_stops_migrate_and_run_too(jobd, tmp_path: Path) -> None:
    config = tmp_path / "jobd.yaml"
    config.write_text("jobs:\n  retention: forever\n", encoding="utf-8")
    for command in (["migrate"], ["run"]):
        result = jobd("--config", str(config), *command)
        assert result.returncode == 2, command
        assert f"{config}:2: jobs.retention: must be a duration" in result.stderr


def test_run_refuses_a_handler_module_that_does_not_import(jobd) -> None:
    result = jobd("run", "--database-url", "memory://", "--handlers", "no_such_module_q")
    assert result.returncode == 2
    assert "handler module 'no_such_module_q' failed to import" in result.stderr


# --- config check refuses what run refuses ------------------------------------------------------

DUPLICATE_TYPES = """\
from jobd import handler


@handler("twice")
def first(ctx, payload):
    return 1


@handler("twice")
def second(ctx, payload):
    return 2
"""


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The `jobd: …` line a refused command ends with (a deprecation warning may precede it)."""
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"JOBD_HANDLERS_SAMPLES": "send_email"},
            "jobd: handlers.samples enables send_email but smtp.from is not set (JOBD_SMTP_FROM)",
        ),
        (
            {"JOBD_HANDLERS_BUILTIN": "send_email"},
            "jobd: handlers.samples enables send_email but smtp.from is not set (JOBD_SMTP_FROM)",
        ),
        (
            {"JOBD_HANDLERS_SAMPLES": "process_file"},
            "jobd: handlers.samples enables process_file but files.allowed_dirs is empty",
        ),
        (
            {"JOBD_HANDLER_MODULES": "no_such_module_q"},
            "jobd: handler module 'no_such_module_q' failed to import: ModuleNotFoundError",
        ),
        (
            {"JOBD_HANDLER_MODULES": "duplicate_types"},
            "jobd: handler module 'duplicate_types': job type 'twice' is registered twice:"
            " duplicate_types.first and duplicate_types.second",
        ),
    ],
    ids=[
        "samples-without-smtp-from",
        "builtin-without-smtp-from",
        "files-without-allowed-dirs",
        "no-import",
        "twice",
    ],
)
def test_config_check_refuses_what_run_refuses_with_the_same_message(
    jobd, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    # cwd is tmp_path, and `python -m` puts the working directory on sys.path.
    (tmp_path / "duplicate_types.py").write_text(DUPLICATE_TYPES, encoding="utf-8")
    checked = jobd("config", "check", **env)
    ran = jobd("run", **env)
    assert checked.returncode == ran.returncode == 2, (checked.stderr, ran.stderr)
    assert checked.stdout == ""
    assert refusal(checked) == refusal(ran)
    assert refusal(checked).startswith(message)
    assert not (tmp_path / "state" / "jobd" / "jobd.db").exists()  # refused before the store


# --- jobd migrate: SQLite ----------------------------------------------------------------------


def sqlite_versions(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]


def test_migrate_a_sqlite_file_twice(jobd, tmp_path: Path) -> None:
    db = tmp_path / "data" / "jobs.db"
    db.parent.mkdir()  # a directory the user names must exist (only the state dir is created)
    url = f"sqlite://{db}"
    expected = migrations("sqlite")

    check = jobd("migrate", "--check", "--database-url", url)
    assert check.returncode == 1, check.stderr
    assert check.stdout.splitlines() == [f"pending {name}" for name in expected]

    first = jobd("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in expected]
    assert sqlite_versions(db) == len(expected)

    second = jobd("--database-url", url, "migrate")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "database is up to date"
    assert sqlite_versions(db) == len(expected)

    check = jobd("migrate", "--check", JOBD_DATABASE_URL=url)
    assert check.returncode == 0 and check.stdout.strip() == "database is up to date"


@pytest.mark.parametrize("command", [["migrate"], ["run"]])
def test_a_sqlite_file_in_a_missing_directory_exits_2_naming_it(
    jobd, tmp_path: Path, command: list[str]
) -> None:
    at_root = Path(f"/nonexistent-dir-{uuid.uuid4().hex[:12]}")
    for missing in (at_root, tmp_path / "no" / "such"):
        result = jobd(*command, "--database-url", f"sqlite://{missing / 'x.db'}")
        assert result.returncode == 2, result.stderr
        assert f"the directory {missing} does not exist" in result.stderr
        assert "database.url" in result.stderr
        assert not missing.exists()
    assert not (tmp_path / "no").exists()


def test_migrate_with_no_database_configured_uses_the_state_directory(jobd, tmp_path) -> None:
    result = jobd("migrate")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "state" / "jobd" / "jobd.db"
    assert sqlite_versions(db) == len(migrations("sqlite"))


def test_migrate_as_a_systemd_service_uses_its_state_directory(jobd, tmp_path) -> None:
    state = tmp_path / "var-lib-jobd"
    result = jobd("migrate", STATE_DIRECTORY=str(state))
    assert result.returncode == 0, result.stderr
    assert sqlite_versions(state / "jobd.db") == len(migrations("sqlite"))


def test_migrate_the_memory_store_has_nothing_to_do(jobd) -> None:
    result = jobd("migrate", "--database-url", "memory://")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database is up to date"


# --- jobd migrate: PostgreSQL -------------------------------------------------------------------


@pytest.mark.postgres
def test_migrate_a_postgres_schema_twice(jobd, pg_url: str, pg_schema: str) -> None:
    import psycopg

    expected = migrations("postgres")
    env = {"JOBD_DATABASE_URL": pg_url, "JOBD_DATABASE_SCHEMA": pg_schema}

    check = jobd("migrate", "--check", **env)
    assert check.returncode == 1, check.stderr
    assert check.stdout.splitlines() == [f"pending {name}" for name in expected]

    first = jobd("migrate", **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in expected]

    second = jobd("migrate", **env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "database is up to date"

    with psycopg.connect(pg_url) as conn:
        table = f'"{pg_schema}".schema_migrations'
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None and row[0] == len(expected)


def test_an_unreachable_database_exits_3_with_a_clear_message(jobd) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    url = "postgresql://jobd:s3cret-pw@127.0.0.1:1/jobs?connect_timeout=5"
    result = jobd("migrate", "--database-url", url)
    assert result.returncode == 3, result.stderr
    assert "jobd: cannot use the database postgresql://jobd:***@127.0.0.1:1/jobs" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_python_dash_m_jobd_is_the_jobd_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jobd", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("jobd, version ")
