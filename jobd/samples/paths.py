"""Keeping the sample handlers' file access inside `files.allowed_dirs`.

A job's payload comes from whoever may submit jobs, and jobd may run with more rights than
they have, so a path in a payload is hostile until proven otherwise.  What is refused, always
as a PermanentError naming the field (retrying cannot make a path acceptable):

- a path with a `..` component, a NUL byte, or nothing in it;
- an absolute path outside every allowed directory (a relative path is taken from the first);
- a path whose real location (symbolic links resolved, `os.path.realpath`) is outside every
  allowed directory — a link inside pointing out;
- anything but a regular file as input (a FIFO would block the worker, a device never ends);
- a file with more than one hard link, as input or as an output to replace: a hard link looks
  like any other file, and the other name may be outside (`/etc/shadow` linked into an upload
  directory).  jobd cannot tell where the other names are, so it refuses them all;
- an output that is a symbolic link or a directory, or that is the input itself.

The checks are made on what was opened, not only on the name: inputs are opened with
O_NOFOLLOW after the path is resolved, outputs are created relative to an opened directory,
and on Linux the path of every opened descriptor is read back from /proc/self/fd and checked
again — a symbolic link swapped in between the check and the open is caught.

Outputs are written atomically: into a temporary file in the destination directory
(`.NAME.XXXXXXXX.jobd-tmp`), flushed to disk, then renamed over the destination.  Readers never
see half a file, and a job that fails or is cancelled leaves nothing behind (a worker killed
with SIGKILL can leave its temporary file; the name says whose it is).  Replacing the
destination's name, never writing into it, also means an existing output that is a hard link
elsewhere would not be written through — but it is refused anyway, as above.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from jobd.domain import PermanentError

MAX_PATH = 4096
TEMP_SUFFIX = ".jobd-tmp"
_NAME_MAX = 255  # bytes in one file name, on every filesystem jobd is likely to meet


def check_path(field: str, value: object) -> str:
    """What can be checked without the configuration or the filesystem (at submit time too):
    a non-empty string, no NUL, no `..`.  Raises ValueError("field: problem")."""
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a path (a string)")
    if not value.strip():
        raise ValueError(f"{field}: must not be empty")
    if "\0" in value:
        raise ValueError(f"{field}: must not contain a NUL character")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no file has that name
        raise ValueError(f"{field}: is not a possible file name (an unpaired surrogate)") from None
    if len(value) > MAX_PATH:
        raise ValueError(f"{field}: is longer than {MAX_PATH} characters")
    if ".." in value.split("/"):
        raise ValueError(f"{field}: must not contain '..'")
    return value


@dataclass
class Output:
    """An output being written: write to `file`; `path` is where it will be."""

    path: str
    file: BinaryIO


@dataclass(frozen=True)
class AllowedDirs:
    """The directories a handler may touch (`files.allowed_dirs`)."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, roots: Sequence[str | os.PathLike[str]]) -> AllowedDirs:
        return cls(tuple(Path(r) for r in roots))

    # --- names ---------------------------------------------------------------------------

    def candidate(self, field: str, value: object) -> str:
        """The path as named, made absolute and normalised, if it lies under an allowed
        directory by name (its real location is checked when it is opened)."""
        try:
            path = check_path(field, value)
        except ValueError as exc:
            raise PermanentError(str(exc)) from None
        if not self.roots:
            raise PermanentError(
                f"{field}: files.allowed_dirs is empty, so no path is allowed on this node"
            )
        if not os.path.isabs(path):
            path = os.path.join(self.roots[0], path)
        path = os.path.normpath(path)
        named = [os.path.normpath(r) for r in self.roots]
        if not any(_is_under(path, r) for r in named + self._real_roots()):
            raise PermanentError(
                f"{field}: {path} is outside files.allowed_dirs ({', '.join(named)})"
            )
        return path

    def _real_roots(self) -> list[str]:
        return [os.path.realpath(r) for r in self.roots]

    def _confine(self, field: str, real: str, named: str) -> str:
        """The allowed directory (resolved) that holds `real`, the resolved path."""
        for root in self._real_roots():
            if _is_under(real, root):
                return root
        raise PermanentError(
            f"{field}: {named} resolves to {real}, outside files.allowed_dirs"
            " (through a symbolic link)"
        )

    # --- inputs --------------------------------------------------------------------------

    def open_input(self, field: str, value: object) -> BinaryIO:
        """Open a regular file under the allowed directories for reading."""
        named = self.candidate(field, value)
        real = os.path.realpath(named)
        root = self._confine(field, real, named)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
            fd = os.open(real, flags)
        except OSError as exc:
            raise PermanentError(f"{field}: cannot open {named}: {_reason(exc)}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise PermanentError(f"{field}: {named} is not a regular file")
            _refuse_hard_links(field, named, info)
            _check_opened(field, fd, root, named)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    # --- outputs -------------------------------------------------------------------------

    def output_path(self, field: str, value: object) -> str:
        """The output's path as named, checked by name only (see `atomic_output`)."""
        named = self.candidate(field, value)
        if os.path.basename(named) in ("", ".", ".."):
            raise PermanentError(f"{field}: {named} names a directory, not a file")
        return named

    @contextlib.contextmanager
    def atomic_output(
        self, field: str, value: object, *, not_same_as: os.stat_result | None = None
    ) -> Iterator[Output]:
        """Write a file atomically: what the block writes to `Output.file` replaces the
        destination when the block ends without an exception, and vanishes otherwise."""
        named = self.output_path(field, value)
        parent, name = os.path.split(named)
        real_parent = os.path.realpath(parent)
        root = self._confine(field, os.path.join(real_parent, name), named)
        try:
            dir_fd = os.open(real_parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise PermanentError(f"{field}: cannot use {parent}: {_reason(exc)}") from None
        try:
            _check_opened(field, dir_fd, root, parent)
            _check_destination(field, named, name, dir_fd, not_same_as)
            with _temporary(field, name, dir_fd) as (temp, file):
                yield Output(os.path.join(real_parent, name), file)
                file.flush()
                os.fsync(file.fileno())
                file.close()
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            with contextlib.suppress(OSError):  # the rename is durable once the directory is
                os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _temporary(field: str, name: str, dir_fd: int) -> Iterator[tuple[str, BinaryIO]]:
    """A new temporary file beside the destination, removed unless renamed away."""
    stem = os.fsencode(name)[: _NAME_MAX - 32].decode(errors="ignore")
    temp = f".{stem}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o666, dir_fd=dir_fd)  # the umask decides, as for any file
    except OSError as exc:
        raise PermanentError(
            f"{field}: cannot create a file beside {name}: {_reason(exc)}"
        ) from None
    file = os.fdopen(fd, "wb")
    try:
        yield temp, file
    except BaseException:
        file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def _check_destination(
    field: str, named: str, name: str, dir_fd: int, input_info: os.stat_result | None
) -> None:
    """An existing destination is replaced only if it is a plain file of its own."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise PermanentError(f"{field}: {named} is a symbolic link; name the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise PermanentError(f"{field}: {named} exists and is not a regular file")
    if input_info is not None and (info.st_dev, info.st_ino) == (
        input_info.st_dev,
        input_info.st_ino,
    ):
        raise PermanentError(f"{field}: {named} is the input file itself")
    _refuse_hard_links(field, named, info)


def _refuse_hard_links(field: str, named: str, info: os.stat_result) -> None:
    if info.st_nlink > 1:
        raise PermanentError(
            f"{field}: {named} has {info.st_nlink} hard links; files with more than one are"
            " refused, since another name for the file may lie outside files.allowed_dirs"
        )


def _check_opened(field: str, fd: int, root: str, named: str) -> None:
    """Check where the opened descriptor really is (Linux): catches a symbolic link swapped
    into the path between our check and the open."""
    try:
        actual = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return  # no /proc: the check made before opening stands alone
    if not _is_under(actual, root):
        raise PermanentError(f"{field}: {named} was opened as {actual}, outside {root}")


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
