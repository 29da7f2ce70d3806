"""process_file, run directly: its operations, and the payloads that try to get out of
files.allowed_dirs (traversal, symbolic links, hard links, FIFOs) or break it."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobd.context import JobCancelled, JobContext
from jobd.domain import PermanentError
from jobd.handlers import registry
from jobd.samples import files, settings
from jobd.samples.paths import TEMP_SUFFIX
from jobd.samples.sections import DEFAULT_MAX_OUTPUT_BYTES, FilesConfig, SmtpConfig
from jobd.testing import make_context


@pytest.fixture
def allowed(tmp_path: Path) -> Iterator[Path]:
    """Two allowed directories (the first is where relative paths start) and one outside."""
    root = Path(os.path.realpath(tmp_path))
    for name in ("data", "more", "outside"):
        (root / name).mkdir()
    snapshot = settings.HandlerSettings(
        smtp=SmtpConfig("localhost", 25, "none", None, None, None),
        files=FilesConfig((root / "data", root / "more")),
    )
    settings.configure(snapshot)
    yield root / "data"
    settings.configure(None)


def run(payload: dict[str, Any], ctx: JobContext | None = None) -> dict[str, Any]:
    files.check_task(payload)  # what the control server does first
    return files.process_file(ctx or make_context(job_id=7, type="process_file"), payload)


def refused(payload: dict[str, Any], match: str) -> None:
    """Refused in the worker as a PermanentError (the validator cannot know the filesystem)."""
    with pytest.raises(PermanentError, match=match):
        files.process_file(make_context(job_id=7, type="process_file"), payload)


def invalid(payload: dict[str, Any], match: str) -> None:
    """Refused at submit time by the validator, and by the handler too."""
    with pytest.raises(ValueError, match=match):
        files.check_task(payload)
    with pytest.raises(PermanentError, match=match):
        files.process_file(make_context(job_id=7, type="process_file"), payload)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]


# --- operations ---------------------------------------------------------------------------


def test_registered_with_a_validator() -> None:
    spec = registry.get("process_file")
    assert spec is not None and spec.validator is files.check_task


def test_checksum(allowed: Path) -> None:
    data = os.urandom(3 * files.CHUNK + 17)
    (allowed / "blob").write_bytes(data)
    result = run({"operation": "checksum", "path": "blob"})
    assert result == {
        "operation": "checksum",
        "path": "blob",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


@pytest.mark.parametrize(
    ("content", "lines"),
    [(b"", 0), (b"one", 1), (b"one\n", 1), (b"one\ntwo", 2), (b"\n\n\n", 3), (b"a\r\nb\r\n", 2)],
)
def test_count_lines(allowed: Path, content: bytes, lines: int) -> None:
    (allowed / "t.txt").write_bytes(content)
    result = run({"operation": "count_lines", "path": "t.txt"})
    assert result["lines"] == lines and result["bytes"] == len(content)


def test_count_lines_across_chunks(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "CHUNK", 7)
    (allowed / "t.txt").write_bytes(b"line\n" * 1000 + b"last")
    assert run({"operation": "count_lines", "path": "t.txt"})["lines"] == 1001


def test_compress_then_decompress(allowed: Path) -> None:
    data = b"jobd " * 300_000 + os.urandom(1000)
    (allowed / "in.txt").write_bytes(data)
    packed = run({"operation": "compress", "path": "in.txt", "level": 9})
    assert packed["output"] == str(allowed / "in.txt.gz")
    assert packed["bytes_in"] == len(data) and packed["bytes_out"] < len(data) / 10
    assert gzip.decompress((allowed / "in.txt.gz").read_bytes()) == data
    (allowed / "in.txt").unlink()
    unpacked = run({"operation": "decompress", "path": "in.txt.gz"})
    assert unpacked["output"] == str(allowed / "in.txt")
    assert (allowed / "in.txt").read_bytes() == data
    assert unpacked["bytes_out"] == len(data)
    assert leftovers(allowed) == []


def test_compress_is_reproducible_and_replaces_its_output(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that runs twice (after a crash) writes the same bytes over the first output."""
    (allowed / "in.txt").write_bytes(b"same input\n" * 1000)
    run({"operation": "compress", "path": "in.txt", "output": "out.gz"})
    first = (allowed / "out.gz").read_bytes()
    # Move the input's mtime and the clock on, so a gzip header with a timestamp would differ.
    later = time.time() + 3600
    os.utime(allowed / "in.txt", (later, later))
    monkeypatch.setattr(time, "time", lambda: later)
    run({"operation": "compress", "path": "in.txt", "output": "out.gz"})
    assert (allowed / "out.gz").read_bytes() == first


