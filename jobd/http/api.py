"""The endpoints: each turns one HTTP request into one control-protocol call and its answer
into an HTTP response.  No job logic lives here: the daemon checks every field and names the bad
one; this module only reads HTTP (paths, query strings, headers, a JSON body) and writes it back.

    POST   /jobs                  submit          201 + Location, or 200 for a repeated key
    GET    /jobs                  list            {"jobs": [...], "next_cursor": ...}
    GET    /jobs/{id}             get
    DELETE /jobs/{id}             cancel          409 when it has finished
    POST   /jobs/{id}/retry       retry
    GET    /jobs/{id}/wait        wait            long poll: ?timeout= seconds
    GET    /healthz               this process is alive (no daemon call, no token)
    GET    /readyz                health          503 unless the daemon is ready (no token)
    GET    /metrics               metrics         Prometheus text
    GET    /nodes                 nodes           the fleet's nodes, live or not yet pruned
    GET    /schedules             schedules       the database's and this node's schedules
    POST   /schedules/{name}/pause    schedule_pause      fleet-wide, persisted
    POST   /schedules/{name}/resume   schedule_resume
    POST   /schedules/{name}/trigger  schedule_trigger    201 + Location: one job now
    GET    /openapi.json          the OpenAPI document (no token)
    …                             the queues' endpoints: jobd/http/queues_api.py

Pure apart from the calls on the ClientPool, so tests/unit/test_http_api.py drives it with a
fake pool and no sockets.  docs/openapi.yaml describes the same endpoints for clients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Protocol
from urllib.parse import unquote

from jobd.errors import InvalidParams, ParseError
from jobd.http.openapi import document_json
from jobd.http.problems import Problem, invalid
from jobd.http.queues_api import QUEUE_ROUTES, QueueEndpoints, actor
from jobd.jobspec import SUBMIT_FIELDS, parse_job_spec, unknown_fields
from jobd.limits import MAX_SUBMIT_MANY
from jobd.protocol import decode, encode

JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_JOB_ID = 2**63 - 1  # ids are bigints: a larger one names no job
DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0  # a longer long-poll is cut to this; the answer says timed_out, clients loop
WAIT_MARGIN = 10.0  # how much longer than its timeout a wait's answer may take
READY_TIMEOUT = 5.0  # a readiness probe that takes longer than this is a "no"
LIST_FILTERS = ("state", "type", "queue", "created_after", "created_before", "schedule", "workflow")
LIST_PARAMS = (*LIST_FILTERS, "limit", "cursor")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?\d{1,19}")


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: Message  # case-insensitive .get(), as http.server gives them
    body: bytes
    request_id: str
    path_params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values (the dashboard's)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    # protocol.encode: compact UTF-8 JSON, NaN refused -- the daemon's own encoding.
    return Response(status, encode(data), JSON, dict(headers or {}))


class Clients(Protocol):
    """What the endpoints need of jobd.http.clients.ClientPool."""

    def reader(self) -> Any: ...

    def writer(self) -> Any: ...


# --- the routes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    template: str  # "/jobs/{id}": also what the access log shows
    handlers: Mapping[str, str]  # HTTP method -> Api method name
    open: bool = False  # served without a token even when tokens are configured
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def allow(self) -> str:
        methods = list(self.handlers)
        if "GET" in methods:
            methods.append("HEAD")
        return ", ".join(methods)


# Which endpoints need no token (docs/adr/0013-http-shim.md): /healthz and /readyz, which
# probes must reach and which say nothing about jobs, and /openapi.json, which is public
# documentation.  /metrics names job types and queues and counts their traffic: it needs one.
ROUTES: tuple[Route, ...] = (
    Route("/jobs", {"GET": "list_jobs", "POST": "submit"}),
    Route("/jobs:batch", {"POST": "submit_batch"}),
    Route("/jobs/{id}", {"GET": "get_job", "DELETE": "cancel"}),
    Route("/jobs/{id}/retry", {"POST": "retry"}),
    Route("/jobs/{id}/wait", {"GET": "wait"}),
    Route("/healthz", {"GET": "healthz"}, open=True),
    Route("/readyz", {"GET": "readyz"}, open=True),
    Route("/metrics", {"GET": "metrics"}),
    Route("/nodes", {"GET": "nodes"}),
    Route("/schedules", {"GET": "schedules"}),
    Route("/schedules/{name}/pause", {"POST": "pause_schedule"}),
    Route("/schedules/{name}/resume", {"POST": "resume_schedule"}),
    Route("/schedules/{name}/trigger", {"POST": "trigger_schedule"}),
    Route("/openapi.json", {"GET": "openapi"}, open=True),
    *(Route(template, handlers) for template, handlers in QUEUE_ROUTES),  # queues_api.py
)


def match(path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found:
            return route, {name: unquote(value) for name, value in found.groupdict().items()}
    return None


# --- the endpoints --------------------------------------------------------------------------


class Api(QueueEndpoints):
    def __init__(self, clients: Clients):
        self.clients = clients

    def handler(self, route: Route, method: str) -> Callable[[Request], Response]:
        """The endpoint for `method` on `route` (HEAD is GET without the body); 405 if none."""
        name = route.handlers.get("GET" if method == "HEAD" else method)
        if name is None:
            raise Problem(
                "method_not_allowed",
                f"{method} is not allowed on {route.template} (allowed: {route.allow})",
                headers={"Allow": route.allow},
            )
        handler: Callable[[Request], Response] = getattr(self, name)
        return handler

    def submit(self, request: Request) -> Response:
        params = submit_params(request)
        with self.clients.writer() as client:
            result = client.call("submit", params)
        job = result["job"]
        if result["created"]:
            return json_response(201, job, {"Location": f"/jobs/{job['id']}"})
        return json_response(200, job)  # the idempotency key was taken: the job holding it

    def submit_batch(self, request: Request) -> Response:
        """A batch in one transaction (a workflow: jobs named, and `after` each other): 201
        with the jobs and their names' ids when one was created, 200 when every job's key
        was taken already."""
        params = batch_params(request)
        with self.clients.writer() as client:
            result = client.call("submit_many", params)
        jobs = [item["job"] for item in result["results"]]
        created = any(item["created"] for item in result["results"])
        return json_response(201 if created else 200, {"jobs": jobs, "names": result["names"]})

    def get_job(self, request: Request) -> Response:
        with self.clients.reader() as client:
            return json_response(200, client.call("get", {"id": job_id(request)})["job"])

    def cancel(self, request: Request) -> Response:
        with self.clients.writer() as client:
            return json_response(200, client.call("cancel", {"id": job_id(request)})["job"])

    def retry(self, request: Request) -> Response:
        with self.clients.writer() as client:
            return json_response(200, client.call("retry", {"id": job_id(request)})["job"])

    def wait(self, request: Request) -> Response:
        known_params(request, ("timeout",))
        timeout = number_param(request, "timeout")
        timeout = DEFAULT_WAIT if timeout is None else min(timeout, MAX_WAIT)
        params = {"id": job_id(request), "timeout": timeout}
        with self.clients.reader() as client:
            reply_within = max(timeout, 0.0) + max(client.timeout or 0.0, WAIT_MARGIN)
            result = client.call("wait", params, timeout=reply_within)
        return json_response(200, {"job": result["job"], "timed_out": result["timed_out"]})

    def list_jobs(self, request: Request) -> Response:
        params = list_params(request)
        with self.clients.reader() as client:
            result = client.call("list", params)
        return json_response(200, {"jobs": result["jobs"], "next_cursor": result["next_cursor"]})

    def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    def readyz(self, request: Request) -> Response:
        with self.clients.reader() as client:
            health = client.call("health", timeout=READY_TIMEOUT)
        # Only the coarse facts: this endpoint needs no token, and the daemon's problem
        # messages (a database error, say) are for its log and jobctl, not for strangers.
        body = {
            "status": health["status"],
            "store": health["store"],
            "draining": health["draining"],
            "workers": health["workers"],
        }
        return json_response(200 if health["status"] == "ok" else 503, body)

    def metrics(self, request: Request) -> Response:
        with self.clients.reader() as client:
            text = client.metrics()
        return Response(200, text.encode(), PROMETHEUS_TEXT)

    def nodes(self, request: Request) -> Response:
        known_params(request, ())
        with self.clients.reader() as client:
            return json_response(200, {"nodes": client.call("nodes")["nodes"]})

    def schedules(self, request: Request) -> Response:
        known_params(request, ())
        with self.clients.reader() as client:
            return json_response(200, {"schedules": client.call("schedules")["schedules"]})

    def pause_schedule(self, request: Request) -> Response:
        return self._schedule_call(request, "schedule_pause")

    def resume_schedule(self, request: Request) -> Response:
        return self._schedule_call(request, "schedule_resume")

    def _schedule_call(self, request: Request, method: str) -> Response:
        known_params(request, ())
        with self.clients.writer() as client:
            params = {"name": request.path_params["name"], "actor": actor(request)}
            result = client.call(method, params)
        return json_response(200, result["schedule"])

    def trigger_schedule(self, request: Request) -> Response:
        known_params(request, ())
        with self.clients.writer() as client:
            params = {"name": request.path_params["name"], "actor": actor(request)}
            job = client.call("schedule_trigger", params)["job"]
        return json_response(201, job, {"Location": f"/jobs/{job['id']}"})

    def openapi(self, request: Request) -> Response:
        return Response(200, document_json(), JSON)


# --- reading requests -----------------------------------------------------------------------


def job_id(request: Request) -> int:
    """The {id} of the path.  Anything but a positive bigint names no job: 404 without asking
    the daemon."""
    text = request.path_params["id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise invalid("id", f"no job {text!r}: job ids are positive integers", "not_found")
    value = int(text)
    if not 1 <= value <= MAX_JOB_ID:
        raise invalid("id", f"no job {value}", "not_found")
    return value


def batch_params(request: Request) -> dict[str, Any]:
    """The submit_many parameters from a POST /jobs:batch: `{"jobs": [job, …]}`, each job as
    POST /jobs takes it (no Idempotency-Key header: each job carries its own key)."""
    body = json_body(request)
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"jobs"} or not isinstance(jobs, list):
        raise invalid("body", 'must be a JSON object {"jobs": [job, …]}')
    if not 0 < len(jobs) <= MAX_SUBMIT_MANY:
        raise invalid("jobs", f"must hold 1 to {MAX_SUBMIT_MANY} jobs, got {len(jobs)}")
    return {"jobs": [_job_params(job, request, f"jobs[{i}].") for i, job in enumerate(jobs)]}


def submit_params(request: Request) -> dict[str, Any]:
    """The submit parameters from a POST /jobs: the JSON body's fields, the Idempotency-Key
    header as `idempotency_key`, and the request id as `correlation_id` unless the body has
    one; checked by jobd.jobspec, as the daemon will check them."""
    body = json_body(request)
    key = request.header("Idempotency-Key")
    if key is not None and isinstance(body, dict):
        if body.get("idempotency_key") not in (None, key):
            raise invalid("Idempotency-Key", "differs from the body's idempotency_key")
        body = {**body, "idempotency_key": key}
    return _job_params(body, request, "")


def _job_params(body: Any, request: Request, where: str) -> dict[str, Any]:
    """One job's submit parameters, its fields named with the prefix `where` in errors."""
    if not isinstance(body, dict):
        raise invalid(
            where + "body" if not where else where.rstrip("."),
            "must be a JSON object with the job's fields (type, payload, …)",
        )
    unknown = unknown_fields(body)
    if unknown:
        raise invalid(
            where + unknown[0], f"unknown field (fields: {', '.join(sorted(SUBMIT_FIELDS))})"
        )
    params = dict(body)
    if params.get("correlation_id") is None:
        params["correlation_id"] = request.request_id
    try:
        return parse_job_spec(params).to_params()
    except InvalidParams as exc:
        if where:
            exc = InvalidParams.of_field(where + (exc.field or ""), exc.problem or str(exc))
        raise Problem.from_error(exc) from None


