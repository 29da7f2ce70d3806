"""The dashboard's rules as an HTTP client meets them (no browser): the headers every page
carries, the session cookie's attributes, CSRF and cross-site refusals, read-only tokens in the
JSON API, the event stream's format."""

from __future__ import annotations

import re

import pytest
import requests

from .conftest import READ_TOKEN, TOKEN, Dashboard

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