def test_paths_in_the_second_allowed_dir_and_absolute_ones(allowed: Path) -> None:
    more = allowed.parent / "more"
    (more / "x.txt").write_bytes(b"x\n")
    out = more / "sub"
    out.mkdir()
    result = run(
        {"operation": "compress", "path": str(more / "x.txt"), "output": str(out / "x.gz")}
    )
    assert result["output"] == str(out / "x.gz")


def test_symlink_that_stays_inside_is_followed(allowed: Path) -> None:
    (allowed / "real.txt").write_bytes(b"a\nb\n")
    (allowed / "link.txt").symlink_to(allowed / "real.txt")
    assert run({"operation": "count_lines", "path": "link.txt"})["lines"] == 2


def test_a_decompression_bomb_stops_at_max_output_bytes_and_leaves_nothing(
    allowed: Path,
) -> None:
    current = settings.current()
    limited = replace(current.files, max_output_bytes=1024 * 1024)
    settings.configure(settings.HandlerSettings(current.smtp, limited))
    bomb = gzip.compress(bytes(20 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024
    (allowed / "bomb.gz").write_bytes(bomb)
    refused(
        {"operation": "decompress", "path": "bomb.gz"},
        r"decompresses to more than files.max_output_bytes \(1048576 bytes\)",
    )
    assert sorted(p.name for p in allowed.iterdir()) == ["bomb.gz"]  # no output, no temporary
    (allowed / "small.gz").write_bytes(gzip.compress(bytes(1024 * 1024)))
    assert run({"operation": "decompress", "path": "small.gz"})["bytes_out"] == 1024 * 1024


def test_max_output_bytes_defaults_to_one_gib() -> None:
    assert FilesConfig(()).max_output_bytes == DEFAULT_MAX_OUTPUT_BYTES == 1024**3


def test_decompress_of_corrupt_data_fails_permanently_and_leaves_nothing(allowed: Path) -> None:
    good = gzip.compress(b"hello world\n" * 10_000)
    (allowed / "bad.gz").write_bytes(good[:-20])  # truncated: no end-of-stream marker
    refused({"operation": "decompress", "path": "bad.gz"}, "not valid gzip data")
    (allowed / "worse.gz").write_bytes(b"not gzip at all")
    refused({"operation": "decompress", "path": "worse.gz"}, "not valid gzip data")
    assert not (allowed / "bad").exists() and not (allowed / "worse").exists()
    assert leftovers(allowed) == []


def test_progress_and_cancellation_between_chunks(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled in the middle of a file: stops at the next chunk, and neither the output nor
    a temporary file is left behind."""
    monkeypatch.setattr(files, "CHUNK", 64 * 1024)
    monkeypatch.setattr(files, "PROGRESS_EVERY", 256 * 1024)
    (allowed / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    reports: list[Any] = []
    stop = threading.Event()

    def on_progress(data: Any) -> None:
        reports.append(data)
        stop.set()  # the cancel arrives while the job is under way

    ctx = make_context(job_id=7, type="process_file", stop=stop, on_progress=on_progress)
    with pytest.raises(JobCancelled):
        files.process_file(ctx, {"operation": "compress", "path": "big.bin"})
    assert reports == [{"bytes": 256 * 1024, "total": 4 * 1024 * 1024}]
    assert not (allowed / "big.bin.gz").exists()
    assert leftovers(allowed) == []


def test_progress_is_reported_every_so_many_bytes(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "CHUNK", 1024)
    monkeypatch.setattr(files, "PROGRESS_EVERY", 4096)
    (allowed / "f").write_bytes(b"x" * 10_000)
    reports: list[Any] = []
    run({"operation": "checksum", "path": "f"}, make_context(on_progress=reports.append))
    assert [r["bytes"] for r in reports] == [4096, 8192]
    assert {r["total"] for r in reports} == {10_000}


# --- payloads refused at submit time ------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({}, "operation: is required"),
        ({"operation": "delete", "path": "x"}, "operation: must be one of"),
        ({"operation": "checksum"}, "path: is required"),
        ({"operation": "checksum", "path": ""}, "path: must not be empty"),
        ({"operation": "checksum", "path": 42}, r"path: must be a path"),
        ({"operation": "checksum", "path": ["a"]}, r"path: must be a path"),
        ({"operation": "checksum", "path": "a\0b"}, "path: must not contain a NUL"),
        ({"operation": "checksum", "path": "x" * 5000}, "path: is longer than"),
        ({"operation": "checksum", "path": "../etc/passwd"}, r"path: must not contain '\.\.'"),
        ({"operation": "checksum", "path": "a/../../b"}, r"path: must not contain '\.\.'"),
        ({"operation": "checksum", "path": "/etc/.."}, r"path: must not contain '\.\.'"),
        ({"operation": "checksum", "path": "x", "output": "y"}, "output: checksum writes no"),
        ({"operation": "checksum", "path": "x", "level": 3}, "level: only compress"),
        ({"operation": "compress", "path": "x", "level": 0}, "level: must be from 1 to 9"),
        ({"operation": "compress", "path": "x", "level": True}, "level: must be an integer"),
        ({"operation": "compress", "path": "x", "output": "../y"}, r"output: must not contain"),
        ({"operation": "decompress", "path": "x.zip"}, "output: is required when path"),
        ({"operation": "checksum", "path": "x", "mode": "fast"}, "mode: unknown field"),
    ],
)
def test_bad_payloads(allowed: Path, payload: dict[str, Any], match: str) -> None:
    invalid(payload, match)


def test_validator_needs_no_configuration() -> None:
    """Validators also run in applications (jobd.enqueue) that have no jobd configuration."""
    settings.configure(None)
    files.check_task({"operation": "checksum", "path": "/anywhere/at/all"})


# --- paths refused in the worker ----------------------------------------------------------


def test_absolute_path_elsewhere(allowed: Path) -> None:
    refused({"operation": "checksum", "path": "/etc/passwd"}, "outside files.allowed_dirs")
    outside = allowed.parent / "outside" / "secret"
    outside.write_text("secret")
    refused({"operation": "checksum", "path": str(outside)}, "outside files.allowed_dirs")


def test_a_prefix_is_not_a_parent(allowed: Path) -> None:
    """/x/data-evil is not under /x/data."""
    evil = allowed.parent / "data-evil"
    evil.mkdir()
    (evil / "f").write_text("f")
    refused({"operation": "checksum", "path": str(evil / "f")}, "outside files.allowed_dirs")


def test_symlink_escaping_to_a_file(allowed: Path) -> None:
    secret = allowed.parent / "outside" / "secret"
    secret.write_text("secret")
    (allowed / "innocent.txt").symlink_to(secret)
    refused({"operation": "checksum", "path": "innocent.txt"}, "through a symbolic link")


def test_symlink_escaping_through_a_directory(allowed: Path) -> None:
    (allowed.parent / "outside" / "secret").write_text("secret")
    (allowed / "sub").symlink_to(allowed.parent / "outside")
    refused({"operation": "checksum", "path": "sub/secret"}, "through a symbolic link")
    (allowed / "x").write_text("x")
    refused({"operation": "compress", "path": "x", "output": "sub/x.gz"}, "through a symbolic link")
    assert not (allowed.parent / "outside" / "x.gz").exists()


def test_symlink_to_root(allowed: Path) -> None:
    (allowed / "root").symlink_to("/")
    refused({"operation": "checksum", "path": "root/etc/passwd"}, "through a symbolic link")


def test_output_that_is_a_symlink_is_refused(allowed: Path) -> None:
    (allowed / "in").write_text("in")
    target = allowed.parent / "outside" / "target"
    target.write_text("keep me")
    (allowed / "in.gz").symlink_to(target)
    refused({"operation": "compress", "path": "in"}, "is a symbolic link")
    assert target.read_text() == "keep me"


def test_hard_linked_input_is_refused(allowed: Path) -> None:
    secret = allowed.parent / "outside" / "secret"
    secret.write_text("secret")
    os.link(secret, allowed / "looks-harmless")
    refused({"operation": "checksum", "path": "looks-harmless"}, "2 hard links")


def test_hard_linked_output_is_refused_and_its_other_name_untouched(allowed: Path) -> None:
    (allowed / "in").write_text("in")
    victim = allowed.parent / "outside" / "victim"
    victim.write_text("keep me")
    os.link(victim, allowed / "in.gz")
    refused({"operation": "compress", "path": "in"}, "hard links")
    assert victim.read_text() == "keep me"
    assert leftovers(allowed) == []


def test_fifo_is_refused_without_blocking(allowed: Path) -> None:
    os.mkfifo(allowed / "pipe")
    started = time.monotonic()
    refused({"operation": "checksum", "path": "pipe"}, "not a regular file")
    assert time.monotonic() - started < 2


def test_directory_and_missing_inputs(allowed: Path) -> None:
    (allowed / "dir").mkdir()
    refused({"operation": "checksum", "path": "dir"}, "not a regular file")
    refused({"operation": "checksum", "path": "nope"}, "No such file")


def test_output_must_not_be_the_input(allowed: Path) -> None:
    (allowed / "x.gz").write_bytes(gzip.compress(b"x"))
    refused(
        {"operation": "decompress", "path": "x.gz", "output": "x.gz"}, "is the input file itself"
    )
    assert gzip.decompress((allowed / "x.gz").read_bytes()) == b"x"


def test_output_that_is_a_directory_or_in_a_missing_one(allowed: Path) -> None:
    (allowed / "x").write_text("x")
    (allowed / "x.gz").mkdir()
    refused({"operation": "compress", "path": "x"}, "not a regular file")
    refused({"operation": "compress", "path": "x", "output": "no/such/dir.gz"}, "cannot use")


def test_no_allowed_dirs_refuses_everything(allowed: Path) -> None:
    current = settings.current()
    settings.configure(settings.HandlerSettings(current.smtp, FilesConfig(())))
    refused({"operation": "checksum", "path": str(allowed / "x")}, "files.allowed_dirs is empty")


def test_a_symlink_swapped_in_after_the_check_is_caught(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the path resolves inside when checked, and a directory on it is replaced by a
    link outside before the open.  The opened descriptor's real path gives it away."""
    (allowed.parent / "outside" / "secret").write_text("secret")
    (allowed / "sub").symlink_to(allowed.parent / "outside")
    monkeypatch.setattr(os.path, "realpath", lambda path: os.path.normpath(path))
    refused({"operation": "checksum", "path": "sub/secret"}, "was opened as .*outside")
    (allowed / "x").write_text("x")
    (allowed.parent / "outside" / "deeper").mkdir()
    refused({"operation": "compress", "path": "x", "output": "sub/deeper/x.gz"}, "was opened as")
    assert list((allowed.parent / "outside" / "deeper").iterdir()) == []
    # A link as the last component is refused by the open itself (O_NOFOLLOW).
    refused({"operation": "compress", "path": "x", "output": "sub/x.gz"}, "cannot use")