def json_body(request: Request) -> Any:
    """The body as JSON: 415 unless it is application/json (UTF-8), 400 if it is not JSON."""
    content_type = request.header("Content-Type")
    if content_type is None:
        raise invalid("Content-Type", "required: application/json", "unsupported_media_type")
    parsed = Message()
    parsed["Content-Type"] = content_type
    media_type = parsed.get_content_type()
    charset = parsed.get_param("charset")
    utf8 = not isinstance(charset, str) or charset.lower() in ("utf-8", "utf8")
    if media_type != JSON or not utf8:
        raise invalid(
            "Content-Type",
            f"{content_type!r} is not supported: send application/json (UTF-8)",
            "unsupported_media_type",
        )
    if not request.body.strip():
        raise invalid("body", "required: a JSON object with the job's fields (type, payload, …)")
    try:
        return decode(request.body)
    except ParseError as exc:
        raise invalid("body", exc.message.removeprefix("request is "), "parse_error") from None


def known_params(request: Request, names: tuple[str, ...]) -> None:
    """A query parameter this endpoint does not take is an error, not silently ignored: a
    typo (`?stat=failed`) would otherwise list every job."""
    unknown = sorted(set(request.query) - set(names))
    if unknown:
        raise invalid(
            unknown[0], f"unknown query parameter (parameters: {', '.join(names) or 'none'})"
        )


def one_param(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(name, "give it once")
    return values[0]


def number_param(request: Request, name: str) -> float | None:
    text = one_param(request, name)
    if text is None:
        return None
    if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
        raise invalid(name, "must be a number")
    return float(text)


def int_param(request: Request, name: str) -> int | None:
    text = one_param(request, name)
    if text is None:
        return None
    if not _INTEGER.fullmatch(text):
        raise invalid(name, "must be an integer")
    return int(text)


def list_params(request: Request) -> dict[str, Any]:
    """The list filters from the query string.  `state` may be repeated or comma-separated
    (`?state=failed&state=canceled`, `?state=failed,canceled`)."""
    known_params(request, LIST_PARAMS)
    states = [s for value in request.query.get("state", []) for s in value.split(",")]
    params: dict[str, Any] = {"state": states or None, "limit": int_param(request, "limit")}
    for name in ("type", "queue", "created_after", "created_before", "schedule", "cursor"):
        params[name] = one_param(request, name)
    workflow = int_param(request, "workflow")
    if workflow is not None:
        params["workflow"] = workflow
    return params
