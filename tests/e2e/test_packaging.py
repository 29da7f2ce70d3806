"""The deployment files: systemd units, the Dockerfile and docker-compose.yml.

- systemd: `systemd-analyze verify` passes on the units without a word (skipped, saying why,
  where it cannot run); they carry what docs/deployment.md promises; their commands are
  commands jobd takes; TimeoutStopSec outlasts a drain with the configured defaults; and
  `jobd migrate` + `jobd run` in the environment systemd gives them (STATE_DIRECTORY,
  RUNTIME_DIRECTORY, NOTIFY_SOCKET, WATCHDOG_USEC) put the database and socket where the
  units and docs say, and tell systemd READY, WATCHDOG and STOPPING.
- Docker cannot run here, so what can be checked statically is: every COPY source exists and
  is in the build context (.dockerignore), the stages referred to exist, the image is
  multi-stage, non-root, has a health check, STOPSIGNAL SIGTERM and the socket in a volume;
  the compose file parses (and passes `docker-compose config` where that tool is installed),
  refers only to the services and volumes it defines, and its variables are documented; the
  commands of both are valid jobd/jobctl commands that the README and docs/deployment.md show,
  and the docs' `docker compose` commands name services the file defines.
- The wheel declares every distribution jobd imports.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from jobctl import cli as jobctl_cli
from jobd import cli as jobd_cli
from jobd.config import SETTINGS_BY_ENV, load_config, parse_duration

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("jobd.service", "jobd-http.service")
INSTALL_BIN = "/opt/jobd/bin/"
DOCS = (ROOT / "README.md", ROOT / "docs" / "deployment.md")


def docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


# --- commands -----------------------------------------------------------------------------------


def check_command(argv: list[str]) -> click.Context:
    """Parse a jobd or jobctl command line as the real CLI does, without running it; a bad
    subcommand or option raises click.UsageError."""
    prog = Path(argv[0]).name
    command: click.Command = {"jobd": jobd_cli.main, "jobctl": jobctl_cli.main}[prog]
    ctx = click.Context(command, info_name=prog)
    args = list(argv[1:])
    while isinstance(command, click.Group):
        assert args, f"{argv}: no subcommand"
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"{prog}: no command {name!r}")
        command = sub
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=name, parent=ctx)
    return command.make_context(name, args, parent=ctx)


def test_check_command_refuses_what_the_cli_refuses() -> None:
    check_command(["jobd", "config", "check"])
    check_command(["jobctl", "submit", "echo", "--wait"])
    for bad in (["jobd", "runn"], ["jobd", "http", "--lisen", "x"], ["jobctl", "health", "-x"]):
        with pytest.raises(click.UsageError):
            check_command(bad)


def doc_command_lines() -> list[str]:
    """Shell command lines in the README and deployment guide's code blocks (continuations
    joined, prompts and comments dropped)."""
    lines = []
    for block in re.findall(r"```(?:sh|console|bash)\n(.*?)```", docs_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


# --- systemd ------------------------------------------------------------------------------------


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (ROOT / "systemd" / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(name: str) -> dict[str, str]:
    """The [Service] section, each key's last value."""
    return {k: v[-1] for k, v in unit(name)["Service"].items()}


