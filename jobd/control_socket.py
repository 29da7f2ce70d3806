"""The control socket's file: created so that nobody else can use or take it, and removed only
if it is still ours.

`bind_control_socket`, in order (`check_control_socket` makes the same checks without binding,
so that `jobd run` can refuse before it touches its database):
1. take an exclusive flock on `<socket>.lock`, so two daemons starting at once cannot both decide
   the socket is theirs (the probe alone leaves that race open);
2. probe an existing socket with a connect: an answer means another jobd is listening, and we
   refuse to start; ECONNREFUSED means a crashed daemon left it behind, and we replace it;
3. bind a temporary name under umask 0177 (nobody else can connect in the meantime), chmod it to
   control.socket_mode, chgrp it to control.socket_group, and rename it over the real path in
   one atomic step.
A directory that belongs to someone else, or that anyone may write to without the sticky bit, is
refused: its owner could swap our socket for theirs and read what jobctl sends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import logging
import os
import secrets
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobd.config import SUN_PATH_MAX

log = logging.getLogger("jobd.control")

BACKLOG = 1024  # connections waiting to be accepted; asyncio's default of 100 is tight


class ControlSocketError(Exception):
    """The control socket cannot be created; `exit_code` is jobd's exit status."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Peer:
    pid: int | None
    uid: int | None
    gid: int | None


def peer_credentials(sock: Any) -> Peer:
    """Who is at the other end of a Unix socket (SO_PEERCRED: Linux)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return Peer(pid, uid, gid)
    except (AttributeError, OSError):  # not Linux, or not a Unix socket
        return Peer(None, None, None)


@dataclass
class BoundSocket:
    sock: socket.socket
    path: Path
    inode: int
    lock_fd: int
    closed: bool = False

    def close(self) -> None:
        """Close the socket and remove its file -- unless another daemon has replaced it.
        Idempotent: closing the lock's descriptor twice could close someone else's file."""
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def bind_control_socket(path: Path, mode: int = 0o660, group: str | None = None) -> BoundSocket:
    """Create the listening socket at `path` safely (see the module docstring)."""
    path = Path(path)
    _prepare_directory(path.parent)
    lock_fd = _lock(path)
    try:
        _probe(path)
        gid = _group_id(group) if group is not None else None
        sock = _bind_in_place(path, mode, gid)
    except BaseException:
        os.close(lock_fd)
        raise
    return BoundSocket(sock, path, os.stat(path).st_ino, lock_fd)


def check_control_socket(path: Path, group: str | None = None) -> None:
    """Raise ControlSocketError for what `bind_control_socket` would refuse -- another jobd
    answering on `path`, a directory that is not safe, an unknown group -- without binding:
    `jobd run` asks before it touches its database.  Binding checks again under the lock (two
    daemons starting at once both pass here)."""
    path = Path(path)
    _prepare_directory(path.parent)
    if _answers(path):
        raise ControlSocketError(f"another jobd is already listening on {path}")
    if group is not None:
        _group_id(group)


def _prepare_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        info = directory.stat()
    except OSError as exc:
        raise ControlSocketError(f"cannot create the control socket directory: {exc}") from None
    # Someone else's directory (say a /tmp/jobd-<uid> planted in advance) could swap our socket
    # for theirs and read what jobctl sends.
    world_writable = info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX
    if info.st_uid not in (0, os.geteuid()) or world_writable:
        raise ControlSocketError(
            f"refusing to create the control socket in {directory}: it belongs to uid"
            f" {info.st_uid} or is writable by anyone; choose another control.socket",
            2,
        )


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ControlSocketError(f"cannot create {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ControlSocketError(
            f"another jobd is already listening on {path} (it holds {lock_path})"
        ) from None
    return fd


def _probe(path: Path) -> None:
    """Refuse if something answers on `path`; a dead socket is left for the rename to replace."""
    if _answers(path):
        raise ControlSocketError(f"another jobd is already listening on {path}")
    if os.path.lexists(path):
        log.info("replacing a stale control socket", extra={"socket": str(path)})


def _answers(path: Path) -> bool:
    """Whether something listens on `path`; a file there that is not a socket is refused."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlSocketError(f"{path} exists and is not a socket; refusing to replace it", 2)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fsencode(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:  # a listener whose backlog is full is still a listener
        return True
    except OSError as exc:
        raise ControlSocketError(f"cannot probe the existing socket {path}: {exc}") from None
    finally:
        probe.close()
    return True


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlSocketError(f"control.socket_group: no group named {group!r}", 2) from None


def _bind_in_place(path: Path, mode: int, gid: int | None) -> socket.socket:
    temp = path.with_name(f".{path.name[:40]}.{secrets.token_hex(3)}")
    if len(os.fsencode(temp)) > SUN_PATH_MAX:
        temp = path.with_name(f".{secrets.token_hex(2)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # the file is ours alone until chmod says otherwise
        try:
            sock.bind(os.fsencode(temp))
        finally:
            os.umask(old_umask)
        try:
            os.chmod(temp, mode)
            if gid is not None:
                os.chown(temp, -1, gid)
            sock.listen(BACKLOG)
            os.rename(temp, path)  # atomically replaces a stale socket
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as exc:
        sock.close()
        exit_code = 2 if exc.errno in (errno.EPERM, errno.EACCES) and gid is not None else 1
        message = f"cannot create the control socket {path}: {exc}"
        raise ControlSocketError(message, exit_code) from None
    sock.setblocking(False)
    return sock
