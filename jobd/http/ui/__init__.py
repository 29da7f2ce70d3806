"""The dashboard: server-rendered pages at /ui/ of the HTTP shim (docs/dashboard.md).

    GET  /ui/                    overview: jobs by state and queue, the last hour, nodes
    GET  /ui/jobs                the list: every filter of the API, keyset paging
    POST /ui/jobs/actions        retry or cancel the jobs ticked in the list
    GET  /ui/jobs/matching       retry, cancel or purge every job the filters match: the count
    POST /ui/jobs/matching       (a dry run) to confirm, then steps of batches (matching.py)
    GET  /ui/jobs/{id}           one job, every member; cancel and retry
    POST /ui/jobs/{id}/{action}  cancel or retry it
    POST /ui/queues/{name}/{action}      pause or resume a queue, set or reset its fleet-wide
                                         limits (from the overview)
    GET  /ui/schedules                   the schedules: next and last tick, last job, paused
    POST /ui/schedules/{name}/{action}   pause, resume or trigger one
    GET  /ui/events              server-sent events: the job changes, for live pages
    GET  /ui/signin, POST        sign in with a token (a session cookie); POST /ui/signout
    GET  /ui/static/{name}       the script and the style sheet

The pieces: session.py (sign-in, CSRF), pages.py (what each page reads), matching.py (actions
by filter), render.py (Jinja2, static files), feed.py (the one subscription to the daemon,
fanned out), sse.py (the stream).
Every page works without JavaScript; static/app.js adds local times, live updates and actions
without a reload.  A page asked for with `X-Jobd-Fragment: main` is its `main` block alone:
what the script swaps in when an event says the page has changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import Message
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from jobd.errors import JobdError
from jobd.http.access import Access, Tokens
from jobd.http.api import Clients, Response, json_response
from jobd.http.problems import Problem
from jobd.http.ui import matching
from jobd.http.ui.feed import Feed
from jobd.http.ui.pages import Pages
from jobd.http.ui.render import render, static_files
from jobd.http.ui.session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Sessions,
    actor_of,
    cookies_of,
    same_origin,
)
from jobd.http.ui.sse import EventStream

__all__ = ["Dashboard", "EventStream", "is_ui_path"]

HTML = "text/html; charset=utf-8"
#: No script but our own file, no inline script or style, no frames around us, forms and
#: fetches to ourselves only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
MAX_FORM_FIELDS = 1100  # a bulk action's ids (the list's page is at most 1,000) and a few more
_JOB = re.compile(r"/ui/jobs/(\d{1,19})")
_JOB_ACTION = re.compile(r"/ui/jobs/(\d{1,19})/(retry|cancel)")
_SEED = re.compile(r"[0-9a-f]{32}")
_QUEUE_ACTION = re.compile(r"/ui/queues/([^/]+)/(pause|resume|limit)")
_SCHEDULE_ACTION = re.compile(r"/ui/schedules/([^/]+)/(pause|resume|trigger)")


def is_ui_path(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


class UiHandler(Protocol):
    """What the dashboard reads of the shim's request handler."""

    command: str
    headers: Message
    verdict: Access
    client_address: Any


class Dashboard:
    def __init__(self, settings: Any, clients: Clients, tokens: Tokens):
        self.sessions = Sessions(tokens, settings.secure_cookie)
        self.feed = Feed(settings.socket)
        self.pages = Pages(clients, self.feed)
        self.clients = clients
        # A step of an action by filter ends well inside the request's deadline.
        self.step_seconds = min(matching.STEP_SECONDS, settings.request_timeout / 3)

    def close(self) -> None:
        self.feed.close()

    def answer(
        self,
        handler: UiHandler,
        path: str,
        query: dict[str, list[str]],
        read_body: Callable[[], bytes],
    ) -> Response | EventStream:
        method = "GET" if handler.command == "HEAD" else handler.command
        if path in ("/ui", "/ui/index.html"):
            return _redirect("/ui/")
        if path.startswith("/ui/static/"):
            return _static(path.removeprefix("/ui/static/"), method)
        view = _View(self, handler, query, read_body)
        response = view.route(method, path)
        if isinstance(response, Response):
            response.headers.update(SECURITY_HEADERS)
            response.headers.setdefault("Cache-Control", "no-store")
            if view.new_seed is not None:
                response.cookies.append(self.sessions.csrf_cookie(view.new_seed))
        return response


