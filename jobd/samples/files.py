"""`process_file`: one operation on one file under `files.allowed_dirs`.  Enabled by
`handlers.samples: [process_file]`.

Payload::

    {"operation": "checksum" | "count_lines" | "compress" | "decompress",   required
     "path": "incoming/data.csv",     # required; relative paths start at the first allowed dir
     "output": "...",                 # compress: default PATH.gz; decompress: default PATH
                                      # without .gz (required when PATH does not end in .gz)
     "level": 6}                      # compress only: gzip level 1-9

Results: `checksum` → {"sha256", "bytes"}; `count_lines` → {"lines", "bytes"} (a last line
without a newline counts); `compress` / `decompress` → {"output", "bytes_in", "bytes_out"}.

Paths are confined as jobd.samples.paths describes; outputs are written atomically and an
existing output is replaced, so running a job twice (after a crash) gives the same file.  gzip
output is reproducible: no timestamp in its header.  Files are read in 1 MiB chunks, with a
cancellation check between chunks and a progress report every 64 MiB, so a file of any size
can be processed and stopped.  `decompress` stops (PermanentError) when its output would pass
`files.max_output_bytes`: a small gzip file may hold gigabytes of zeros.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from jobd.context import JobContext
from jobd.domain import PermanentError
from jobd.handlers import handler
from jobd.samples import settings
from jobd.samples.paths import AllowedDirs, check_path
from jobd.samples.payload import Payload, checked, choice, integer, only_fields

OPERATIONS = ("checksum", "count_lines", "compress", "decompress")
FIELDS = ("operation", "path", "output", "level")
CHUNK = 1024 * 1024
PROGRESS_EVERY = 64 * CHUNK
DEFAULT_LEVEL = 6


@dataclass(frozen=True)
class FileTask:
    """A checked process_file payload."""

    operation: str
    path: str
    output: str | None
    level: int


def parse_task(payload: Payload) -> FileTask:
    """The payload, checked; raises ValueError("field: problem")."""
    only_fields(payload, FIELDS)
    operation = choice(payload, "operation", OPERATIONS, None)
    if "path" not in payload:
        raise ValueError("path: is required")
    path = check_path("path", payload["path"])
    output = payload.get("output")
    if output is not None:
        if operation not in ("compress", "decompress"):
            raise ValueError(f"output: {operation} writes no file")
        check_path("output", output)
    elif operation == "decompress" and not path.endswith(".gz"):
        raise ValueError("output: is required when path does not end in .gz")
    if "level" in payload and operation != "compress":
        raise ValueError("level: only compress takes a level")
    level = integer(payload, "level", default=DEFAULT_LEVEL, low=1, high=9)
    return FileTask(operation, path, output, level)


def check_task(payload: Payload) -> None:
    """Submit-time validator.  Where the paths lead is checked in the worker, which knows
    `files.allowed_dirs` (an application calling jobd.enqueue does not)."""
    parse_task(payload)


@handler("process_file", max_attempts=3, validator=check_task)
def process_file(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one operation on one file; see the module's docstring."""
    task = checked(parse_task, payload)
    dirs = AllowedDirs.of(settings.current().files.allowed_dirs)
    return {"operation": task.operation, **_OPERATIONS[task.operation](ctx, dirs, task)}


def checksum(ctx: JobContext, dirs: AllowedDirs, task: FileTask) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with dirs.open_input("path", task.path) as source:
        for chunk in _chunks(ctx, source.read, _progress(source)):
            digest.update(chunk)
            size += len(chunk)
    return {"path": task.path, "sha256": digest.hexdigest(), "bytes": size}


def count_lines(ctx: JobContext, dirs: AllowedDirs, task: FileTask) -> dict[str, Any]:
    newlines = size = 0
    last = b""
    with dirs.open_input("path", task.path) as source:
        for chunk in _chunks(ctx, source.read, _progress(source)):
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    lines = newlines + (1 if size and last != b"\n" else 0)
    return {"path": task.path, "lines": lines, "bytes": size}


def compress(ctx: JobContext, dirs: AllowedDirs, task: FileTask) -> dict[str, Any]:
    with dirs.open_input("path", task.path) as source:
        target = task.output or dirs.candidate("path", task.path) + ".gz"
        with dirs.atomic_output("output", target, not_same_as=os.fstat(source.fileno())) as out:
            # mtime=0: the same input gives the same bytes, whichever attempt wrote them.
            name = os.path.basename(task.path)
            with gzip.GzipFile(name, "wb", task.level, out.file, mtime=0) as packed:
                for chunk in _chunks(ctx, source.read, _progress(source)):
                    packed.write(chunk)
            written = out.file.tell()
        read = source.tell()
    return {"path": task.path, "output": out.path, "bytes_in": read, "bytes_out": written}


def decompress(ctx: JobContext, dirs: AllowedDirs, task: FileTask) -> dict[str, Any]:
    limit = settings.current().files.max_output_bytes
    with dirs.open_input("path", task.path) as source:
        target = task.output or dirs.candidate("path", task.path).removesuffix(".gz")
        with dirs.atomic_output("output", target, not_same_as=os.fstat(source.fileno())) as out:
            try:
                with gzip.GzipFile(fileobj=source, mode="rb") as unpacked:
                    for chunk in _chunks(ctx, unpacked.read, _progress(source)):
                        _check_output_size(task, out.file.tell() + len(chunk), limit)
                        out.file.write(chunk)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise PermanentError(f"path: {task.path} is not valid gzip data: {exc}") from None
            written = out.file.tell()
        read = source.tell()
    return {"path": task.path, "output": out.path, "bytes_in": read, "bytes_out": written}


def _check_output_size(task: FileTask, size: int, limit: int) -> None:
    """Stop a decompression bomb before it fills the disk; leaving the atomic output's block
    with this error deletes what was written."""
    if size > limit:
        raise PermanentError(
            f"path: {task.path} decompresses to more than files.max_output_bytes ({limit} bytes);"
            " the partial output was deleted"
        )


_OPERATIONS: dict[str, Callable[[JobContext, AllowedDirs, FileTask], dict[str, Any]]] = {
    "checksum": checksum,
    "count_lines": count_lines,
    "compress": compress,
    "decompress": decompress,
}


def _chunks(
    ctx: JobContext, read: Callable[[int], bytes], progress: Callable[[], dict[str, int]]
) -> Iterator[bytes]:
    """Chunks from `read` until it is exhausted, with a cancellation check before each one
    (a cancelled job stops within one chunk) and a progress report every PROGRESS_EVERY."""
    reported = 0
    while True:
        ctx.check_cancelled()
        chunk = read(CHUNK)
        if not chunk:
            return
        yield chunk
        state = progress()
        if state["bytes"] - reported >= PROGRESS_EVERY:
            reported = state["bytes"]
            ctx.progress(state)


def _progress(source: BinaryIO) -> Callable[[], dict[str, int]]:
    """How far through the input file we are (its bytes, whatever is made of them)."""
    total = os.fstat(source.fileno()).st_size
    return lambda: {"bytes": source.tell(), "total": total}
