"""Every example that submits a job, in README.md, docs/*.md and jobctl's --help texts, run as a
reader pastes it.

The examples are found, not listed here, so that one added later is run too:

- in fenced blocks of shell (```sh, ```console, ```bash, ```shell, or no language), each command
  that starts with `jobctl submit` (a `docker exec NAME` or `docker compose exec NAME` before it
  is dropped: the container's jobctl is this one) and each `curl` that sends a body to `/jobs`
  (the HTTP shim's submit); in ```console blocks a command is a `$ ` line, and the lines after it
  are its output; a line ending in `\\` goes on on the next;
- the same commands in the Examples of `jobctl --help` and `jobctl COMMAND --help`;
- each ```python block that calls `Client(...)` and `.submit(`.

They run against one `jobd run` configured as the documents describe it: the sample handlers
enabled (`handlers.samples`), `smtp.*` naming an SMTP server (aiosmtpd, here), `files.allowed_dirs`
a directory of the reader's, and the HTTP shim listening (`http.listen`), on the embedded SQLite
store, in a fresh home.  Commands run through bash in that home, where the files the examples
name (`@mail.json`, `--batch jobs.jsonl`, …) are; a `curl` goes to the shim's port instead of the
one written (8080 may be taken here) and gets `--fail-with-body`, so that an HTTP error fails it.

An example passes when it exits 0 — or, when its console output shows an error (`jobctl: …`),
when it fails with that output — and every job it created that is due has completed.  An example
the test cannot run (another host, a file it does not have, an unset variable) fails.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from aiosmtpd.controller import Controller

from jobctl.cli import main as jobctl_main
from jobd.client import Client
from jobd.protocol import JobView
from tests.daemon import ROOT, DaemonProcess, answers
from tests.e2e.doc_shell import Shell, fresh_shell, output_matches

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "console", "bash", "shell", ""}
SENDER = "Jobs <jobs@example.com>"
JOB_TIMEOUT = 60.0  # seconds a due job an example created has to complete

# The files the examples name, as a reader would have them (relative to the home directory).
READER_FILES = {
    "mail.json": '{"to": "ann@example.com", "subject": "Invoice 1234", "body": "Attached."}\n',
    "report.json": (
        '{"records": [{"region": "north", "amount": 3}, {"region": "south", "amount": 4}],'
        ' "group_by": "region", "value": "amount", "output": "reports/sales.html",'
        ' "title": "Sales by region"}\n'
    ),
    "jobs.jsonl": (
        '{"type": "echo", "payload": {"n": 1}}\n'
        '{"type": "sleep", "payload": {"seconds": 0.1}, "queue": "batch"}\n'
    ),
    "prices.jsonl": (ROOT / "docs/examples/workflows/prices.jsonl").read_text(encoding="utf-8"),
}
#: The handler modules the documents load beside the samples, and where they are.
EXAMPLE_MODULES = {"prices_workflow": ROOT / "docs/examples/workflows"}
FILES_DIRS = ("files", "files/reports")  # files.allowed_dirs and the report's output directory


# --- finding the examples -----------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    where: str  # file:line, or `jobctl COMMAND --help`
    kind: str  # "shell" or "python"
    code: str
    output: tuple[str, ...] = ()  # what a console block shows after the command

    @property
    def shows_error(self) -> bool:
        return bool(self.output) and self.output[0].startswith("jobctl:")


@dataclass
class _Command:
    line: int
    text: str
    output: list[str] = field(default_factory=list)


FENCE = re.compile(
    r"^(?P<indent> *)```(?P<language>\w*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)
DOCKER_EXEC = re.compile(r"^docker (?:compose )?exec (?:-\S+ )*\S+ (?=jobctl )")
CURL_SUBMIT = re.compile(r"^curl .*/jobs['\"]?(?: |$)")
CURL_BODY = re.compile(r" (?:-d|--data(?:-\w+)?|--json) ")


def commands(body: str, console: bool, first_line: int) -> list[_Command]:
    """The commands of a shell block, continuation lines joined; a console block's output
    lines go with the command before them."""
    found: list[_Command] = []
    continuing = False
    for number, line in enumerate(body.splitlines(), first_line):
        if continuing:
            found[-1].text += "\n" + line
        elif console and not line.startswith("$ "):
            if found:
                found[-1].output.append(line)
            continue
        else:
            text = line[2:] if console else line
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            found.append(_Command(number, text.strip()))
        continuing = line.endswith("\\")
    return found


def submits(command: str) -> bool:
    flat = " ".join(command.replace("\\\n", " ").split())
    return flat.startswith("jobctl submit") or bool(
        CURL_SUBMIT.match(flat) and CURL_BODY.search(flat + " ")
    )


def document_examples(path: Path) -> list[Example]:
    return examples_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def examples_in(text: str, name: str) -> list[Example]:
    examples: list[Example] = []
    for fence in FENCE.finditer(text):
        language = fence["language"]
        body = textwrap.dedent(fence["body"])
        first_line = text.count("\n", 0, fence.start()) + 2
        if language in SHELL_LANGUAGES:
            for command in commands(body, language == "console", first_line):
                code = DOCKER_EXEC.sub("", command.text)
                if submits(code):
                    where = f"{name}:{command.line}"
                    examples.append(Example(where, "shell", code, tuple(command.output)))
        elif language == "python" and "Client(" in body and ".submit(" in body:
            examples.append(Example(f"{name}:{first_line}", "python", body))
    return examples


def help_examples() -> list[Example]:
    """The submitting commands of `jobctl --help` and of each `jobctl COMMAND --help`."""
    parent = click.Context(jobctl_main, info_name="jobctl")
    helps = {"jobctl --help": jobctl_main.get_help(parent)}
    for name, command in jobctl_main.commands.items():
        context = click.Context(command, info_name=name, parent=parent)
        helps[f"jobctl {name} --help"] = command.get_help(context)
    return [
        Example(f"{where}:{command.line}", "shell", command.text)
        for where, text in helps.items()
        for command in commands(textwrap.dedent(text), False, 1)
        if submits(command.text)
    ]


def all_examples() -> list[Example]:
    return [e for path in DOCUMENTS for e in document_examples(path)] + help_examples()


EXAMPLES = all_examples()


def test_the_examples_are_found() -> None:
    """The finder itself: a document's examples of each kind, and none that only reads."""
    markdown = textwrap.dedent(
        """\
        ```console
        $ jobctl submit echo \\
            --payload '{}'
        job 1 submitted: echo in queue default, pending
        $ jobctl list
        ```
        ```sh
        docker compose exec jobd jobctl submit echo    # a comment
        curl -s http://127.0.0.1:8080/jobs -d '{"type": "echo"}'
        curl -s 'http://127.0.0.1:8080/jobs?state=failed'
        ```
          ```python
          with Client() as client:
              client.submit("echo")
          ```
        """
    )
    found = examples_in(markdown, "examples.md")
    assert [(e.kind, e.code, e.output) for e in found] == [
        (
            "shell",
            "jobctl submit echo \\\n    --payload '{}'",
            ("job 1 submitted: echo in queue default, pending",),
        ),
        ("shell", "jobctl submit echo    # a comment", ()),
        ("shell", 'curl -s http://127.0.0.1:8080/jobs -d \'{"type": "echo"}\'', ()),
        ("python", 'with Client() as client:\n    client.submit("echo")\n', ()),
    ]
    wheres = {e.where.split(":")[0] for e in EXAMPLES}
    assert {"docs/client.md", "docs/http.md", "docs/handlers.md", "README.md"} <= wheres
    assert {"jobctl --help", "jobctl submit --help"} <= wheres


