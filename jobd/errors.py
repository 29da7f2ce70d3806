"""The one error tree of jobd, and the table that gives each error its wire code, its jobctl
exit status and its HTTP status.

    JobdError                    code            exit  http
    ├── ParseError               parse_error        2   400
    ├── InvalidRequest           invalid_request    2   400
    ├── MethodNotFound           method_not_found   2   404
    ├── InvalidParams            invalid_params     2   400
    │   ├── UnknownType          unknown_type       2   422
    │   └── UnknownSchedule      unknown_schedule   2   404
    ├── NotFound                 not_found          4   404
    ├── Conflict                 conflict           1   409
    ├── PayloadTooLarge          payload_too_large  2   413
    └── Unavailable              unavailable        3   503
        └── DaemonUnreachable    unavailable        3   503   (client side: no daemon answers)

JobdError itself is `internal_error` (exit 1, HTTP 500): a bug, reported as such.

The protocol-level codes (parse_error, invalid_request, method_not_found, internal_error) are in
the same table so that every place that turns an error into an exit status or an HTTP status
reads one row of it.  Imports nothing else of jobd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    rpc_code: int  # JSON-RPC 2.0 error code
    exit_status: int  # jobctl's exit status
    http_status: int


CODES: dict[str, ErrorCode] = {
    c.code: c
    for c in (
        ErrorCode("parse_error", -32700, 2, 400),
        ErrorCode("invalid_request", -32600, 2, 400),
        ErrorCode("method_not_found", -32601, 2, 404),
        ErrorCode("invalid_params", -32602, 2, 400),
        ErrorCode("internal_error", -32603, 1, 500),
        ErrorCode("not_found", -32004, 4, 404),
        ErrorCode("conflict", -32009, 1, 409),
        ErrorCode("unknown_type", -32022, 2, 422),
        ErrorCode("unknown_schedule", -32024, 2, 404),
        ErrorCode("payload_too_large", -32013, 2, 413),
        ErrorCode("unavailable", -32003, 3, 503),
    )
}


class JobdError(Exception):
    """Something went wrong in jobd.  `data` travels with it on the wire; an error about one
    field of a request carries that field's name as `data["field"]` and what is wrong with it
    as `data["problem"]`, so that no reader has to take the message apart."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None, **data: Any):
        self.message = message or (self.__doc__ or "").strip()
        self.data = data
        super().__init__(self.message)

    @classmethod
    def of_field(cls, field: str, problem: str, **data: Any) -> Self:
        """The error about `field` (`delay: must be a number`); an empty field names the
        object as a whole, and the message is then the problem alone."""
        message = f"{field}: {problem}" if field else problem
        return cls(message, field=field, problem=problem, **data)

    @property
    def field(self) -> str | None:
        """The request member at fault, when one is (`type`, `jobs[3].delay`)."""
        value = self.data.get("field")
        return value if isinstance(value, str) else None

    @property
    def problem(self) -> str | None:
        """What is wrong with `field`, without its name."""
        value = self.data.get("problem")
        return value if isinstance(value, str) else None

    @property
    def info(self) -> ErrorCode:
        return CODES[self.code]


class ParseError(JobdError):
    """The request is not valid JSON (or not UTF-8)."""

    code = "parse_error"


class InvalidRequest(JobdError):
    """The message is JSON but not a JSON-RPC 2.0 request."""

    code = "invalid_request"


class MethodNotFound(JobdError):
    """No such method."""

    code = "method_not_found"


class InvalidParams(JobdError):
    """The request's parameters are not valid."""

    code = "invalid_params"


class UnknownType(InvalidParams):
    """No handler is registered for this job type."""

    code = "unknown_type"


class UnknownSchedule(InvalidParams):
    """No schedule of this name, neither in the database nor in this node's configuration."""

    code = "unknown_schedule"


class NotFound(JobdError):
    """No such job."""

    code = "not_found"


class Conflict(JobdError):
    """The job is not in a state that allows this operation."""

    code = "conflict"


class PayloadTooLarge(JobdError):
    """The request is larger than the configured limit."""

    code = "payload_too_large"


class Unavailable(JobdError):
    """The store is unavailable; try again later."""

    code = "unavailable"


class DaemonUnreachable(Unavailable):
    """No jobd answers on the control socket (raised by the client, never sent on the wire)."""


ERROR_CLASSES: dict[str, type[JobdError]] = {
    cls.code: cls
    for cls in (
        JobdError,
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        UnknownType,
        UnknownSchedule,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unavailable,
    )
}


def error_from_code(code: str, message: str, data: dict[str, Any] | None = None) -> JobdError:
    """Rebuild the exception a server raised from its wire code (used by the client)."""
    cls = ERROR_CLASSES.get(code, JobdError)
    err = cls(message, **(data or {}))
    if cls is JobdError:
        err.code = code  # type: ignore[misc]  # keep an unknown code as the server sent it
    return err
