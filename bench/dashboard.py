"""What open dashboards cost the daemon: the supervisor's CPU under one steady load, with no
browser, then with ten, then with none again (docs/dashboard.md states the result).

    python bench/dashboard.py [--rate 40] [--seconds 30] [--browsers 10] [--pg URL]

`jobd run` (SQLite by default, or PostgreSQL with --pg) with its HTTP shim as its child on a
free loopback port, two workers.  The load: `echo` jobs submitted at `--rate` a second through
the control socket, all phases alike.  A "browser" here is what static/app.js does, without
the rendering: it opens /ui/events and, on each job event, reads its page's `main` fragment
again, at most once per its page's throttle -- four show the overview (2 s), four the job list
(1 s), two a job page (only that job's events; it finished long ago, so none come).  Each
phase reports the supervisor's CPU seconds per wall second, and the shim's; a final phase runs
a daemon whose shim has the dashboard turned off (http.ui false: no subscription at all).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's http package: this folder leaves the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))  # run from a checkout

import argparse  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from jobd.client import Client  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PAGES = [("/ui/", 2.0)] * 4 + [("/ui/jobs", 1.0)] * 4 + [("/ui/jobs/1", 0.3)] * 2


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, home: Path, pg: str | None, ui: bool):
        self.port = free_port()
        self.socket = home / "jobd.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "XDG_"))} | {
            "HOME": str(home),
            "PYTHONPATH": str(HERE.parent),
            "JOBD_DATABASE_URL": pg or f"sqlite:///{home / 'jobd.db'}",
            "JOBD_SOCKET": str(self.socket),
            "JOBD_WORKERS": "2",
            "JOBD_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "JOBD_HTTP_UI": "true" if ui else "false",
            "JOBD_JOBS_RETENTION": "1h",
        }
        if pg:
            env["JOBD_DATABASE_SCHEMA"] = f"jobd_dash_{os.getpid()}_{int(ui)}"
        self.log = open(home / f"jobd-{int(ui)}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobd.cli", "run", "--migrate"],
            cwd=home,
            env=env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with Client(self.socket, timeout=2) as client:
                    client.hello()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except Exception:
                time.sleep(0.2)
        else:
            raise SystemExit("jobd did not start")
        self.shim_pid = next(
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit() and _parent(int(p)) == self.process.pid and b"jobd.http" in _cmd(int(p))
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return -1


def _cmd(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


class Load(threading.Thread):
    """`rate` echo jobs a second, in batches every 0.25 s."""

    def __init__(self, socket_path: Path, rate: int):
        super().__init__(daemon=True)
        self.socket_path, self.rate, self.stopped = socket_path, rate, threading.Event()

    def run(self) -> None:
        per_batch = max(1, self.rate // 4)
        with Client(self.socket_path, timeout=30) as client:
            next_at = time.monotonic()
            while not self.stopped.is_set():
                client.submit_many([{"type": "echo", "payload": {"n": 1}}] * per_batch)
                next_at += per_batch / self.rate
                self.stopped.wait(max(0.0, next_at - time.monotonic()))


class Browser(threading.Thread):
    """One tab: its event stream, and its page's fragment read again on events, throttled."""

    def __init__(self, port: int, page: str, throttle: float):
        super().__init__(daemon=True)
        self.port, self.page, self.throttle = port, page, throttle
        self.stopped = threading.Event()
        self.events = self.fetches = 0

    def run(self) -> None:
        stream = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
        stream.request("GET", "/ui/events")
        answer = stream.getresponse()
        assert answer.status == 200, answer.status
        job_id = self.page.rsplit("/", 1)[-1]
        dirty = threading.Event()

        def read() -> None:  # the stream, as EventSource reads it
            for line in iter(answer.fp.readline, b""):
                if line.startswith(b"data: {") and b'"id"' in line:
                    self.events += 1
                    change = json.loads(line[6:])
                    if not job_id.isdigit() or str(change["id"]) == job_id:
                        dirty.set()

        threading.Thread(target=read, daemon=True).start()
        pages = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self._fetch(pages)
        while not self.stopped.is_set():
            if dirty.wait(0.1):
                dirty.clear()
                self._fetch(pages)
                self.stopped.wait(self.throttle)
        # Close the stream under the reader's feet, as a closed tab does.
        with contextlib.suppress(OSError):
            answer.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        stream.close()

    def _fetch(self, conn: http.client.HTTPConnection) -> None:
        conn.request("GET", self.page, headers={"X-Jobd-Fragment": "main"})
        conn.getresponse().read()
        self.fetches += 1


def phase(daemon: Daemon, seconds: float, browsers: int, label: str) -> dict[str, float]:
    tabs = [Browser(daemon.port, *PAGES[i % len(PAGES)]) for i in range(browsers)]
    for tab in tabs:
        tab.start()
    time.sleep(2)  # the tabs' first page loads are not the steady state
    sup, shim = daemon.process.pid, daemon.shim_pid
    sup0, shim0, t0 = cpu_seconds(sup), cpu_seconds(shim), time.monotonic()
    time.sleep(seconds)
    sup1, shim1, t1 = cpu_seconds(sup), cpu_seconds(shim), time.monotonic()
    for tab in tabs:
        tab.stopped.set()
    for tab in tabs:
        tab.join(5)
    wall = t1 - t0
    result = {
        "supervisor_cpu": (sup1 - sup0) / wall,
        "shim_cpu": (shim1 - shim0) / wall,
        "events": sum(t.events for t in tabs),
        "fetches_per_s": sum(t.fetches for t in tabs) / wall,
    }
    print(f"{label:<28} " + "  ".join(f"{k}={v:.3f}" for k, v in result.items()), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--browsers", type=int, default=10)
    parser.add_argument("--pg", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobddash", dir="/tmp") as tmp:
        home = Path(tmp)
        for ui in (True, False):
            daemon = Daemon(home, args.pg, ui)
            with Client(daemon.socket) as client:
                client.submit("echo", {"first": True})  # job 1: the job pages' job
            load = Load(daemon.socket, args.rate)
            load.start()
            try:
                time.sleep(3)
                if ui:
                    phase(daemon, args.seconds, 0, "ui on, no browser")
                    phase(daemon, args.seconds, args.browsers, f"ui on, {args.browsers} browsers")
                    phase(daemon, args.seconds, 0, "ui on, no browser (again)")
                else:
                    phase(daemon, args.seconds, 0, "ui off (http.ui: false)")
            finally:
                load.stopped.set()
                load.join(10)
                daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
