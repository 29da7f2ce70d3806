"""Errors as HTTP responses: `application/problem+json` (RFC 9457).

Every error the shim sends is one JSON object:

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "type: unknown job type 'x' (this daemon runs: send_email)",
     "code": "unknown_type", "field": "type",
     "problem": "unknown job type 'x' (this daemon runs: send_email)", "request_id": "4f0c…"}

`type` is always `about:blank`, so `title` is the status's phrase; clients branch on `code`, the
same stable string the control protocol sends (jobd.errors), or one of the few HTTP-only codes
below.  `detail` names the bad field; when it is known, `field` carries it alone and `problem`
what is wrong with it (detail is then `field: problem`).

Statuses come from one place: an error that has a control-protocol code takes the HTTP status
of its row in jobd.errors.CODES; the HTTP-only problems (authentication, methods, media types,
framing), which have no code on the wire and no jobctl exit status, are the table below.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from jobd.errors import CODES, DaemonUnreachable, JobdError
from jobd.protocol import encode

PROBLEM_JSON = "application/problem+json"

#: Problems only HTTP has: code -> status.  Everything else is a row of jobd.errors.CODES.
HTTP_ONLY: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "method_not_allowed": 405,
    "length_required": 411,
    "uri_too_long": 414,
    "unsupported_media_type": 415,
    "expectation_failed": 417,
    "headers_too_large": 431,
    "http_version_not_supported": 505,
}

#: What the standard library's parse_request reports, by status, as a code of ours.
STDLIB_STATUS_CODES: dict[int, str] = {
    400: "invalid_request",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    505: "http_version_not_supported",
}

UNREACHABLE_DETAIL = "the jobd daemon cannot be reached; try again later"


def status_of(code: str) -> int:
    """The HTTP status of a code: its row in the one error table, else the HTTP-only table."""
    if code in CODES:
        return CODES[code].http_status
    return HTTP_ONLY.get(code, 500)


class Problem(Exception):
    """An error response on its way out: raised anywhere in a request's handling, turned into
    a problem+json body by the server.  `headers` go with it (Allow, WWW-Authenticate, …);
    `close` asks for the connection to be closed after it (the body was not read)."""

    def __init__(
        self,
        code: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
        problem: str | None = None,
    ):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.problem = problem
        self.headers = dict(headers or {})
        self.close = close

    @property
    def status(self) -> int:
        return status_of(self.code)

    @classmethod
    def from_error(cls, error: JobdError) -> Problem:
        """The problem for an error the daemon (or the client, for DaemonUnreachable) raised.
        An unreachable daemon's message names the local socket: that stays in the shim's log;
        the remote caller learns only that the daemon is not there."""
        if isinstance(error, DaemonUnreachable):
            return cls("unavailable", UNREACHABLE_DETAIL, headers={"Retry-After": "1"})
        problem = cls(error.code, error.message, field=error.field, problem=error.problem)
        if problem.status == 503:
            problem.headers["Retry-After"] = "1"
        return problem

    def body(self, request_id: str | None) -> bytes:
        status = self.status
        document: dict[str, Any] = {
            "type": "about:blank",
            "title": _phrase(status),
            "status": status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.field is not None:
            document["field"] = self.field
        if self.problem is not None:
            document["problem"] = self.problem
        if request_id is not None:
            document["request_id"] = request_id
        return encode(document)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def invalid(field_name: str, problem: str, code: str = "invalid_params") -> Problem:
    """A bad value in the request, naming it: `limit: must be an integer`."""
    return Problem(code, f"{field_name}: {problem}", field=field_name, problem=problem)
