"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against a
real `jobd run` and its HTTP shim: sign in, find a failed job through the filters, read its
error, retry it and watch it complete without a reload; cancel a running job; a payload with
markup in it shown as text; a read-only session that can change nothing.  Every page is
checked for console errors and CSP violations (the `page` fixture) and photographed at 1280 and
390 pixels (screenshots/)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import (
    READ_TOKEN,
    SCREENSHOTS,
    Dashboard,
    Watched,
    eventually_state,
    screenshot,
    sign_in,
    tables_fit,
)

#: What sticks out past a phone's 390 pixels (for the failure's message).
WIDEST = """
() => [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > 391).slice(0, 8)
    .map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_find_a_failed_job_read_its_error_and_retry_it_live(
    dashboard: Dashboard, page: Watched
) -> None:
    flag = dashboard.home / "flaky-flag"
    job_id = dashboard.submit("ui_flaky", {"flag": str(flag), "note": "retry me"})
    dashboard.submit("echo", {"n": 1})
    eventually_state(dashboard, job_id, "failed")
    p = page.page
    sign_in(p, dashboard.url)
    p.wait_for_selector("#live:not([hidden])")  # the event stream is open
    screenshot(p, "overview")

    p.click("nav >> text=Jobs")
    p.check("input[name=state][value=failed]")
    p.fill("input[name=type]", "ui_flaky")
    p.click("button:has-text('Filter')")
    p.wait_for_url("**/ui/jobs?**state=failed**")
    rows = p.locator("table.jobs tbody tr[data-job-id]")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-job-id") == str(job_id)
    screenshot(p, "jobs")

    p.click(f"a[href='/ui/jobs/{job_id}']")
    p.wait_for_url(f"**/ui/jobs/{job_id}")
    assert p.inner_text("#error-message") == "first run fails: the <b>disk</b> was full"
    assert "PermanentError" in p.inner_text(".last-error")
    screenshot(p, "job-failed")

    p.evaluate("window.__same_page = true")  # gone if the page were loaded again
    p.click("button:has-text('Retry')")
    p.wait_for_selector("h1 .state-completed")
    assert p.evaluate("window.__same_page") is True
    assert '"second": "run"' in p.inner_text("details.json:has-text('Result') pre")
    screenshot(p, "job-completed")


def test_cancel_a_running_job(dashboard: Dashboard, page: Watched) -> None:
    job_id = dashboard.submit("sleep", {"seconds": 120})
    eventually_state(dashboard, job_id, "running")
    p = page.page
    sign_in(p, dashboard.url)
    p.goto(f"{dashboard.url}/ui/jobs/{job_id}")
    p.wait_for_selector("#live:not([hidden])")
    p.wait_for_selector("h1 .state-running")
    p.evaluate("window.__same_page = true")
    p.click("button:has-text('Cancel')")
    p.wait_for_selector("h1 .state-canceled")
    assert p.evaluate("window.__same_page") is True
    assert dashboard.state(job_id) == "canceled"


def test_the_list_updates_by_itself_and_bulk_retry(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    sign_in(p, dashboard.url)
    p.goto(f"{dashboard.url}/ui/jobs?state=failed&state=completed&type=ui_flaky")
    p.wait_for_selector("#live:not([hidden])")
    before = p.locator("table.jobs tbody tr[data-job-id]").count()
    flags = [dashboard.home / f"bulk-{n}" for n in range(2)]
    ids = [dashboard.submit("ui_flaky", {"flag": str(f)}) for f in flags]
    # No reload: the new failed jobs appear as the daemon reports them.
    for job_id in ids:
        p.wait_for_selector(f"tr[data-job-id='{job_id}'] .state-failed")
    assert p.locator("table.jobs tbody tr[data-job-id]").count() == before + 2
    for job_id in ids:
        p.check(f"input[name=id][value='{job_id}']")
    assert p.inner_text("#selected-count") == "2 selected"
    p.click("button:has-text('Retry selected')")
    for job_id in ids:
        p.wait_for_selector(f"tr[data-job-id='{job_id}'] .state-completed")
    assert "2 done" in p.inner_text("#action-status")


def test_retry_every_matching_job_after_a_confirmation(dashboard: Dashboard, page: Watched) -> None:
    """The list filtered by type and state; "Retry all matching" counts them, asks in a
    dialog, retries them in steps and the jobs complete: no reload at any point."""
    ids = [
        dashboard.submit("ui_bulk_flaky", {"flag": str(dashboard.home / f"every-{n}")})
        for n in range(4)
    ]
    for job_id in ids:
        eventually_state(dashboard, job_id, "failed")
    p = page.page
    sign_in(p, dashboard.url)
    p.goto(f"{dashboard.url}/ui/jobs?state=failed&type=ui_bulk_flaky")
    p.wait_for_selector("#live:not([hidden])")
    assert p.locator("table.jobs tbody tr[data-job-id]").count() == 4
    p.evaluate("window.__same_page = true")
    p.click("button:has-text('Retry all matching')")
    dialog = p.locator("dialog#confirm-dialog")
    dialog.wait_for()
    assert dialog.locator("p").inner_text() == (
        "Retry 4 jobs that match state failed, type ui_bulk_flaky?"
    )
    p.screenshot(path=str(SCREENSHOTS / "jobs-retry-matching.png"))
    dialog.locator("button:has-text('Retry 4')").click()
    p.wait_for_selector("body[data-matching='done']")
    assert p.inner_text("#action-status") == "4 jobs retried; 0 still match."
    # Retried, they run again and complete: the failed list empties by itself.
    p.wait_for_selector("table.jobs tbody td.empty")
    for job_id in ids:
        eventually_state(dashboard, job_id, "completed")
    assert p.evaluate("window.__same_page") is True
    p.goto(f"{dashboard.url}/ui/jobs?type=ui_bulk_flaky")
    assert p.locator("table.jobs tbody .state-completed").count() == 4


def test_a_payload_with_markup_is_text(dashboard: Dashboard, page: Watched) -> None:
    evil = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    job_id = dashboard.submit("echo", {"html": evil, "type": "<i>type</i>"})
    eventually_state(dashboard, job_id, "completed")
    p = page.page
    sign_in(p, dashboard.url)
    p.goto(f"{dashboard.url}/ui/jobs/{job_id}")
    assert evil.replace('"', '\\"') in p.inner_text("details.json:has-text('Payload') pre")
    assert p.evaluate("window.__xss") is None
    assert p.locator("main script, main img").count() == 0


def test_a_read_only_session_sees_and_cannot_change(dashboard: Dashboard, page: Watched) -> None:
    flag = dashboard.home / "read-only-flag"
    job_id = dashboard.submit("ui_flaky", {"flag": str(flag)})
    eventually_state(dashboard, job_id, "failed")
    p = page.page
    sign_in(p, dashboard.url, READ_TOKEN)
    assert p.inner_text("header .badge") == "read-only"
    p.goto(f"{dashboard.url}/ui/jobs/{job_id}")
    assert p.locator("button:has-text('Retry')").count() == 0
    csrf = p.get_attribute("meta[name=csrf-token]", "content")
    status = p.evaluate(
        """async ([id, csrf]) => (await fetch(`/ui/jobs/${id}/retry`, {method: "POST",
            body: new URLSearchParams({csrf}), headers: {Accept: "application/json"}})).status""",
        [job_id, csrf],
    )
    assert status == 403
    assert dashboard.state(job_id) == "failed"
    # Chromium logs the refused request as a console error: that one was asked for.
    page.errors[:] = [e for e in page.errors if "403 (Forbidden)" not in e]


def test_every_page_at_both_widths(dashboard: Dashboard, page: Watched, browser: Any) -> None:
    """The sign-in page, the error page, and the phone layout of the others; no page scrolls
    sideways at 390 pixels (tables scroll inside their own box), and no table is cut off at
    1280 pixels."""
    # A queue with jobs in every column, and a job with a long error, before the pages load.
    job_id = dashboard.submit("ui_always_fails", {"note": "a long error " * 20})
    eventually_state(dashboard, job_id, "failed")
    p = page.page
    p.goto(f"{dashboard.url}/ui/")
    screenshot(p, "signin")
    sign_in(p, dashboard.url)
    p.goto(f"{dashboard.url}/ui/jobs/999999999")
    assert "Not found" in p.inner_text("h1")
    screenshot(p, "not-found")
    page.errors[:] = [e for e in page.errors if "404 (Not Found)" not in e]  # asked for
    for path in ("/ui/", "/ui/jobs", "/ui/schedules", f"/ui/jobs/{job_id}"):
        p.goto(dashboard.url + path)
        tables_fit(p, path)
        p.set_viewport_size({"width": 390, "height": 844})
        wide = p.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"{path} is {wide} pixels wide on a phone: {p.evaluate(WIDEST)}"
        p.set_viewport_size({"width": 1280, "height": 900})
    # Dark mode follows the system.
    p.emulate_media(color_scheme="dark")
    p.goto(f"{dashboard.url}/ui/")
    background = p.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 21)"
    screenshot(p, "overview-dark")


def test_pause_and_resume_a_queue_and_a_schedule(dashboard: Dashboard, page: Watched) -> None:
    flag = dashboard.home / "queue-flag"
    dashboard.api("POST", "/jobs", json={"type": "echo", "queue": "ui_pausable"})
    p = page.page
    sign_in(p, dashboard.url)
    row = p.locator("tr[data-queue='ui_pausable']")
    row.locator("button:has-text('Pause')").click()
    row.locator(".state-paused").wait_for()
    # Paused fleet-wide: a job submitted now waits.
    answer = dashboard.api(
        "POST",
        "/jobs",
        json={"type": "ui_flaky", "queue": "ui_pausable", "payload": {"flag": str(flag)}},
    )
    job_id = answer.json()["id"]
    queues = {q["name"]: q for q in dashboard.api("GET", "/queues").json()["queues"]}
    assert queues["ui_pausable"]["paused"] is True
    assert dashboard.state(job_id) == "pending"
    screenshot(p, "overview-paused-queue")
    row.locator("button:has-text('Resume')").click()
    row.locator(".state-paused").wait_for(state="detached")
    eventually_state(dashboard, job_id, "failed")

    p.click("nav >> text=Schedules")
    p.wait_for_url("**/ui/schedules")
    schedule_row = p.locator("tr[data-schedule='ui_hourly']")
    assert "every 3600s" in schedule_row.inner_text()
    schedule_row.locator("button:has-text('Pause')").click()
    schedule_row.locator(".state-paused").wait_for()
    screenshot(p, "schedules")
    schedule_row.locator("button:has-text('Resume')").click()
    schedule_row.locator(".state-active").wait_for()
    schedule_row.locator("button:has-text('Run now')").click()
    schedule_row.locator("a:has-text('job ')").wait_for()
    audit = dashboard.api("GET", "/audit").json()["records"]
    actions = [(r["action"], r["target"]) for r in audit]
    assert ("schedule_pause", "ui_hourly") in actions
    assert ("queue_pause", "ui_pausable") in actions
    assert all(r["actor"].startswith("token:") for r in audit)


def test_set_and_reset_a_queues_fleet_limits(dashboard: Dashboard, page: Watched) -> None:
    dashboard.api("POST", "/jobs", json={"type": "echo", "queue": "ui_limited"})
    p = page.page
    sign_in(p, dashboard.url)
    row = p.locator("tr[data-queue='ui_limited']")
    row.locator("input[name='global_concurrency']").fill("3")
    row.locator("input[name='rate']").fill("10/s")
    row.locator("button:has-text('Set')").click()
    row.locator("[data-limits]:has-text('at most 3 running (runtime)')").wait_for()
    assert "10/s (runtime)" in row.locator("[data-limits]").inner_text()
    queues = {q["name"]: q for q in dashboard.api("GET", "/queues").json()["queues"]}
    assert queues["ui_limited"]["limits"] == {"global_concurrency": 3, "rate": "10/s"}
    assert queues["ui_limited"]["limit_sources"]["rate"] == "runtime"
    screenshot(p, "overview-queue-limits")
    row.locator("button:has-text('Reset')").click()
    row.locator("[data-limits]:has-text('—')").wait_for()
    audit = dashboard.api("GET", "/audit").json()["records"]
    limits = [r for r in audit if (r["action"], r["target"]) == ("queue_limit", "ui_limited")]
    assert [r["details"].get("reset") for r in limits] == [True, None]
    assert all(r["actor"].startswith("token:") for r in limits)
