"""The wheel as a user gets it: built from this checkout, installed with its dependencies into a
fresh virtualenv, and used to migrate fresh databases.

This is what proves the SQL migrations ship inside the package (pyproject force-includes the
top-level migrations/ folder as jobd/_migrations/) and that the declared dependencies are enough
to run `jobd migrate`.  Everything runs from outside the checkout, so nothing is imported from
the source tree by accident.
"""

from __future__ import annotations

import fnmatch
import os
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DIALECTS = ("postgres", "sqlite")


def clean_env() -> dict[str, str]:
    """os.environ less what could import from the checkout or configure jobd (pip's own
    configuration stays: it says where packages come from)."""
    drop = ("JOBD_", "PYTHON", "COV_CORE_", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def run(
    *args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; a non-zero exit fails the test with its output."""
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # where commands run: outside the checkout

    def jobd(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the installed `jobd` with `env` added to a clean environment whose XDG folders
        are the test's own, so no user configuration or state is read."""
        full_env = {
            **clean_env(),
            "XDG_STATE_HOME": str(self.workdir / "state"),
            "XDG_CONFIG_HOME": str(self.workdir / "config"),
            **env,
        }
        return run(self.venv / "bin" / "jobd", *args, cwd=self.workdir, env=full_env)

    def python(self, code: str) -> str:
        return run(
            self.venv / "bin" / "python", "-c", code, cwd=self.workdir, env=clean_env()
        ).stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel and install it, with its dependencies, into a fresh virtualenv."""
    base = tmp_path_factory.mktemp("wheel")
    workdir = base / "work"
    workdir.mkdir()
    env = clean_env()
    dist = base / "dist"
    build = (sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT)
    run(*build, cwd=workdir, env=env, timeout=300)
    (wheel,) = dist.glob("jobd-*.whl")
    venv = base / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=workdir, env=env)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--quiet")
    run(*pip, "--disable-pip-version-check", wheel, cwd=workdir, env=env, timeout=600)
    return Installed(wheel, venv, workdir)


def wheel_names(installed: Installed) -> list[str]:
    with zipfile.ZipFile(installed.wheel) as zf:
        return zf.namelist()


def source_migrations(dialect: str) -> list[str]:
    return sorted(
        p.name for p in (ROOT / "migrations" / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql")
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_wheel_ships_every_migration(installed: Installed, dialect: str) -> None:
    names = wheel_names(installed)
    assert fnmatch.filter(names, f"jobd/_migrations/{dialect}/0001_*.sql"), names
    shipped = sorted(
        Path(n).name for n in fnmatch.filter(names, f"jobd/_migrations/{dialect}/*.sql")
    )
    assert shipped == source_migrations(dialect)


def test_wheel_ships_named_queries(installed: Installed) -> None:
    queries = sorted(p.name for p in (ROOT / "jobd" / "store" / "sql").glob("*.sql"))
    if not queries:
        pytest.skip("this checkout has no jobd/store/sql/*.sql files")
    shipped = sorted(
        Path(n).name for n in fnmatch.filter(wheel_names(installed), "jobd/store/sql/*.sql")
    )
    assert shipped == queries


def test_wheel_ships_the_dashboards_templates_and_static_files(installed: Installed) -> None:
    ui = ROOT / "jobd" / "http" / "ui"
    expected = sorted(
        str(p.relative_to(ROOT)) for d in ("templates", "static") for p in (ui / d).iterdir()
    )
    shipped = sorted(
        n
        for n in wheel_names(installed)
        if n.startswith(("jobd/http/ui/templates/", "jobd/http/ui/static/"))
    )
    assert shipped == expected
    out = installed.python(
        "from jobd.http.ui.render import render, static_files;"
        " print(sorted(static_files()), b'<main' in render('error.html', {'csrf': '',"
        " 'access': 'write', 'signed_in': False, 'via_cookie': False, 'notice': '',"
        " 'title': 't', 'detail': 'd', 'status': 404, 'can_change': True}))"
    )
    assert "app.js" in out and "True" in out


def test_installed_package_is_the_wheel(installed: Installed) -> None:
    out = installed.python(
        "import jobd, jobd.migrations as m; print(jobd.__file__); print(m.migrations_dir())"
    ).splitlines()
    module_file, migrations_dir = (Path(line) for line in out)
    assert module_file.is_relative_to(installed.venv), module_file
    assert migrations_dir.is_relative_to(installed.venv), migrations_dir
    assert migrations_dir.name == "_migrations"


def test_wheel_migrates_a_fresh_sqlite_file(installed: Installed) -> None:
    db = installed.workdir / "fresh.db"
    url = f"sqlite://{db}"

    def applied() -> int:
        with closing(sqlite3.connect(db)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            assert {"jobs", "schema_migrations"} <= tables, tables
            return conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]

    installed.jobd("migrate", "--database-url", url)
    assert applied() == len(source_migrations("sqlite"))
    installed.jobd("migrate", "--database-url", url)  # a second run has nothing to do
    assert applied() == len(source_migrations("sqlite"))


@pytest.mark.postgres
def test_wheel_migrates_a_fresh_postgres_schema(
    installed: Installed, pg_url: str, pg_schema: str
) -> None:
    import psycopg

    def migrate() -> None:
        installed.jobd("migrate", "--database-url", pg_url, JOBD_DATABASE_SCHEMA=pg_schema)

    def applied() -> int:
        names = [f'"{pg_schema}".jobs', f'"{pg_schema}".schema_migrations']
        with psycopg.connect(pg_url) as conn:
            for name in names:
                found = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
                assert found is not None and found[0] is not None, f"no table {name}"
            count = conn.execute(f"SELECT count(*) FROM {names[1]}").fetchone()
            assert count is not None
            return count[0]

    migrate()
    assert applied() == len(source_migrations("postgres"))
    migrate()  # a second run has nothing to do
    assert applied() == len(source_migrations("postgres"))