INLINE_JOBCTL = re.compile(r"`jobctl ([a-z][\w-]*)")
SHELL_JOBCTL = re.compile(r"jobctl ([a-z][\w-]*)")


def named_subcommands(text: str) -> set[str]:
    """The jobctl subcommands a document names: in inline code (`jobctl status`) and as the
    commands of its shell blocks."""
    names = set(INLINE_JOBCTL.findall(text))
    for fence in FENCE.finditer(text):
        if fence["language"] in SHELL_LANGUAGES:
            body = textwrap.dedent(fence["body"])
            for command in commands(body, fence["language"] == "console", 1):
                named = SHELL_JOBCTL.match(DOCKER_EXEC.sub("", command.text))
                if named:
                    names.add(named[1])
    return names


def test_the_documents_name_only_jobctl_commands_that_exist() -> None:
    assert named_subcommands("`jobctl get`, `jobctl --json status`\n```sh\njobctl list\n```") == {
        "get",
        "list",
    }
    for path in DOCUMENTS:
        unknown = named_subcommands(path.read_text(encoding="utf-8")) - set(jobctl_main.commands)
        assert not unknown, f"{path.relative_to(ROOT)} names jobctl {sorted(unknown)}"


# --- the daemon the documents describe ----------------------------------------------------------


class _Accept:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Reader:
    """The reader's shell, next to a running daemon configured as the documents say."""

    shell: Shell
    socket: Path
    http_port: int

    def client(self) -> Client:
        return Client(self.socket, timeout=30.0)