@pytest.fixture(scope="module")
def analyze() -> str:
    """systemd-analyze, if it runs here (it needs no running systemd for `verify`)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian: apt-get install systemd); the units were"
            " not verified"
        )
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.service"
        probe.write_text("[Service]\nExecStart=/bin/true\n")
        result = subprocess.run(
            [tool, "verify", "--man=no", str(probe)], capture_output=True, text=True, timeout=60
        )
    if result.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {result.stderr.strip()}")
    return tool


def verify(tool: str, units: dict[str, str], directory: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on the given unit texts.  verify insists that each command
    exists on this machine; jobd is not installed at /opt/jobd here, so the units are verified
    with that prefix pointing at stand-in executables."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("jobd", "jobctl"):
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    paths = []
    for name, text in units.items():
        path = directory / name
        path.write_text(text.replace(INSTALL_BIN, f"{bin_dir}/"))
        paths.append(str(path))
    return subprocess.run(
        [tool, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=60
    )


def test_units_verify(analyze: str, tmp_path: Path) -> None:
    units = {n: (ROOT / "systemd" / n).read_text(encoding="utf-8") for n in UNITS}
    result = verify(analyze, units, tmp_path)
    # verify exits 0 on unknown keys and bad values too; it only says so, and must not.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_mistake(analyze: str, tmp_path: Path) -> None:
    text = (ROOT / "systemd" / "jobd.service").read_text(encoding="utf-8")
    broken = text.replace("KillMode=mixed", "KillMod=mixed").replace(
        "WatchdogSec=30", "WatchdogSec=thirty"
    )
    result = verify(analyze, {"jobd.service": broken}, tmp_path)
    assert "Unknown key 'KillMod'" in result.stderr
    assert "Failed to parse sec value" in result.stderr


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
}


def test_jobd_service_is_what_the_docs_say() -> None:
    s = service("jobd.service")
    expected = {
        "Type": "notify",
        "User": "jobd",
        "Group": "jobd",
        "RuntimeDirectory": "jobd",
        "StateDirectory": "jobd",
        "ExecStartPre": f"{INSTALL_BIN}jobd migrate",
        "ExecStart": f"{INSTALL_BIN}jobd run",
        "KillMode": "mixed",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
        "EnvironmentFile": "-/etc/jobd/jobd.env",
        **HARDENING,
    }
    assert {k: s.get(k) for k in expected} == expected
    assert parse_duration(s["WatchdogSec"]) >= 10
    assert unit("jobd.service")["Install"]["WantedBy"] == ["multi-user.target"]
    # ReadWritePaths: shown for the handlers' directories, commented out (nothing to grant).
    assert "#ReadWritePaths=" in (ROOT / "systemd" / "jobd.service").read_text()


def test_jobd_http_service_reaches_the_daemons_socket() -> None:
    daemon, shim = service("jobd.service"), service("jobd-http.service")
    assert shim["Environment"] == f"JOBD_SOCKET=/run/{daemon['RuntimeDirectory']}/jobd.sock"
    assert shim["SupplementaryGroups"] == daemon["Group"]
    assert "jobd.service" in unit("jobd-http.service")["Unit"]["After"][0].split()
    assert {k: shim.get(k) for k in HARDENING} == HARDENING
    argv = shlex.split(shim["ExecStart"])
    assert argv[:2] == [f"{INSTALL_BIN}jobd", "http"]
    # Loopback: it starts without tokens (a non-loopback address needs JOBD_HTTP_TOKENS).
    load_config(None, {"JOBD_HTTP_LISTEN": argv[argv.index("--listen") + 1]})


def test_unit_commands_are_jobd_commands() -> None:
    for name in UNITS:
        for key, values in unit(name)["Service"].items():
            if key.startswith("Exec"):
                for value in values:
                    argv = shlex.split(value.lstrip("-"))
                    assert argv[0].startswith(INSTALL_BIN), f"{name}: {key}={value}"
                    check_command(argv)
                    shown = " ".join([Path(argv[0]).name, *argv[1:]])
                    assert shown in docs_text(), f"{name}: `{shown}` is in no document"


def test_stop_timeout_outlasts_the_drain() -> None:
    """The drain (drain_timeout, then 2 kill graces) and the write-back after it (up to
    max(lease_seconds, 5) s) fit in TimeoutStopSec and compose's stop_grace_period."""
    config = load_config(None, {})
    needed = (
        config.shutdown.drain_timeout
        + 2 * config.shutdown.kill_grace
        + max(config.jobs.lease_seconds, 5.0)
    )
    assert parse_duration(service("jobd.service")["TimeoutStopSec"]) > needed
    services = compose()["services"]
    for name in ("jobd", "node"):
        assert parse_duration(services[name]["stop_grace_period"]) > needed