class _View:
    """One dashboard request: who asks, and the page or action they get."""

    def __init__(
        self,
        dashboard: Dashboard,
        handler: UiHandler,
        query: dict[str, list[str]],
        read_body: Callable[[], bytes],
    ):
        self.d = dashboard
        self.handler = handler
        self.query = query
        self.read_body = read_body
        self.cookies = cookies_of(handler.headers)
        seed = self.cookies.get(CSRF_COOKIE, "")
        self.new_seed = None if _SEED.fullmatch(seed) else dashboard.sessions.new_csrf_seed()
        self.seed = self.new_seed or seed
        self.access = self._access()
        self.fragment = handler.headers.get("X-Jobd-Fragment") == "main"

    def _access(self) -> Access:
        """Who asks: a bearer token (or none configured), else the session cookie; the token
        is kept to name the actor of a change in the audit trail."""
        self.token: bytes | None = None
        if self.handler.verdict.granted:
            header = self.handler.headers.get("Authorization") or ""
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                self.token = credentials.strip().encode("latin-1", "replace")
            return self.handler.verdict
        access, self.token = self.d.sessions.holder(self.cookies.get(SESSION_COOKIE))
        return access

    # --- routing ----------------------------------------------------------------------------

    def route(self, method: str, path: str) -> Response | EventStream:
        if path == "/ui/signin":
            return self._allow(method, "GET", "POST") or (
                self.sign_in() if method == "POST" else self.sign_in_page()
            )
        if path == "/ui/signout":
            return self._allow(method, "POST") or self.sign_out()
        if not self.access.granted:
            return self._unauthorized(method, path)
        if path == "/ui/":
            return self._allow(method, "GET") or self.page("overview.html", self.d.pages.overview)
        if path == "/ui/jobs":
            return self._allow(method, "GET") or self.page(
                "jobs.html", lambda: self.d.pages.jobs(self.query)
            )
        if path == "/ui/jobs/actions":
            return self._allow(method, "POST") or self.bulk_action()
        if path == "/ui/jobs/matching":
            return self._allow(method, "GET", "POST") or (
                self.matching_step() if method == "POST" else self.matching_page()
            )
        if path == "/ui/events":
            return self._allow(method, "GET") or self.events()
        if found := _JOB.fullmatch(path):
            job_id = int(found.group(1))
            return self._allow(method, "GET") or self.page(
                "job.html", lambda: self.d.pages.job(job_id), job_id=job_id
            )
        if found := _JOB_ACTION.fullmatch(path):
            return self._allow(method, "POST") or self.job_action(
                int(found.group(1)), found.group(2)
            )
        if path == "/ui/schedules":
            return self._allow(method, "GET") or self.page("schedules.html", self.d.pages.schedules)
        if found := _QUEUE_ACTION.fullmatch(path):
            name, action = unquote(found.group(1)), found.group(2)
            return self._allow(method, "POST") or self.named_action("queue", name, action)
        if found := _SCHEDULE_ACTION.fullmatch(path):
            name, action = unquote(found.group(1)), found.group(2)
            return self._allow(method, "POST") or self.named_action("schedule", name, action)
        return self.error_page(404, "Not found", f"There is no page at {path}.")

    def _allow(self, method: str, *allowed: str) -> Response | None:
        if method in allowed:
            return None
        response = self.error_page(405, "Method not allowed", f"{method} is not allowed here.")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    def _unauthorized(self, method: str, path: str) -> Response:
        if method == "GET" and not self.fragment and path != "/ui/events":
            return _redirect(f"/ui/signin?next={quote(path)}")
        raise Problem("unauthorized", "sign in first", headers={"WWW-Authenticate": "Bearer"})

    # --- pages --------------------------------------------------------------------------------

    def context(self, **extra: Any) -> dict[str, Any]:
        return {
            "csrf": self.d.sessions.csrf_token(self.seed),
            "access": self.access.value,
            "can_change": self.access is Access.WRITE,
            "signed_in": self.access.granted and not self.d.sessions.open,
            "via_cookie": SESSION_COOKIE in self.cookies,
            "notice": (self.query.get("notice") or [""])[0][:300],
            **extra,
        }

    def page(self, template: str, read: Callable[[], dict[str, Any]], **extra: Any) -> Response:
        try:
            data = read()
        except JobdError as exc:
            if exc.code == "not_found":
                return self.error_page(404, "Not found", exc.message)
            status = Problem.from_error(exc).status
            return self.error_page(status, "The daemon did not answer", exc.message)
        body = render(template, self.context(**data, **extra), fragment=self.fragment)
        return Response(200, body, HTML)

    def error_page(self, status: int, title: str, detail: str) -> Response:
        context = self.context(title=title, detail=detail, status=status)
        return Response(status, render("error.html", context, self.fragment), HTML)

    def sign_in_page(self, status: int = 200, error: str | None = None) -> Response:
        if self.d.sessions.open:
            return _redirect("/ui/")
        target = _safe_next((self.query.get("next") or ["/ui/"])[0])
        context = self.context(next=target, error=error)
        return Response(status, render("signin.html", context), HTML)

    def events(self) -> Response | EventStream:
        peer = str(self.handler.client_address[0])
        stream = self.d.feed.open_stream(peer)
        if stream is None:
            detail = "too many event streams; try again later"
            raise Problem("unavailable", detail, headers={"Retry-After": "3"})
        return EventStream(self.d.feed, stream, SECURITY_HEADERS)

    # --- actions ------------------------------------------------------------------------------

    def form(self) -> dict[str, list[str]]:
        """The POSTed form, its origin and CSRF token checked first."""
        if not same_origin(self.handler.headers):
            raise Problem("forbidden", "the request comes from another site")
        content_type = (self.handler.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self.read_body()
        if content_type != "application/x-www-form-urlencoded":
            raise Problem("unsupported_media_type", "send a form (x-www-form-urlencoded)")
        try:
            text = body.decode("utf-8")
            form = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise Problem("invalid_request", "the form cannot be read") from None
        given = (form.get("csrf") or [""])[0]
        if not self.d.sessions.csrf_ok(self.cookies.get(CSRF_COOKIE), given):
            raise Problem("forbidden", "the form is out of date: reload the page and try again")
        return form

    def sign_in(self) -> Response:
        if self.d.sessions.open:
            return _redirect("/ui/")
        form = self.form()
        _, cookie = self.d.sessions.sign_in((form.get("token") or [""])[0])
        if cookie is None:
            return self.sign_in_page(401, "That token is not one this server accepts.")
        response = _redirect(_safe_next((form.get("next") or ["/ui/"])[0]))
        response.cookies.append(self.d.sessions.session_cookie(cookie))
        return response

    def sign_out(self) -> Response:
        self.form()
        response = _redirect("/ui/signin")
        response.cookies.append(self.d.sessions.expired_session_cookie())
        return response

    def job_action(self, job_id: int, action: str) -> Response:
        form = self.form()
        self._may_change()
        outcome = self._act(action, job_id)
        target = _safe_next((form.get("next") or [f"/ui/jobs/{job_id}"])[0])
        return self._done([outcome], target)

    def bulk_action(self) -> Response:
        form = self.form()
        self._may_change()
        action = (form.get("action") or [""])[0]
        if action not in ("retry", "cancel"):
            raise Problem("invalid_params", "action: must be retry or cancel", field="action")
        ids = [int(i) for i in form.get("id", []) if i.isascii() and i.isdigit() and len(i) < 20]
        if not ids:
            raise Problem("invalid_params", "id: tick at least one job", field="id")
        outcomes = [self._act(action, job_id) for job_id in ids]
        return self._done(outcomes, _safe_next((form.get("next") or ["/ui/jobs"])[0]))

    def matching_page(self) -> Response:
        """How many jobs an action by filter would change (the daemon's dry run), and the form
        that confirms it; JSON for the page's script, which asks in a dialog instead."""
        self._may_change()
        action = matching.action_of(self.query)
        params = matching.bulk_filter(self.query)
        fields = matching.as_pairs(params)
        actor = actor_of(self.token)

        def read() -> dict[str, Any]:
            return {"matched": matching.count(self.d.clients, action, params, actor)}

        if self._wants_json():
            matched = read()["matched"]
            return json_response(
                200,
                {
                    "action": action,
                    "matched": matched,
                    "fields": fields,
                    "verb": matching.VERBS[action][0],
                    "question": matching.question(action, matched, fields),
                },
            )
        return self.page("matching.html", read, **self._matching_context(action, fields))

    def matching_step(self) -> Response:
        """One step of an action by filter: batches until done or the step's time is up, then
        the totals so far, how many jobs still match, and the continuation."""
        form = self.form()
        self._may_change()
        action = matching.action_of(form)
        params = matching.bulk_filter(form)
        cursor = (form.get("cursor") or [""])[0] or None
        actor = actor_of(self.token)
        try:
            done = matching.step(self.d.clients, action, params, cursor, actor, self.d.step_seconds)
            remaining = matching.count(self.d.clients, action, params, actor)
        except JobdError as exc:
            if self._wants_json() or exc.code in ("unavailable", "internal_error"):
                raise
            return self.error_page(Problem.from_error(exc).status, "Refused", exc.message)
        changed = matching.form_int(form, "changed") + done.changed
        busy = matching.form_int(form, "busy") + done.busy
        result = {
            "action": action,
            "changed": changed,
            "busy": busy,
            "batches": done.batches,
            "next_cursor": done.next_cursor,
            "remaining": remaining,
            "message": matching.message(action, changed, busy, remaining),
        }
        if self._wants_json():
            return json_response(200, result)
        fields = matching.as_pairs(params)
        context = self.context(result=result, **self._matching_context(action, fields))
        return Response(200, render("matching.html", context), HTML)

    def _matching_context(self, action: str, fields: list[tuple[str, str]]) -> dict[str, Any]:
        back = "/ui/jobs" + (f"?{urlencode(fields)}" if fields else "")
        verb, done = matching.VERBS[action]
        return {"action": action, "fields": fields, "verb": verb, "done": done, "back": back}

    def _wants_json(self) -> bool:
        return "application/json" in (self.handler.headers.get("Accept") or "")

    def named_action(self, kind: str, name: str, action: str) -> Response:
        """Pause or resume a queue; pause, resume or trigger a schedule: recorded in the audit
        trail for the token that signed this browser in."""
        form = self.form()
        self._may_change()
        params: dict[str, Any] = {"name": name, "actor": actor_of(self.token)}
        reason = (form.get("reason") or [""])[0].strip()
        if reason:
            params["reason"] = reason[:1000]
        if action == "limit":
            params.update(_limit_params(form))
        try:
            with self.d.clients.writer() as client:
                client.call(f"{kind}_{action}", params)
            outcome: dict[str, Any] = {"name": name, "ok": True}
        except JobdError as exc:
            if exc.code in ("unavailable", "internal_error"):
                raise
            outcome = {"name": name, "ok": False, "error": exc.message}
        default = "/ui/" if kind == "queue" else "/ui/schedules"
        return self._done([outcome], _safe_next((form.get("next") or [default])[0]))

    def _may_change(self) -> None:
        if self.access is not Access.WRITE:
            raise Problem("forbidden", "this session is read-only: it can change nothing")

    def _act(self, action: str, job_id: int) -> dict[str, Any]:
        try:
            with self.d.clients.writer() as client:
                job = client.call(action, {"id": job_id})["job"]
            return {"id": job_id, "ok": True, "state": job["state"]}
        except JobdError as exc:
            if exc.code in ("unavailable", "internal_error"):
                raise
            return {"id": job_id, "ok": False, "error": exc.message}

    def _done(self, outcomes: list[dict[str, Any]], target: str) -> Response:
        done = sum(o["ok"] for o in outcomes)
        refused = [o for o in outcomes if not o["ok"]]
        message = f"{done} done"
        if refused:
            message += f", {len(refused)} refused: {refused[0]['error']}"
        if self._wants_json():
            return json_response(200, {"message": message, "results": outcomes})
        separator = "&" if "?" in target else "?"
        return _redirect(f"{target}{separator}notice={quote(message)}")


def _limit_params(form: dict[str, list[str]]) -> dict[str, Any]:
    """A limit form's fields as `queue_limit`'s members: those filled in; a concurrency that
    is not a number goes as text, for the daemon to refuse naming it."""
    out: dict[str, Any] = {}
    concurrency = (form.get("global_concurrency") or [""])[0].strip()
    if concurrency:
        out["global_concurrency"] = (
            int(concurrency) if concurrency.lstrip("-").isdigit() else concurrency
        )
    rate = (form.get("rate") or [""])[0].strip()
    if rate:
        out["rate"] = rate[:50]
    if form.get("reset"):
        out["reset"] = True
    return out


def _redirect(location: str) -> Response:
    return Response(303, b"", HTML, {"Location": location})


def _safe_next(target: str) -> str:
    """Only a path of the dashboard: never another site (`//evil`, `https://…`)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in target:
        return "/ui/"
    return target


def _static(name: str, method: str) -> Response:
    found = static_files().get(name)
    if found is None or method != "GET":
        raise Problem("not_found", f"no such file: {name}")
    body, media = found
    headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(200, body, media, headers)
