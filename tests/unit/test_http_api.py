"""The HTTP shim's endpoints without sockets: requests in, the control calls they make and the
responses they give, against a stand-in for the client pool.  Also the problem documents and
their statuses, which come from the one error table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from typing import Any

import pytest

from jobd.errors import (
    CODES,
    ERROR_CLASSES,
    Conflict,
    DaemonUnreachable,
    InvalidParams,
    JobdError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnknownSchedule,
    UnknownType,
)
from jobd.http.api import (
    MAX_WAIT,
    PROMETHEUS_TEXT,
    ROUTES,
    SUBMIT_FIELDS,
    Api,
    Request,
    match,
)
from jobd.http.problems import HTTP_ONLY, UNREACHABLE_DETAIL, Problem, status_of

JOB = {"id": 7, "type": "echo", "state": "pending"}


class FakeClient:
    timeout = 30.0

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any], Any]] = []

    def call(self, method: str, params: Any = None, *, timeout: Any = -1) -> Any:
        self.calls.append((method, dict(params or {}), timeout))
        answer = self.answers[method]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def metrics(self) -> str:
        self.calls.append(("metrics", {}, -1))
        return self.answers["metrics"]


class FakePool:
    def __init__(self, **answers: Any):
        self.client = FakeClient(answers)
        self.used: list[str] = []

    @contextmanager
    def reader(self) -> Iterator[FakeClient]:
        self.used.append("reader")
        yield self.client

    @contextmanager
    def writer(self) -> Iterator[FakeClient]:
        self.used.append("writer")
        yield self.client

    @property
    def calls(self) -> list[tuple[str, dict[str, Any], Any]]:
        return self.client.calls


def request(
    method: str,
    target: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
    request_id: str = "rid-1",
) -> Request:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(target)
    found = match(parts.path)
    assert found is not None, target
    message = Message()
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        message["Content-Type"] = "application/json"
    for name, value in (headers or {}).items():
        del message[name]
        message[name] = value
    return Request(
        method=method,
        path=parts.path,
        query=parse_qs(parts.query, keep_blank_values=True),
        headers=message,
        body=body or b"",
        request_id=request_id,
        path_params=found[1],
    )


def call(api: Api, req: Request) -> Any:
    found = match(req.path)
    assert found is not None
    return api.handler(found[0], req.method)(req)


def problem_of(api: Api, req: Request) -> Problem:
    with pytest.raises(Problem) as caught:
        call(api, req)
    return caught.value


# --- routes -----------------------------------------------------------------------------------


def test_routes_match_templates_and_unquote_the_id() -> None:
    assert match("/jobs")[0].template == "/jobs"
    route, params = match("/jobs/12%33")
    assert (route.template, params) == ("/jobs/{id}", {"id": "123"})
    assert match("/jobs/5/wait")[0].template == "/jobs/{id}/wait"
    assert match("/jobs/") is None
    assert match("/nothing") is None


def test_only_probes_and_the_document_are_open() -> None:
    assert {r.template for r in ROUTES if r.open} == {"/healthz", "/readyz", "/openapi.json"}


def test_a_method_a_route_lacks_is_405_with_allow() -> None:
    problem = problem_of(Api(FakePool()), request("PUT", "/jobs/1"))
    assert problem.status == 405
    assert problem.code == "method_not_allowed"
    assert problem.headers["Allow"] == "GET, DELETE, HEAD"


def test_head_is_get() -> None:
    pool = FakePool(get={"job": JOB})
    response = call(Api(pool), request("HEAD", "/jobs/7"))
    assert response.status == 200
    assert pool.calls == [("get", {"id": 7}, -1)]


# --- POST /jobs -------------------------------------------------------------------------------


def test_submit_creates_with_location_and_the_request_id_as_correlation_id() -> None:
    pool = FakePool(submit={"job": JOB, "created": True})
    response = call(Api(pool), request("POST", "/jobs", {"type": "echo", "payload": {"a": 1}}))
    assert response.status == 201
    assert response.headers == {"Location": "/jobs/7"}
    assert json.loads(response.body) == JOB
    method, params, _ = pool.calls[0]
    assert method == "submit"
    assert params == {"type": "echo", "payload": {"a": 1}, "correlation_id": "rid-1"}
    assert pool.used == ["writer"]


def test_submit_body_correlation_id_wins_over_the_request_id() -> None:
    pool = FakePool(submit={"job": JOB, "created": True})
    call(Api(pool), request("POST", "/jobs", {"type": "echo", "correlation_id": "mine"}))
    assert pool.calls[0][1]["correlation_id"] == "mine"


def test_repeated_idempotency_key_is_200_with_the_existing_job() -> None:
    pool = FakePool(submit={"job": JOB, "created": False})
    req = request("POST", "/jobs", {"type": "echo"}, headers={"Idempotency-Key": "k1"})
    response = call(Api(pool), req)
    assert response.status == 200
    assert "Location" not in response.headers
    assert pool.calls[0][1]["idempotency_key"] == "k1"


def test_idempotency_key_header_and_field_must_agree() -> None:
    pool = FakePool(submit={"job": JOB, "created": True})
    same = request(
        "POST", "/jobs", {"type": "echo", "idempotency_key": "k"}, {"Idempotency-Key": "k"}
    )
    assert call(Api(pool), same).status == 201
    other = request(
        "POST", "/jobs", {"type": "echo", "idempotency_key": "k"}, {"Idempotency-Key": "x"}
    )
    problem = problem_of(Api(pool), other)
    assert (problem.status, problem.field) == (400, "Idempotency-Key")


def test_submit_refuses_unknown_fields_naming_them() -> None:
    problem = problem_of(Api(FakePool()), request("POST", "/jobs", {"type": "e", "priorty": 1}))
    assert (problem.status, problem.code, problem.field) == (400, "invalid_params", "priorty")
    assert problem.detail.startswith("priorty: unknown field")
    assert {"type", "payload", "run_at", "delay", "idempotency_key"} <= SUBMIT_FIELDS


@pytest.mark.parametrize("body", [[1, 2], "text", 3])
def test_submit_body_must_be_an_object(body: Any) -> None:
    problem = problem_of(
        Api(FakePool()),
        request("POST", "/jobs", json.dumps(body).encode(), {"Content-Type": "application/json"}),
    )
    assert (problem.status, problem.field) == (400, "body")


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_submit_needs_json_content_type(content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    req = request("POST", "/jobs", b'{"type": "echo"}', headers)
    problem = problem_of(Api(FakePool()), req)
    assert (problem.status, problem.code, problem.field) == (
        415,
        "unsupported_media_type",
        "Content-Type",
    )


def test_submit_accepts_json_with_utf8_charset() -> None:
    pool = FakePool(submit={"job": JOB, "created": True})
    req = request(
        "POST", "/jobs", b'{"type": "echo"}', {"Content-Type": "Application/JSON; charset=UTF-8"}
    )
    assert call(Api(pool), req).status == 201


@pytest.mark.parametrize("body", [b'{"type": ', b"\xff\xfe", b"NaN", b'{"a": Infinity}'])
def test_malformed_json_is_400_parse_error(body: bytes) -> None:
    req = request("POST", "/jobs", body, {"Content-Type": "application/json"})
    problem = problem_of(Api(FakePool()), req)
    assert (problem.status, problem.code, problem.field) == (400, "parse_error", "body")
    assert problem.detail.startswith("body: not valid")


def test_empty_body_is_400() -> None:
    req = request("POST", "/jobs", b"", {"Content-Type": "application/json"})
    problem = problem_of(Api(FakePool()), req)
    assert (problem.status, problem.field) == (400, "body")


def test_daemon_errors_pass_through() -> None:
    unknown = UnknownType("type: unknown job type 'x'", field="type", type="x")
    pool = FakePool(submit=unknown)
    with pytest.raises(UnknownType):
        call(Api(pool), request("POST", "/jobs", {"type": "x"}))


# --- the job endpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "0", "-1", "1.5", "9223372036854775808", "1" * 30, "٣"])
def test_an_id_that_names_no_job_is_404_without_asking(text: str) -> None:
    pool = FakePool()
    problem = problem_of(Api(pool), request("GET", f"/jobs/{text}"))
    assert (problem.status, problem.code, problem.field) == (404, "not_found", "id")
    assert pool.calls == []


def test_largest_id_is_asked() -> None:
    pool = FakePool(get={"job": JOB})
    call(Api(pool), request("GET", "/jobs/9223372036854775807"))
    assert pool.calls[0][1] == {"id": 2**63 - 1}


@pytest.mark.parametrize(
    ("method", "target", "rpc", "pool_side"),
    [
        ("GET", "/jobs/7", "get", "reader"),
        ("DELETE", "/jobs/7", "cancel", "writer"),
        ("POST", "/jobs/7/retry", "retry", "writer"),
    ],
)
def test_job_operations(method: str, target: str, rpc: str, pool_side: str) -> None:
    pool = FakePool(**{rpc: {"job": JOB}})
    response = call(Api(pool), request(method, target))
    assert (response.status, json.loads(response.body)) == (200, JOB)
    assert pool.calls == [(rpc, {"id": 7}, -1)]
    assert pool.used == [pool_side]


def test_wait_defaults_clamps_and_gives_the_client_time() -> None:
    pool = FakePool(wait={"job": JOB, "timed_out": True})
    response = call(Api(pool), request("GET", "/jobs/7/wait"))
    assert json.loads(response.body) == {"job": JOB, "timed_out": True}
    assert pool.calls[-1] == ("wait", {"id": 7, "timeout": 30.0}, 60.0)
    call(Api(pool), request("GET", "/jobs/7/wait?timeout=99999"))
    assert pool.calls[-1][1]["timeout"] == MAX_WAIT
    call(Api(pool), request("GET", "/jobs/7/wait?timeout=0.5"))
    assert pool.calls[-1][1]["timeout"] == 0.5


@pytest.mark.parametrize("query", ["timeout=abc", "timeout=", "timeout=inf", "timeout=1&timeout=2"])
def test_wait_timeout_must_be_one_number(query: str) -> None:
    problem = problem_of(Api(FakePool()), request("GET", f"/jobs/7/wait?{query}"))
    assert (problem.status, problem.field) == (400, "timeout")


def test_list_passes_filters_and_pages() -> None:
    page = {"jobs": [JOB], "next_cursor": "c2"}
    pool = FakePool(list=page)
    target = "/jobs?state=failed&state=canceled,pending&type=echo&queue=q&limit=5&cursor=c1"
    response = call(Api(pool), request("GET", target))
    assert json.loads(response.body) == page
    assert pool.calls[0][1] == {
        "state": ["failed", "canceled", "pending"],
        "type": "echo",
        "queue": "q",
        "limit": 5,
        "cursor": "c1",
        "created_after": None,
        "created_before": None,
        "schedule": None,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=ten", "limit"),
        ("limit=1.5", "limit"),
        ("stat=failed", "stat"),
        ("type=a&type=b", "type"),
    ],
)
def test_list_query_errors_name_the_parameter(query: str, field: str) -> None:
    problem = problem_of(Api(FakePool()), request("GET", f"/jobs?{query}"))
    assert (problem.status, problem.field) == (400, field)
    assert problem.detail.startswith(f"{field}: ")


# --- operations ---------------------------------------------------------------------------------


def test_healthz_asks_nobody() -> None:
    pool = FakePool()
    response = call(Api(pool), request("GET", "/healthz"))
    assert (response.status, json.loads(response.body)) == (200, {"status": "ok"})
    assert pool.calls == []


HEALTH = {
    "status": "ok",
    "store": "ok",
    "workers": {"ready": 2, "expected": 2},
    "draining": False,
    "node": "n1",
    "problems": [],
}


def test_readyz_ok_and_degraded_show_only_coarse_facts() -> None:
    pool = FakePool(health=HEALTH)
    response = call(Api(pool), request("GET", "/readyz"))
    assert response.status == 200
    assert json.loads(response.body) == {
        "status": "ok",
        "store": "ok",
        "draining": False,
        "workers": {"ready": 2, "expected": 2},
    }
    degraded = dict(HEALTH, status="degraded", store="unavailable", problems=["db: host x"])
    response = call(Api(FakePool(health=degraded)), request("GET", "/readyz"))
    assert response.status == 503
    assert "problems" not in json.loads(response.body)


def test_metrics_is_prometheus_text() -> None:
    pool = FakePool(metrics="# HELP jobd_x x\njobd_x 1\n")
    response = call(Api(pool), request("GET", "/metrics"))
    assert (response.status, response.content_type) == (200, PROMETHEUS_TEXT)
    assert response.body == b"# HELP jobd_x x\njobd_x 1\n"


def test_openapi_is_the_document() -> None:
    from jobd.http.openapi import load_document

    response = call(Api(FakePool()), request("GET", "/openapi.json"))
    assert json.loads(response.body) == load_document()


# --- problems ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ERROR_CLASSES))
def test_every_protocol_error_takes_its_status_from_the_table(code: str) -> None:
    problem = Problem.from_error(ERROR_CLASSES[code]("something", field="f"))
    assert problem.status == CODES[code].http_status
    assert problem.code == code


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidParams("x: bad", field="x"), 400),
        (UnknownType("type: unknown", field="type"), 422),
        (NotFound("no job 3"), 404),
        (Conflict("finished"), 409),
        (PayloadTooLarge("big"), 413),
        (Unavailable("store"), 503),
        (JobdError("bug"), 500),
    ],
)
def test_issue_statuses(error: JobdError, status: int) -> None:
    assert Problem.from_error(error).status == status


def test_an_unreachable_daemon_is_503_without_the_socket_path() -> None:
    problem = Problem.from_error(DaemonUnreachable("no socket at /run/jobd/jobd.sock"))
    assert (problem.status, problem.code, problem.detail) == (
        503,
        "unavailable",
        UNREACHABLE_DETAIL,
    )
    assert problem.headers["Retry-After"] == "1"


def test_problem_body_is_rfc9457() -> None:
    problem = Problem("invalid_params", "limit: must be an integer", "limit")
    body = json.loads(problem.body("r-9"))
    assert body == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "limit: must be an integer",
        "code": "invalid_params",
        "field": "limit",
        "request_id": "r-9",
    }


def test_http_only_codes_do_not_shadow_the_table() -> None:
    assert not set(HTTP_ONLY) & set(CODES)
    assert status_of("unauthorized") == 401
    assert status_of("unsupported_media_type") == 415
    assert status_of("payload_too_large") == CODES["payload_too_large"].http_status


# --- schedules ----------------------------------------------------------------------------------

SCHEDULE = {"name": "nightly/report", "paused": True}


def test_schedules_lists_them_and_takes_no_query() -> None:
    pool = FakePool(schedules={"schedules": [SCHEDULE]})
    response = call(Api(pool), request("GET", "/schedules"))
    assert (response.status, json.loads(response.body)) == (200, {"schedules": [SCHEDULE]})
    problem = problem_of(Api(pool), request("GET", "/schedules?name=x"))
    assert (problem.status, problem.field) == (400, "name")


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume_name_the_schedule_from_the_path(action: str) -> None:
    pool = FakePool(**{f"schedule_{action}": {"schedule": SCHEDULE}})
    response = call(Api(pool), request("POST", f"/schedules/nightly%2Freport/{action}"))
    assert (response.status, json.loads(response.body)) == (200, SCHEDULE)
    # The change is made for the request's caller: the audit trail records it as `actor`.
    params = {"name": "nightly/report", "actor": "http"}
    assert pool.calls == [(f"schedule_{action}", params, -1)]
    assert pool.used == ["writer"]


def test_trigger_answers_201_with_the_jobs_location() -> None:
    pool = FakePool(schedule_trigger={"job": JOB})
    response = call(Api(pool), request("POST", "/schedules/nightly/trigger"))
    assert (response.status, response.headers["Location"]) == (201, "/jobs/7")
    assert json.loads(response.body) == JOB


def test_an_unknown_schedule_is_404() -> None:
    error = UnknownSchedule.of_field("name", "unknown schedule 'x'", known=[])
    pool = FakePool(schedule_pause=error)
    with pytest.raises(UnknownSchedule) as caught:  # the server turns it into its problem
        call(Api(pool), request("POST", "/schedules/x/pause"))
    problem = Problem.from_error(caught.value)
    assert (problem.status, problem.code, problem.field) == (404, "unknown_schedule", "name")


def test_list_passes_the_schedule_filter() -> None:
    pool = FakePool(list={"jobs": [], "next_cursor": None})
    call(Api(pool), request("GET", "/jobs?schedule=nightly"))
    assert pool.calls[0][1]["schedule"] == "nightly"
