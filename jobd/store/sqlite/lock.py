"""One node per SQLite file: the exclusive flock a daemon holds on `<database>.lock` for as long
as it runs (docs/adr/0025-one-node-per-sqlite-file.md).

The lock is on a file beside the database, never on the database itself: SQLite locks its file
with POSIX record locks, which the kernel drops when the process closes *any* descriptor of that
file, so a descriptor of our own on it would one day release SQLite's locks under it.  The file
also has room for what a refused daemon should be told: the holder writes its pid and control
socket into it.  It is left in place when the daemon stops (unlinking a lock file lets a second
daemon lock the old inode while a third creates a new one); its contents are emptied.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as it wrote itself into the file (None: not yet written)."""

    pid: int | None
    socket: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "another jobd"
        return f"another jobd (pid {self.pid}, control socket {self.socket})"


class NodeLockHeld(Exception):
    """Another daemon runs on this SQLite file."""

    def __init__(self, database: Path, lock_path: Path, holder: Holder):
        super().__init__(
            f"{holder.describe()} already runs on the SQLite database {database} (it holds"
            f" {lock_path}): a SQLite file serves one node; stop that daemon, or give this one"
            " another database.url"
        )
        self.holder = holder


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@dataclass
class NodeLock:
    """The lock this daemon holds on its SQLite file; `release()` gives it back."""

    path: Path
    fd: int | None

    @classmethod
    def take(cls, database: Path, socket: Path) -> NodeLock:
        """Lock `database` for this process, writing its pid and `socket` into the lock file;
        NodeLockHeld if another process holds it.  The database's directory must exist."""
        path = lock_path(database)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise NodeLockHeld(database, path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        _write_holder(fd, Holder(os.getpid(), str(socket)))
        return cls(path, fd)

    def release(self) -> None:
        """Idempotent: closing the descriptor twice could close someone else's file."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # still ours: the lock goes with the close below
        os.close(fd)


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": holder.pid, "socket": holder.socket}).encode() + b"\n", 0)


def _read_holder(fd: int) -> Holder:
    """The holder's pid and socket; empty while it has locked but not yet written them."""
    try:
        fields = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return Holder(int(fields["pid"]), str(fields["socket"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Holder(None, None)
