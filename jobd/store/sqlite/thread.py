"""The SQLite store's database thread: the one connection, and the one thread that uses it.

The Store methods are coroutines on the supervisor's loop; all database work runs on a
single dedicated thread (a one-worker executor) that owns the only connection.  Calls are
therefore serialised in the order they were made, sqlite3's same-thread check holds, and the
event loop never waits on the disk.  This module also turns sqlite3's errors into jobd's
(Unavailable for a locked or missing database, JobdError for a bug) and holds the write
transaction every write runs in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from jobd.config.errors import ConfigError
from jobd.errors import InvalidParams, JobdError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error.

    IMMEDIATE takes the write lock now (waiting up to busy_timeout for it), so nothing another
    process writes can slip in between this transaction's reads and its writes; a plain BEGIN
    would fail with SQLITE_BUSY at the first write instead, without waiting."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def prepare_file(path: Path, create_directory: bool) -> None:
    """Create the database file (0600) if it is missing, in its directory (see
    `prepare_directory`).

    SQLite creates its -wal and -shm files with the database file's permissions, so creating
    the file ourselves keeps all three private whatever the umask: payloads may be secret."""
    prepare_directory(path, create_directory)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def prepare_directory(path: Path, create_directory: bool) -> None:
    """Create the database's directory (0700) when `create_directory` (jobd's own state
    directory); any other missing directory is a ConfigError naming it: a mistyped path must
    not grow directories, at / or anywhere."""
    if create_directory:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise ConfigError(
            "database.url",
            "the SQLite database",
            f"the directory {path.parent} does not exist (jobd creates only its default state"
            " directory): create it, or fix the path",
        )


class DatabaseThread:
    """Runs `fn(conn, *args)` on the thread that owns the connection to `path`, which it
    opens at the first call."""

    def __init__(
        self, path: Path, *, synchronous: str, busy_timeout: float, create_directory: bool
    ):
        self.path = path
        self._create_directory = create_directory
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobd-sqlite")
        self._closed = False

    def prepare_directory(self) -> None:
        """The database's directory, created or checked as the file's first open would."""
        try:
            prepare_directory(self.path, self._create_directory)
        except OSError as exc:
            raise Unavailable(f"cannot create the directory of {self.path}: {exc}") from exc

    # --- running work on the database thread -------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the database thread and return its result."""
        if self._closed:
            raise Unavailable(f"the SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn, args)
        except RuntimeError as exc:
            if self._closed:  # closed while this call was on its way to the thread
                raise Unavailable(f"the SQLite store {self.path} is closed") from exc
            raise

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._connection(), *args)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        except UnicodeEncodeError as exc:  # e.g. a lone surrogate that came in through JSON
            raise InvalidParams(f"text that is not valid Unicode: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        try:
            prepare_file(self.path, self._create_directory)
        except OSError as exc:
            raise Unavailable(f"cannot create the SQLite database {self.path}: {exc}") from exc
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,  # sets SQLite's busy_timeout
            isolation_level=None,  # autocommit: we issue BEGIN IMMEDIATE / COMMIT ourselves
            cached_statements=256,
        )
        try:
            mode = self._enable_wal(conn)
            if mode.lower() != "wal":
                log.warning(
                    "SQLite database %s: WAL mode refused (journal_mode=%s)", self.path, mode
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch the file to WAL (a no-op once it is: the mode is stored in the file).

        The first switch needs an exclusive lock, and SQLite answers SQLITE_BUSY at once,
        without calling the busy handler, when another connection holds any lock -- two
        processes opening a new file together (`jobd migrate` and `jobd run` on a first boot)
        would see "database is locked".  So wait here, up to busy_timeout, as BEGIN does."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _translate(self, exc: sqlite3.Error) -> JobdError:
        """A driver error as jobd's error tree: the database cannot be used right now
        (Unavailable), or a bug (JobdError, internal_error)."""
        if not isinstance(exc, sqlite3.OperationalError) and type(exc) is not sqlite3.DatabaseError:
            return JobdError(f"SQLite error on {self.path}: {exc}")
        if is_busy(exc):
            message = (
                f"SQLite database {self.path} is locked: another process held its write lock"
                f" for more than {self._busy_timeout:g}s ({exc})"
            )
        elif "no such table" in str(exc):
            message = (
                f"SQLite database {self.path} has no jobd schema yet; run `jobd migrate` ({exc})"
            )
        else:
            message = f"SQLite database {self.path} is unavailable: {exc}"
        return Unavailable(message)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_conn)
        finally:
            # Everything queued before close has run by now; this only joins the idle thread.
            self._executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
