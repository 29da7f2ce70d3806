"""The dashboard's history in a real browser against a real `jobd run` of its own (a fresh
database: the counts are this module's): a job that failed once and then completed shows both
attempts with their times; the overview's last hour counts what the database holds."""

from __future__ import annotations

import pytest

from .conftest import Dashboard, Watched, eventually_state, screenshot, sign_in, tables_fit

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_job_that_failed_once_shows_both_attempts(dashboard: Dashboard, page: Watched) -> None:
    job_id = dashboard.submit("ui_fails_once", {"flag": str(dashboard.home / "once-flag")})
    eventually_state(dashboard, job_id, "completed")
    p = page.page
    sign_in(p, dashboard.url)
    p.goto(f"{dashboard.url}/ui/jobs/{job_id}")
    rows = p.locator("table.attempts tbody tr[data-attempt]")
    assert rows.count() == 2
    first, second = rows.nth(0), rows.nth(1)
    assert "failed" in first.locator(".outcome").inner_text()
    assert "first attempt fails" in first.locator(".err").inner_text()
    assert second.locator(".outcome").inner_text() == "completed"
    for row in (first, second):
        times = row.locator("time")
        assert times.count() == 2  # started and ended, in the browser's zone, UTC on hover
        assert all(times.nth(i).get_attribute("title").endswith("UTC") for i in range(2))
    tables_fit(p, "job page")
    screenshot(p, "job-attempts")
    # The JSON API's job is as it was: no history there.
    assert "history" not in dashboard.api("GET", f"/jobs/{job_id}").json()


def _count(dashboard: Dashboard, state: str) -> int:
    """How many jobs the daemon holds in `state` (all ended within this module's minutes)."""
    answer = dashboard.api("GET", "/jobs", params={"state": state, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["jobs"])


def test_the_last_hour_counts_what_the_database_holds(dashboard: Dashboard, page: Watched) -> None:
    done = [dashboard.submit("echo", {"n": n}) for n in range(3)]
    failed = dashboard.submit("ui_always_fails", {})
    for job_id in done:
        eventually_state(dashboard, job_id, "completed")
    eventually_state(dashboard, failed, "failed")
    by_state = {state: _count(dashboard, state) for state in ("completed", "failed")}
    p = page.page
    sign_in(p, dashboard.url)  # the overview's first render reads the daemon's `activity`
    assert int(p.inner_text("#hour-completed")) == by_state["completed"]
    assert int(p.inner_text("#hour-failed")) == by_state["failed"] == 1
    assert "counted since" not in p.inner_text("#hour-h")  # the database's hour, not the shim's
    # Jobs that complete now are added by the live feed, without a reload.
    p.wait_for_selector("#live:not([hidden])")
    more = [dashboard.submit("echo", {"n": n}) for n in range(2)]
    for job_id in more:
        eventually_state(dashboard, job_id, "completed")
    expected = str(by_state["completed"] + 2)
    p.wait_for_function(
        "n => document.querySelector('#hour-completed').textContent === n", arg=expected
    )
    screenshot(p, "overview-activity")
