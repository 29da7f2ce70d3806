"""The dashboard's rules as an HTTP client meets them (no browser): the headers every page
carries, the session cookie's attributes, CSRF and cross-site refusals, read-only tokens in the
JSON API, the event stream's format."""

from __future__ import annotations

import re

import pytest
import requests

from jobd.http.clients import ClientPool
from jobd.http.ui import matching
from jobd.http.ui.render import render

from .conftest import READ_TOKEN, TOKEN, Dashboard, eventually_state

pytestmark = pytest.mark.browser


def _signed_in(dashboard: Dashboard, token: str = TOKEN) -> tuple[requests.Session, str]:
    session = requests.Session()
    page = session.get(f"{dashboard.url}/ui/signin", timeout=10)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf, page.text
    answer = session.post(
        f"{dashboard.url}/ui/signin",
        data={"csrf": csrf.group(1), "token": token, "next": "/ui/jobs"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/ui/jobs"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert "Secure" not in cookie  # http.secure_cookie: false in these tests
    return session, csrf.group(1)


def test_pages_carry_a_strict_policy_and_need_a_session(dashboard: Dashboard) -> None:
    anonymous = requests.get(f"{dashboard.url}/ui/jobs", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303
    assert anonymous.headers["Location"] == "/ui/signin?next=/ui/jobs"
    session, _ = _signed_in(dashboard)
    page = session.get(f"{dashboard.url}/ui/", timeout=10)
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text  # no inline code


def test_a_wrong_token_and_a_forged_cookie_get_nothing(dashboard: Dashboard) -> None:
    session, csrf = _signed_in(dashboard)
    wrong = session.post(
        f"{dashboard.url}/ui/signin", data={"csrf": csrf, "token": "nope"}, timeout=10
    )
    assert wrong.status_code == 401 and "not one this server accepts" in wrong.text
    forged = requests.get(
        f"{dashboard.url}/ui/",
        cookies={"jobd_session": "v1.9999999999.0123456789abcdef.00"},
        allow_redirects=False,
        timeout=10,
    )
    assert forged.status_code == 303


def test_actions_need_the_csrf_token_and_the_same_site(dashboard: Dashboard) -> None:
    job_id = dashboard.submit("sleep", {"seconds": 120})
    session, csrf = _signed_in(dashboard)
    url = f"{dashboard.url}/ui/jobs/{job_id}/cancel"
    no_token = session.post(url, data={"csrf": "0" * 64}, timeout=10)
    assert no_token.status_code == 403 and no_token.json()["code"] == "forbidden"
    other_site = session.post(
        url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert other_site.status_code == 403
    cross = session.post(url, data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert dashboard.state(job_id) in ("pending", "running")
    done = session.post(url, data={"csrf": csrf}, headers={"Accept": "application/json"})
    assert done.status_code == 200 and done.json()["message"] == "1 done"


def test_read_only_tokens_read_and_change_nothing_in_the_api(dashboard: Dashboard) -> None:
    job_id = dashboard.submit("echo", {"n": 1})
    assert dashboard.api("GET", f"/jobs/{job_id}", READ_TOKEN).status_code == 200
    assert dashboard.api("GET", "/jobs?limit=1", READ_TOKEN).status_code == 200
    for method, path in (
        ("POST", "/jobs"),
        ("DELETE", f"/jobs/{job_id}"),
        ("POST", f"/jobs/{job_id}/retry"),
    ):
        answer = dashboard.api(method, path, READ_TOKEN, json={"type": "echo"})
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json()["code"] == "forbidden"


def test_the_event_stream_sends_job_changes(dashboard: Dashboard) -> None:
    session, _ = _signed_in(dashboard)
    with session.get(f"{dashboard.url}/ui/events", stream=True, timeout=30) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(chunk_size=1)
        assert next(lines) == b"retry: 3000"
        job_id = dashboard.submit("echo", {"n": 2})
        seen = []
        for line in lines:
            if line.startswith(b"data: ") and f'"id": {job_id},'.encode() in line:
                seen.append(line)
                if b'"completed"' in line:
                    break
    assert len(seen) >= 2


def test_every_matching_job_counted_confirmed_and_refused(dashboard: Dashboard) -> None:
    """Actions by filter without a script: the count (a dry run) and the confirmation page,
    the step that does it, recorded for the session's token; no CSRF token, a read-only
    session, or no filter at all: refused."""
    ids = [dashboard.submit("ui_always_fails", {"n": n}) for n in range(3)]
    for job_id in ids:
        eventually_state(dashboard, job_id, "failed")
    session, csrf = _signed_in(dashboard)
    url = f"{dashboard.url}/ui/jobs/matching"
    query = {"action": "retry", "state": "failed", "type": "ui_always_fails", "since": "1h"}
    count = session.get(url, params=query, headers={"Accept": "application/json"}, timeout=10)
    assert count.status_code == 200, count.text
    found = count.json()
    assert found["matched"] == 3 and found["verb"] == "Retry"
    fields = dict(found["fields"])  # "created within" became an absolute created_after
    assert fields["type"] == "ui_always_fails" and fields["created_after"].endswith("Z")
    page = session.get(url, params=query, timeout=10)
    assert page.status_code == 200 and "3 jobs match now" in page.text
    assert 'action="/ui/jobs/matching"' in page.text and "Retry 3 jobs" in page.text

    form = {"action": "retry", "state": "failed", "type": "ui_always_fails"}
    forged = session.post(url, data={**form, "csrf": "0" * 64}, timeout=10)
    assert forged.status_code == 403 and forged.json()["code"] == "forbidden"
    everything = session.post(url, data={"action": "retry", "csrf": csrf}, timeout=10)
    assert everything.status_code == 400 and "needs a filter" in everything.text
    by_workflow = {**form, "workflow": str(ids[0]), "csrf": csrf}
    refused = session.post(url, data=by_workflow, headers={"Accept": "application/json"})
    assert refused.status_code == 400 and refused.json()["field"] == "workflow"
    reader, reader_csrf = _signed_in(dashboard, READ_TOKEN)
    read_only = reader.post(url, data={**form, "csrf": reader_csrf}, timeout=10)
    assert read_only.status_code == 403 and read_only.json()["code"] == "forbidden"
    assert reader.get(url, params=query, timeout=10).status_code == 403
    assert "Retry all matching" not in reader.get(f"{dashboard.url}/ui/jobs", timeout=10).text
    assert all(dashboard.state(job_id) == "failed" for job_id in ids)

    done = session.post(url, data={**form, "csrf": csrf}, timeout=30)
    assert done.status_code == 200 and "3 jobs retried" in done.text
    assert 'name="cursor"' not in done.text  # done in one step: nothing to continue
    audit = dashboard.api("GET", "/audit").json()["records"]
    retried = next(r for r in audit if r["action"] == "retry_many")
    assert retried["actor"].startswith("token:") and retried["details"]["changed"] == 3


def test_a_step_stops_in_time_and_the_next_continues(dashboard: Dashboard) -> None:
    """A step makes calls of one batch until its time is up, then hands back the cursor; the
    steps that follow it finish the job, each job acted on once."""
    job = {"type": "echo", "queue": "ui_steps", "delay": 3600}
    ids = [dashboard.api("POST", "/jobs", json=job).json()["id"] for _ in range(5)]
    clients = ClientPool(dashboard.socket)
    params = {"queue": "ui_steps", "state": ["pending"]}
    try:
        first = matching.step(clients, "cancel", params, None, "test", seconds=0, batch=2)
        assert first.changed == 2 and first.next_cursor is not None
        total, cursor = first.changed, first.next_cursor
        while cursor is not None:
            more = matching.step(clients, "cancel", params, cursor, "test", seconds=0, batch=2)
            total, cursor = total + more.changed, more.next_cursor
    finally:
        clients.close()
    assert total == 5 and all(dashboard.state(job_id) == "canceled" for job_id in ids)


def test_a_step_that_stopped_offers_to_continue_without_a_script() -> None:
    """The result page of a step cut short: a form that posts the same filter, the cursor
    and the totals so far."""
    result = {"next_cursor": "abc", "changed": 1000, "busy": 2, "message": "1000 jobs retried"}
    context = {
        "csrf": "c0ffee",
        "access": "write",
        "signed_in": True,
        "via_cookie": True,
        "result": result,
        "action": "retry",
        "fields": [("state", "failed"), ("type", "resize")],
        "verb": "Retry",
        "done": "retried",
        "back": "/ui/jobs?state=failed&type=resize",
    }
    page = render("matching.html", context).decode()
    form = page[page.index('<form method="post" action="/ui/jobs/matching"') :]
    for field in ('name="cursor" value="abc"', 'name="changed" value="1000"', 'value="resize"'):
        assert field in form
    assert "Continue" in form and 'name="csrf" value="c0ffee"' in form


def test_a_job_of_a_workflow_shows_its_parents_children_and_workflow(dashboard: Dashboard) -> None:
    batch = dashboard.api(
        "POST",
        "/jobs:batch",
        json={"jobs": [
            {"name": "root", "type": "echo", "run_at": "2099-01-01T00:00:00Z"},
            {"name": "leaf", "type": "echo", "after": ["root"]},
        ]},
    )  # fmt: skip
    assert batch.status_code == 201, batch.text
    root, leaf = batch.json()["names"]["root"], batch.json()["names"]["leaf"]
    session, _ = _signed_in(dashboard)
    page = session.get(f"{dashboard.url}/ui/jobs/{leaf}", timeout=10)
    assert page.status_code == 200
    assert f'href="/ui/jobs/{root}">{root}</a> (waited for)' in page.text
    assert "state-waiting" in page.text
    listed = session.get(f"{dashboard.url}/ui/jobs", params={"workflow": root}, timeout=10)
    assert f'data-job-id="{leaf}"' in listed.text and f'data-job-id="{root}"' in listed.text
    dashboard.api("DELETE", f"/jobs/{root}")
