"""The dashboard as a browser meets it: a real `jobd run` on SQLite with its HTTP shim as its
child (tokens configured, the cookie not Secure since the test speaks plain HTTP), and
Debian's chromium driven by Playwright (never a downloaded browser: `playwright install` is not
used).  One daemon and one browser per module; each test gets a fresh page (a new context: no
cookies), whose console errors and CSP violations fail the test.

Screenshots go to screenshots/ at the repository's root (ignored by git), for a reviewer.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.daemon import ROOT, DaemonProcess, answers, daemon_environment, short_directory
from tests.eventually import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "ui-write-token-0123456789"
READ_TOKEN = "ui-read-token-0123456789"
SCREENSHOTS = ROOT / "screenshots"
HERE = Path(__file__).parent
WIDTHS = {"wide": (1280, 900), "phone": (390, 844)}

sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Dashboard:
    """The daemon, its shim's base URL, and a client of its control socket."""

    process: DaemonProcess
    home: Path
    url: str
    socket: Path

    def api(self, method: str, path: str, token: str = TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def submit(self, job_type: str, payload: dict[str, Any]) -> int:
        answer = self.api("POST", "/jobs", json={"type": job_type, "payload": payload})
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def state(self, job_id: int) -> str:
        return str(self.api("GET", f"/jobs/{job_id}").json()["state"])


def _listening(log_text: str) -> str | None:
    for line in reversed(log_text.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "http shim listening":
            return f"http://{event['listen']}"
    return None


@pytest.fixture(scope="module")
def dashboard() -> Iterator[Dashboard]:
    home = short_directory("jobdui")
    socket = home / "jobd.sock"
    env = daemon_environment(
        home,
        {
            "JOBD_DATABASE_URL": f"sqlite:///{home / 'jobd.db'}",
            "JOBD_SOCKET": str(socket),
            "JOBD_WORKERS": "2",
            "JOBD_HANDLER_MODULES": "ui_handlers",
            "JOBD_HTTP_LISTEN": "127.0.0.1:0",
            "JOBD_HTTP_TOKENS": TOKEN,
            "JOBD_HTTP_READ_ONLY_TOKENS": READ_TOKEN,
            "JOBD_HTTP_SECURE_COOKIE": "false",
            "JOBD_JOBS_POLL_INTERVAL": "0.2",
            "JOBD_LOGGING_FORMAT": "json",
        },
        python_path=[HERE],
    )
    process = DaemonProcess.start(env, cwd=home, log_path=home / "jobd.log", args=["--migrate"])
    try:
        process.wait_until(lambda: answers(socket), what="jobd to answer")
        url = process.wait_until(lambda: _listening(process.log()), what="the shim to listen")
        yield Dashboard(process, home, url, socket)
        assert process.stop() == 0
    except BaseException:
        print(f"--- jobd's log ---\n{process.log_tail()}")
        raise
    finally:
        if process.exit_code() is None:
            process.kill_all()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM} (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


#: Runs in every page before its own scripts: CSP violations are collected where the test can
#: read them (Chromium also reports them as console errors).
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


@dataclass
class Watched:
    page: Any
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        csp = self.page.evaluate("window.__csp || []")
        assert not self.errors, f"console errors: {self.errors}"
        assert not csp, f"CSP violations: {csp}"


@pytest.fixture
def page(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(WATCH_CSP)
    context.set_default_timeout(15_000)
    new = context.new_page()
    watched = Watched(new)
    new.on("console", lambda m: m.type == "error" and watched.errors.append(m.text))
    new.on("pageerror", lambda e: watched.errors.append(f"uncaught: {e}"))
    yield watched
    watched.check()
    context.close()


def sign_in(page: Any, url: str, token: str = TOKEN) -> None:
    page.goto(url + "/ui/")
    assert "/ui/signin" in page.url
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/ui/")


def screenshot(page: Any, name: str) -> None:
    """The page at both widths, into screenshots/ (the viewport is set back to wide)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


#: Every table wider than the box that holds it (a .scroll box scrolls it, but at 1280 pixels
#: nothing should need to): "selector: table width > box width" for each.
OVERFLOWING_TABLES = """
() => [...document.querySelectorAll("main table")]
    .filter((t) => t.scrollWidth > t.parentElement.clientWidth + 1)
    .map((t) => `${t.className || t.closest("section")?.id || "table"}:`
        + ` ${t.scrollWidth} > ${t.parentElement.clientWidth}`)
"""


def tables_fit(page: Any, what: str) -> None:
    """No table of the page is cut off at the 1280-pixel width (nor wider than its box)."""
    page.set_viewport_size({"width": 1280, "height": 900})
    overflowing = page.evaluate(OVERFLOWING_TABLES)
    assert not overflowing, f"{what}: tables cut off at 1280 pixels: {overflowing}"


def eventually_state(dash: Dashboard, job_id: int, state: str) -> None:
    wait_for(lambda: dash.state(job_id) == state, 30, f"job {job_id} to be {state}")


__all__ = ["TOKEN", "Dashboard", "eventually_state", "os", "screenshot", "sign_in", "tables_fit"]