def test_env_file_names_only_settings() -> None:
    """Every variable in the example environment file is one jobd reads, each with a value it
    accepts; all are commented out, so that the file installed as it is changes nothing."""
    text = (ROOT / "systemd" / "jobd.env").read_text(encoding="utf-8")
    assignments = re.findall(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", text, re.M)
    assert assignments, "no VARIABLE=value line"
    env = {}
    for commented, name, value in assignments:
        assert commented == "#", f"{name} is set; the example should change nothing"
        assert name in SETTINGS_BY_ENV or name == "JOBD_CONFIG", f"{name} is no jobd setting"
        if name != "JOBD_CONFIG":
            env[name] = value
    load_config(None, env)


@dataclass
class Notifications:
    sock: socket.socket
    seen: list[str]

    def wait_for(self, field: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(field) for line in self.seen):
            if process.poll() is not None:
                pytest.fail(f"jobd exited {process.returncode} before sending {field}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {field} within {timeout}s; got {self.seen}")
            with contextlib.suppress(TimeoutError):
                self.seen += self.sock.recv(4096).decode().splitlines()


@pytest.fixture
def systemd_dirs() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="unit-"))  # short: socket paths have 108 bytes
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_jobd_under_the_environment_systemd_gives_it(systemd_dirs: Path) -> None:
    """What jobd.service relies on: with StateDirectory= and RuntimeDirectory= (and no
    configuration), `jobd migrate` creates the SQLite database in the state directory and
    `jobd run` uses it, binds /run/jobd/jobd.sock's stand-in, and speaks sd_notify."""
    s = service("jobd.service")
    state, runtime = systemd_dirs / "state", systemd_dirs / "run"
    state.mkdir(mode=0o750)
    runtime.mkdir(mode=0o750)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBD_", "XDG_", "NOTIFY_", "WATCHDOG_"))
    }
    env.update(
        HOME=str(systemd_dirs),
        STATE_DIRECTORY=str(state),
        RUNTIME_DIRECTORY=str(runtime),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        JOBD_WORKERS="2",
    )
    argv = {k: shlex.split(s[k])[1:] for k in ("ExecStartPre", "ExecStart")}
    migrate = subprocess.run(
        [sys.executable, "-m", "jobd.cli", *argv["ExecStartPre"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert (state / "jobd.db").is_file()

    notify_path = systemd_dirs / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.settimeout(0.2)
        watchdog = parse_duration(s["WatchdogSec"])
        env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC=str(int(watchdog * 1e6)))
        log = systemd_dirs / "jobd.log"
        with open(log, "wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "jobd.cli", *argv["ExecStart"]],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        notes = Notifications(sock, [])
        try:
            notes.wait_for("READY=1", daemon, 30)
            control = runtime / "jobd.sock"
            assert stat.S_ISSOCK(control.stat().st_mode)
            assert stat.S_IMODE(control.stat().st_mode) == 0o660
            jobctl = subprocess.run(
                [sys.executable, "-m", "jobctl", "health"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert jobctl.returncode == 0, jobctl.stdout + jobctl.stderr
            notes.wait_for("WATCHDOG=1", daemon, watchdog)
            daemon.send_signal(getattr(signal, s["KillSignal"]))
            notes.wait_for("STOPPING=1", daemon, 10)
            status = daemon.wait(parse_duration(s["TimeoutStopSec"]))
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        assert status == 0, log.read_text()
        assert not control.exists()


# --- Docker -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    arguments: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate((ROOT / "Dockerfile").read_text().splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, arguments = " ".join(pending).partition(" ")
            out.append(Instruction(start, keyword.upper(), arguments.strip()))
            pending = []
    return out


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not exec form: {arguments}"
    return value


def flags(arguments: str) -> tuple[dict[str, str], list[str]]:
    """An instruction's --flags and its other words."""
    words = shlex.split(arguments)
    options = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    return options, words


def stages() -> list[str]:
    names = []
    for ins in dockerfile():
        if ins.keyword == "FROM":
            words = ins.arguments.split()
            names.append(words[2] if len(words) >= 3 and words[1].lower() == "as" else "")
    return names


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any folder it is in; `**` any depth."""
    regex = fnmatch.translate(pattern.strip("/")).replace(".*.*", ".*")
    parts = path.split("/")
    return any(re.match(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def in_build_context(path: str) -> bool:
    included = True
    for pattern in dockerignore():
        negated = pattern.startswith("!")
        if _pattern_matches(pattern.lstrip("!"), path):
            included = negated
    return included


def tracked_files(under: str) -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "--", under], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_dockerignore_rules() -> None:
    assert in_build_context("jobd/cli.py") and in_build_context("docs/openapi.yaml")
    assert not in_build_context("docs/http.md")
    assert not in_build_context(".git/config") and not in_build_context(".env")
    assert not in_build_context("jobd/__pycache__/cli.cpython-311.pyc")


def test_dockerfile_copy_sources_exist_in_the_build_context() -> None:
    names = iter(stages())
    earlier: list[str] = []  # the stages before the current one, which it may copy from
    current: str | None = None
    copies = 0
    for ins in dockerfile():
        options, words = flags(ins.arguments)
        if ins.keyword == "FROM":
            if current is not None:
                earlier.append(current)
            current = next(names)
        if ins.keyword == "RUN" and "mount" in options:
            mount = dict(kv.partition("=")[::2] for kv in options["mount"].split(","))
            if "from" in mount:
                assert mount["from"] in earlier, f"line {ins.line}: no stage {mount['from']}"
        if ins.keyword not in ("COPY", "ADD"):
            continue
        sources = words[:-1]
        assert sources, f"line {ins.line}: nothing to copy"
        if "from" in options:
            assert options["from"] in earlier, f"line {ins.line}: no stage {options['from']}"
            continue
        for source in sources:
            copies += 1
            assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
            files = tracked_files(source)
            assert files, f"line {ins.line}: {source} holds no file in git"
            excluded = [f for f in files if not in_build_context(f)]
            assert excluded == [], f"line {ins.line}: .dockerignore leaves out {excluded}"
    assert copies


def test_dockerfile_builds_what_the_wheel_needs() -> None:
    """The build stage copies everything pyproject.toml builds the wheel from."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(wheel["packages"]) | set(wheel["force-include"])
    copied = set()
    for ins in dockerfile():
        options, words = flags(ins.arguments)
        if ins.keyword == "COPY" and "from" not in options:
            copied |= {w.rstrip("/") for w in words[:-1]}
    assert needed <= copied, f"not copied: {needed - copied}"


def test_dockerfile_essentials() -> None:
    instructions = dockerfile()
    keywords = [i.keyword for i in instructions]
    assert keywords.count("FROM") >= 2, "not multi-stage"
    final = instructions[len(keywords) - 1 - keywords[::-1].index("FROM") :]
    by_keyword = {i.keyword: i.arguments for i in final}  # the last of each
    assert by_keyword["USER"] not in ("root", "0")
    assert by_keyword["STOPSIGNAL"] == "SIGTERM"
    assert "/run/jobd" in exec_form(by_keyword["VOLUME"])
    env = dict(re.findall(r"(\w+)=(\S+)", by_keyword["ENV"]))
    assert env["RUNTIME_DIRECTORY"] == "/run/jobd" and env["STATE_DIRECTORY"] == "/var/lib/jobd"
    assert exec_form(by_keyword["CMD"]) == ["jobd", "run"]
    healthcheck = by_keyword["HEALTHCHECK"]
    assert exec_form(healthcheck[healthcheck.index("CMD") + 3 :]) == ["jobctl", "health"]
    # Under systemd the socket and database are found from the same two variables.
    config = load_config(None, env)
    assert str(config.control.socket) == "/run/jobd/jobd.sock"
    assert config.database.url == "sqlite:///var/lib/jobd/jobd.db"


def image_commands() -> list[list[str]]:
    """Every jobd or jobctl command the image and the compose file run."""
    commands = []
    for ins in dockerfile():
        if ins.keyword == "CMD":
            commands.append(exec_form(ins.arguments))
        elif ins.keyword == "HEALTHCHECK":
            commands.append(exec_form(ins.arguments[ins.arguments.index("CMD") + 3 :]))
    for name, svc in compose()["services"].items():
        if "command" in svc and svc.get("image", "").startswith("jobd"):
            assert isinstance(svc["command"], list), f"{name}: use the exec form"
            commands.append(svc["command"])
    return commands


def test_image_commands_are_jobd_commands_the_docs_show() -> None:
    shown = docs_text()
    commands = image_commands()
    assert len(commands) >= 5
    for argv in commands:
        check_command(argv)
        assert shlex.join(argv) in shown, f"`{shlex.join(argv)}` is in no document"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _named_volume(entry: object) -> str | None:
    if isinstance(entry, dict):
        return entry.get("source") if entry.get("type", "volume") == "volume" else None
    source = str(entry).split(":")[0]
    return None if ":" not in str(entry) or source.startswith((".", "/", "~", "$")) else source


def test_compose_refers_only_to_what_it_defines() -> None:
    spec = compose()
    services, volumes = spec["services"], spec.get("volumes") or {}
    assert set(services) >= {"postgres", "migrate", "jobd", "http"}
    used = set()
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: no image"
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (ROOT / context / "Dockerfile").is_file(), f"{name}: no Dockerfile"
        depends = svc.get("depends_on", {})
        for other in depends:
            assert other in services, f"{name} depends on undefined {other}"
        if isinstance(depends, dict):
            for other, rule in depends.items():
                assert rule["condition"] in (
                    "service_started",
                    "service_healthy",
                    "service_completed_successfully",
                )
                if rule["condition"] == "service_healthy":
                    assert not services[other].get("healthcheck", {}).get("disable")
        for entry in svc.get("volumes", []):
            volume = _named_volume(entry)
            if volume:
                assert volume in volumes, f"{name} uses undefined volume {volume}"
                used.add(volume)
    assert set(volumes) == used, f"defined but unused: {set(volumes) - used}"


def test_compose_services_do_their_jobs() -> None:
    services = compose()["services"]
    assert "healthcheck" in services["postgres"]
    migrate = services["migrate"]
    assert migrate["command"] == ["jobd", "migrate"] and migrate["restart"] == "no"
    assert services["jobd"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    # The shim reaches the daemon's socket through the volume they share, at /run/jobd.
    mounts = {n: {str(v).split(":")[1] for v in s.get("volumes", [])} for n, s in services.items()}
    assert "/run/jobd" in mounts["jobd"] & mounts["http"]
    assert "/run/jobd" not in mounts["node"], "a second node would find the first one's socket"
    assert services["http"]["command"][:2] == ["jobd", "http"]


def test_compose_file_validates(tmp_path: Path) -> None:
    """`config` of the compose tool itself (Compose v2 or v1), where one is installed."""
    for tool in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(tool[0]) is None:
            continue
        probe = subprocess.run([*tool, "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            continue
        env = {
            **os.environ,
            **dict.fromkeys(compose_variables(), "x"),
            "DOCKER_CONFIG": str(tmp_path),
        }
        result = subprocess.run(
            [*tool, "-f", str(ROOT / "docker-compose.yml"), "--profile", "scale", "config", "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("no docker compose or docker-compose here; checked statically only")


def compose_variables() -> set[str]:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    return set(re.findall(r"\$\{(\w+)", text))


def test_compose_variables_are_documented() -> None:
    variables = compose_variables()
    assert variables
    deployment = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert {v for v in variables if v not in deployment} == set()


_COMPOSE_OPTIONS_WITH_VALUES = {
    "-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--scale", "-e", "--env",
    "-u", "--user", "-w", "--workdir", "-t", "--timeout", "--index", "--entrypoint", "--name",
}  # fmt: skip


def test_docs_compose_commands_name_its_services() -> None:
    spec = compose()
    services = set(spec["services"])
    profiles = {p for s in spec["services"].values() for p in s.get("profiles", [])}
    seen = 0
    for line in doc_command_lines():
        words = shlex.split(line)
        if words[:2] != ["docker", "compose"]:
            continue
        seen += 1
        words = words[2:]
        named: list[str] = []
        subcommand = None
        while words:
            word = words.pop(0)
            if word in _COMPOSE_OPTIONS_WITH_VALUES:
                value = words.pop(0)
                if word == "--profile":
                    assert value in profiles, f"{line}: no profile {value}"
                if word == "--scale":
                    named.append(value.split("=")[0])
            elif word.startswith("-"):
                continue
            elif subcommand is None:
                subcommand = word
            else:
                named.append(word)
                if subcommand in ("exec", "run"):
                    if words and words[0] in ("jobd", "jobctl"):
                        check_command(words)
                    break
        assert {n for n in named if n not in services} == set(), line
    assert seen >= 3, "the docs show no docker compose commands"


def test_docs_docker_commands_use_the_image_they_build() -> None:
    """`docker build -t TAG` and the `docker run … TAG` after it agree, and the jobd and jobctl
    commands given to `docker exec` are valid."""
    tags, runs, execs = set(), 0, 0
    for line in doc_command_lines():
        words = shlex.split(line)
        if words[:2] == ["docker", "build"]:
            tags.add(words[words.index("-t") + 1])
            assert words[-1] == ".", line
        elif words[:2] == ["docker", "run"]:
            runs += 1
            assert words[-1] in tags, f"{line}: no image built as {words[-1]}"
        elif words[:2] == ["docker", "exec"]:
            execs += 1
            argv = [w for w in words[2:] if not w.startswith("-")][1:]
            check_command(words[words.index(argv[0]) :])
    assert tags and runs and execs


# --- the wheel's dependencies -------------------------------------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _optional_imports(tree: ast.AST) -> set[int]:
    """The import statements inside a `try` that catches ImportError: jobd runs without them."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


def test_every_imported_distribution_is_declared() -> None:
    """A clean `pip install .` brings everything jobd and jobctl import; an import that jobd
    runs without (inside a `try` that catches ImportError) is declared in an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {_normalise(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0]) for d in requirements}

    declared = names(project["dependencies"])
    extras = names([d for ds in project["optional-dependencies"].values() for d in ds])
    owners = importlib.metadata.packages_distributions()
    missing = {}
    for package in ("jobd", "jobctl"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            optional = _optional_imports(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported = [node.module]
                else:
                    continue
                allowed = declared | extras if id(node) in optional else declared
                for name in imported:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("jobd", "jobctl", "__future__"):
                        continue
                    dists = {_normalise(d) for d in owners.get(top, [top])}
                    if not dists & allowed:
                        missing.setdefault(top, str(path.relative_to(ROOT)))
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"