@pytest.fixture(scope="module")
def reader() -> Iterator[Reader]:
    smtp = Controller(_Accept(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        with fresh_shell("docs-") as shell:
            yield from _running_daemon(shell, smtp.port)
    finally:
        smtp.stop()


def _running_daemon(shell: Shell, smtp_port: int) -> Iterator[Reader]:
    for name, content in READER_FILES.items():
        (shell.home / name).write_text(content, encoding="utf-8")
    for directory in FILES_DIRS:
        (shell.home / directory).mkdir()
    http_port = free_port()
    shell.env.update(
        JOBD_HANDLERS_SAMPLES="send_email,generate_report,process_file",
        JOBD_SMTP_HOST="127.0.0.1",
        JOBD_SMTP_PORT=str(smtp_port),
        JOBD_SMTP_FROM=SENDER,
        JOBD_FILES_ALLOWED_DIRS=str(shell.home / "files"),
        JOBD_HTTP_LISTEN=f"127.0.0.1:{http_port}",
        JOBD_WORKERS_COUNT="2",
        JOBD_HANDLER_MODULES=",".join(EXAMPLE_MODULES),
        PYTHONPATH=os.pathsep.join([*map(str, EXAMPLE_MODULES.values()), shell.env["PYTHONPATH"]]),
    )
    daemon = DaemonProcess.start(shell.env, cwd=shell.home, log_path=shell.root / "jobd.log")
    socket_path = shell.root / "run" / "jobd.sock"
    try:
        daemon.wait_until(lambda: answers(socket_path), what="jobd to answer")
        daemon.wait_until(lambda: http_ready(http_port), what="the HTTP shim to be ready")
        yield Reader(shell, socket_path, http_port)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        if daemon.exit_code() is None:
            daemon.kill_all()


# --- running them -------------------------------------------------------------------------------


def runnable(example: Example, reader: Reader) -> str:
    """The command to run: a curl example aimed at the shim's port, failing on an HTTP error."""
    if not example.code.startswith("curl "):
        return example.code
    hosts = set(re.findall(r"https?://([^/'\"\s]+)", example.code))
    if not hosts <= {"127.0.0.1:8080", "localhost:8080"}:
        pytest.fail(f"{example.where}: cannot run a submit to {sorted(hosts)}: {example.code}")
    code = re.sub(r"(127\.0\.0\.1|localhost):8080", f"127.0.0.1:{reader.http_port}", example.code)
    return "curl --fail-with-body " + code.removeprefix("curl ")


def run_example(example: Example, reader: Reader) -> tuple[int, str]:
    if example.kind == "python":
        script = reader.shell.root / "example.py"
        script.write_text(example.code, encoding="utf-8")
        result = reader.shell.run_argv([sys.executable, str(script)])
    else:
        result = reader.shell.run(runnable(example, reader))
    return result.returncode, result.stdout


def newest_id(client: Client) -> int:
    page = client.list(limit=1)
    return page.jobs[0].id if page.jobs else 0


def created_since(client: Client, last_id: int) -> list[JobView]:
    jobs: list[JobView] = []
    for job in client.iter_jobs():
        if job.id <= last_id:
            break
        jobs.append(job)
    return jobs


def check_jobs_complete(client: Client, jobs: list[JobView], example: Example) -> None:
    """Every job that is due (not delayed into the future) must complete."""
    due_by = datetime.now(UTC) + timedelta(seconds=1)
    for job in jobs:
        if job.run_at > due_by:
            continue
        done = client.wait(job.id, timeout=JOB_TIMEOUT)
        error = done.job.last_error
        assert done.job.state_name == "completed", (
            f"{example.where}: job {job.id} ({job.type}) ended {done.job.state_name}"
            f" (timed out: {done.timed_out}): {error.type + ': ' + error.message if error else ''}"
        )


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_the_example_runs_as_written(example: Example, reader: Reader) -> None:
    with reader.client() as client:
        before = newest_id(client)
        status, output = run_example(example, reader)
        shown = f"{example.where}:\n{example.code}\n--- exit {status}, output:\n{output}"
        if example.shows_error:
            assert status != 0, shown
            assert output_matches(list(example.output), output.splitlines()), shown
            return
        assert status == 0, shown
        check_jobs_complete(client, created_since(client, before), example)
