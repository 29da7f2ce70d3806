"""The README's five-minute tour, run as a reader runs it.

The commands are read from README.md, not copied here: the code block after
`<!-- tour: daemon -->` starts the daemon (in the background, as in a first terminal), and the
`console` block after `<!-- tour: session -->` holds the commands typed in a second terminal,
each (`$ command`) followed by the output the README promises.  Each command runs verbatim
through bash, in a fresh home, state and runtime directory, with `jobd` and `jobctl` on the
PATH running this checkout; its output (stdout and stderr together) must match the README's
by the rules of tests/e2e/doc_shell.py (`…` stands for any text, spaces are collapsed).

Then the daemon gets SIGINT (the README's Ctrl-C) by pid and must drain and exit 0.  The
set-up's `pip install .` is what tests/e2e/test_wheel.py checks; the test command is checked by
.ci/run, which runs it.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobd.client import Client
from jobd.errors import Unavailable
from tests.daemon import ROOT
from tests.e2e.doc_shell import ELLIPSIS, Shell, fresh_shell, output_matches

README = ROOT / "README.md"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


# --- reading the tour ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    command: str
    expected: list[str]


def block_after(text: str, marker: str) -> tuple[str, str]:
    """The language and the body of the fenced code block that follows `marker`."""
    start = text.index(marker) + len(marker)
    match = re.compile(r"\n```(\w*)\n(.*?)\n```", re.S).search(text, start)
    assert match is not None, f"README.md: no code block after {marker}"
    between = text[start : match.start()].strip()
    assert not between, f"README.md: text between {marker} and its code block: {between!r}"
    return match.group(1), match.group(2)


def daemon_command(text: str) -> str:
    language, body = block_after(text, "<!-- tour: daemon -->")
    assert language == "sh"
    lines = [line for line in body.splitlines() if line.strip()]
    assert len(lines) == 1, f"the daemon block should hold one command: {lines}"
    return lines[0]


def session_steps(text: str) -> list[Step]:
    language, body = block_after(text, "<!-- tour: session -->")
    assert language == "console"
    steps: list[Step] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:], []))
        else:
            assert steps, f"output before the first command: {line!r}"
            steps[-1].expected.append(line)
    return steps


# --- comparing output ---------------------------------------------------------------------------


def test_output_matching_rules() -> None:
    shown = ["job 1 done", ELLIPSIS, "result:  {…}"]
    assert output_matches(shown, ["job 1 done", "a", "b", "result: {1}"])
    assert output_matches(shown, ["job  1 done", "result: {}"])
    assert not output_matches(shown, ["job 1 done", "result: {1}", "more"])
    assert not output_matches(shown, ["job 2 done", "result: {1}"])
    assert not output_matches(["a"], [])
    assert output_matches([], [])


def test_the_tour_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    assert "jobd run" in daemon_command(text)
    commands = [step.command.split()[0] for step in session_steps(text)]
    assert commands == ["jobctl", "jobctl", "curl"], commands


# --- running it ---------------------------------------------------------------------------------


@pytest.fixture
def shell() -> Iterator[Shell]:
    with fresh_shell("readme-") as fresh:
        yield fresh


def _port_of(command: str) -> int:
    match = re.search(r"127\.0\.0\.1:(\d+)", command)
    assert match, f"no 127.0.0.1:PORT in {command!r}"
    return int(match.group(1))


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _daemon_answers(socket_path: Path) -> bool:
    try:
        with Client(socket_path, timeout=2.0) as client:
            client.hello()
        return True
    except Unavailable:
        return False


def _is_jobd(pid: int) -> bool:
    """Whether `pid` runs jobd itself (before or after it names itself with setproctitle)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"jobd.cli" in cmdline or cmdline.startswith(b"jobd: ")


def _wait_until(condition, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"jobd exited {process.returncode} before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {START_TIMEOUT}s:\n{log.read_text()}")
        time.sleep(0.05)


def test_the_tour_runs_as_written(shell: Shell) -> None:
    text = README.read_text(encoding="utf-8")
    command, steps = daemon_command(text), session_steps(text)
    port = _port_of(command)
    if shutil.which("curl") is None:
        pytest.skip("the tour uses curl, which this machine does not have")
    if not _port_free(port):
        pytest.skip(f"the tour's port {port} is taken on this machine")

    log = shell.root / "jobd.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            ["bash", "-c", command],
            cwd=shell.root / "home",
            env=shell.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # pytest's own Ctrl-C is not the daemon's
        )
    try:
        # bash runs a one-command script by exec: the pid is jobd's, which gets the Ctrl-C.
        _wait_until(lambda: _is_jobd(daemon.pid), daemon, log, "running jobd as its own process")
        socket_path = shell.root / "run" / "jobd.sock"
        _wait_until(lambda: _daemon_answers(socket_path), daemon, log, "answering on its socket")
        _wait_until(lambda: _http_ready(port), daemon, log, "ready over HTTP")

        for step in steps:
            result = shell.run(step.command)
            actual = result.stdout.splitlines()
            assert result.returncode == 0, (
                f"$ {step.command}\nexit {result.returncode}\n{result.stdout}"
            )
            assert output_matches(step.expected, actual), (
                f"$ {step.command}\n--- README shows\n"
                + "\n".join(step.expected)
                + "\n--- it printed\n"
                + result.stdout
            )

        daemon.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            status = daemon.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"jobd did not stop within {STOP_TIMEOUT}s of SIGINT:\n{log.read_text()}")
        output = log.read_text()
        assert status == 0, f"jobd exited {status}:\n{output}"
        assert "draining" in output and "jobd stopped" in output, output
        assert not socket_path.exists(), "jobd left its socket behind"
        # Set-up's promise: the embedded default lives in $XDG_STATE_HOME/jobd/jobd.db.
        assert (shell.root / "state" / "jobd" / "jobd.db").is_file()
        # The HTTP shim child once aborted at exit (a thread blocked in a buffered read of its
        # stdin pipe held the reader's lock through interpreter shutdown).
        assert "Fatal Python error" not in output, output
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
