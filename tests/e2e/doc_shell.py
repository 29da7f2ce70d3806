"""What the documentation tests share: a fresh user's shell with this checkout's `jobd` and
`jobctl` on its PATH, and the rules by which a command's output matches what a document shows.

Output matching:

- lines are compared with runs of spaces collapsed;
- `…` inside a line stands for any text; a line that is only `…` for any number of lines;
- otherwise every line shown must be there, in order, and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.daemon import clean_environment

ELLIPSIS = "…"


# --- comparing output ---------------------------------------------------------------------------


def _normal(line: str) -> str:
    return " ".join(line.split())


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in _normal(expected).split(ELLIPSIS)))


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """True if `actual` is what `expected` shows (see the module docstring)."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if _normal(head) == ELLIPSIS:
        return any(output_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return (
        bool(actual)
        and _line_pattern(head).fullmatch(_normal(actual[0])) is not None
        and output_matches(rest, actual[1:])
    )


# --- a fresh shell ------------------------------------------------------------------------------


@dataclass
class Shell:
    """A fresh user's shell: its own HOME and XDG directories, this checkout's jobd."""

    root: Path
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.root / "home"

    def run(self, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`command` through bash, stdout and stderr together; an unset variable is an error
        rather than an empty word."""
        return self.run_argv(["bash", "-o", "pipefail", "-u", "-c", command], timeout)

    def run_argv(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )


@contextmanager
def fresh_shell(prefix: str) -> Iterator[Shell]:
    """A Shell in a new directory, removed afterwards.  The directory is short: the control
    socket's path (in XDG_RUNTIME_DIR) must fit in 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        bin_dir = root / "bin"
        for path in (bin_dir, root / "home", root / "state"):
            path.mkdir()
        (root / "run").mkdir(mode=0o700)  # what a login session's XDG_RUNTIME_DIR is like
        for name, module in (("jobd", "jobd.cli"), ("jobctl", "jobctl")):
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
            script.chmod(0o755)
        env = clean_environment()
        env.update(
            HOME=str(root / "home"),
            XDG_STATE_HOME=str(root / "state"),
            XDG_RUNTIME_DIR=str(root / "run"),
            PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
        )
        yield Shell(root, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
