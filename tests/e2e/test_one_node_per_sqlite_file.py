"""`jobd run` on a SQLite file another daemon runs on, and on a control socket another daemon
answers on: refused, with the other daemon untouched and, for the socket, the database too
(docs/adr/0025-one-node-per-sqlite-file.md)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess, answers, daemon_environment, short_directory

REFUSED = 1  # as for a control socket another daemon answers on


@pytest.fixture
def sockets() -> Iterator[Path]:
    directory = short_directory()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start(home: Path, database: Path, socket: Path, *args: str) -> DaemonProcess:
    home.mkdir(exist_ok=True)
    env = daemon_environment(
        home,
        {
            "JOBD_DATABASE_URL": f"sqlite://{database}",
            "JOBD_SOCKET": str(socket),
            "JOBD_WORKERS": "1",
            "JOBD_LOGGING_FORMAT": "text",
        },
    )
    return DaemonProcess.start(env, cwd=home, log_path=home / "jobd.log", args=args)


def test_a_second_daemon_on_one_sqlite_file_is_refused_naming_the_first(
    tmp_path: Path, sockets: Path
) -> None:
    database = tmp_path / "jobs.db"
    first_socket, second_socket = sockets / "first.sock", sockets / "second.sock"
    first = start(tmp_path / "first", database, first_socket)
    try:
        first.wait_until(lambda: answers(first_socket), what="the first jobd to answer")
        second = start(tmp_path / "second", database, second_socket)
        assert second.wait_exit() == REFUSED, second.log()
        assert (
            f"another jobd (pid {first.pid}, control socket {first_socket}) already runs on the"
            f" SQLite database {database} (it holds {database}.lock)"
        ) in second.log()
        assert not second_socket.exists()
        assert first.exit_code() is None and answers(first_socket)  # untouched
    finally:
        assert first.stop() == 0, first.log_tail()


def test_the_file_is_free_again_once_its_daemon_has_stopped(tmp_path: Path, sockets: Path) -> None:
    database = tmp_path / "jobs.db"
    for name in ("first", "second"):
        socket = sockets / f"{name}.sock"
        daemon = start(tmp_path / name, database, socket)
        try:
            daemon.wait_until(lambda socket=socket: answers(socket), what=f"the {name} jobd")
        finally:
            assert daemon.stop() == 0, daemon.log_tail()


def test_a_daemon_refused_for_its_socket_leaves_the_database_untouched(
    tmp_path: Path, sockets: Path
) -> None:
    socket = sockets / "jobd.sock"
    first = start(tmp_path / "first", tmp_path / "first.db", socket)
    try:
        first.wait_until(lambda: answers(socket), what="the first jobd to answer")
        for database, args in ((tmp_path / "new.db", ()), (unmigrated(tmp_path), ("--migrate",))):
            before = database.read_bytes() if database.exists() else None
            second = start(tmp_path / "second", database, socket, *args)
            assert second.wait_exit() == REFUSED, second.log()
            assert f"another jobd is already listening on {socket}" in second.log()
            assert (database.read_bytes() if database.exists() else None) == before
            assert not Path(f"{database}.lock").exists()
        assert not (tmp_path / "new.db").exists()
        assert tables(tmp_path / "unmigrated.db") == {"mine"}  # no schema_migrations
        assert answers(socket)
    finally:
        assert first.stop() == 0, first.log_tail()


def unmigrated(tmp_path: Path) -> Path:
    """A SQLite file with a table of the application's and no jobd schema."""
    database = tmp_path / "unmigrated.db"
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("CREATE TABLE mine (x)")
        conn.commit()
    return database


def tables(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
