"""The endpoints that operate the queues, each one control-protocol call (jobd.protocol_queues):

    GET    /queues                    queues          every queue: counts, age, pause, limits
    POST   /queues/{name}/pause       queue_pause     body (optional): {"reason": "…"}
    POST   /queues/{name}/resume      queue_resume
    POST   /queues/{name}/limit       queue_limit     body: {"global_concurrency": N,
                                                        "rate": "10/s", "reset": true}
    POST   /bulk/cancel               cancel_many     body: the filter, limit, batch, cursor,
    POST   /bulk/retry                retry_many        dry_run (the protocol's members)
    POST   /bulk/purge                purge
    POST   /jobs/{id}/run-now         run_now
    POST   /jobs/{id}/priority        set_priority    body: {"priority": N}
    GET    /audit                     audit           ?limit=&before=

Each change is made for the token that authorised it: the call's `actor` is `token:` and the
first 8 hex digits of the SHA-256 of the token (a fingerprint, not the secret: the audit trail
names which token acted without holding it), or `http` when no token is configured.
Api (jobd.http.api) takes these as its methods; ROUTES lists them."""

from __future__ import annotations

import hashlib
from typing import Any

from jobd.http import api as http_api
from jobd.http.problems import invalid

QUEUE_ROUTES = (
    ("/queues", {"GET": "queues"}),
    ("/queues/{name}/pause", {"POST": "queue_pause"}),
    ("/queues/{name}/resume", {"POST": "queue_resume"}),
    ("/queues/{name}/limit", {"POST": "queue_limit"}),
    ("/bulk/cancel", {"POST": "cancel_many"}),
    ("/bulk/retry", {"POST": "retry_many"}),
    ("/bulk/purge", {"POST": "purge"}),
    ("/jobs/{id}/run-now", {"POST": "run_now"}),
    ("/jobs/{id}/priority", {"POST": "set_priority"}),
    ("/audit", {"GET": "audit"}),
)
LIMIT_MEMBERS = ("global_concurrency", "rate", "reset")
BULK_MEMBERS = (
    "state",
    "type",
    "queue",
    "created_after",
    "created_before",
    "schedule",
    "limit",
    "batch",
    "cursor",
    "dry_run",
)


def actor(request: http_api.Request) -> str:
    """Who acts: the fingerprint of the request's bearer token (see the module docstring)."""
    header = request.header("Authorization") or ""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "http"
    digest = hashlib.sha256(token.strip().encode("latin-1", "replace")).hexdigest()
    return f"token:{digest[:8]}"


def _body(request: http_api.Request, members: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of the body (an empty body is an empty object), its members checked."""
    if not request.body.strip():
        return {}
    body = http_api.json_body(request)
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    unknown = sorted(set(body) - set(members))
    if unknown:
        raise invalid(unknown[0], f"unknown field (fields: {', '.join(members) or 'none'})")
    return body


class QueueEndpoints:
    clients: http_api.Clients

    def _write(self, request: http_api.Request, method: str, params: dict[str, Any]) -> Any:
        with self.clients.writer() as client:
            return client.call(method, {**params, "actor": actor(request)})

    def queues(self, request: http_api.Request) -> http_api.Response:
        http_api.known_params(request, ())
        with self.clients.reader() as client:
            return http_api.json_response(200, client.call("queues"))

    def queue_pause(self, request: http_api.Request) -> http_api.Response:
        body = _body(request, ("reason",))
        params = {"name": request.path_params["name"], "reason": body.get("reason")}
        return http_api.json_response(200, self._write(request, "queue_pause", params))

    def queue_resume(self, request: http_api.Request) -> http_api.Response:
        _body(request, ())
        params = {"name": request.path_params["name"]}
        return http_api.json_response(200, self._write(request, "queue_resume", params))

    def queue_limit(self, request: http_api.Request) -> http_api.Response:
        body = _body(request, LIMIT_MEMBERS)
        params = {**body, "name": request.path_params["name"]}
        return http_api.json_response(200, self._write(request, "queue_limit", params))

    def _bulk(self, request: http_api.Request, method: str) -> http_api.Response:
        body = _body(request, BULK_MEMBERS)
        return http_api.json_response(200, self._write(request, method, body))

    def cancel_many(self, request: http_api.Request) -> http_api.Response:
        return self._bulk(request, "cancel_many")

    def retry_many(self, request: http_api.Request) -> http_api.Response:
        return self._bulk(request, "retry_many")

    def purge(self, request: http_api.Request) -> http_api.Response:
        return self._bulk(request, "purge")

    def run_now(self, request: http_api.Request) -> http_api.Response:
        _body(request, ())
        params = {"id": http_api.job_id(request)}
        return http_api.json_response(200, self._write(request, "run_now", params)["job"])

    def set_priority(self, request: http_api.Request) -> http_api.Response:
        body = _body(request, ("priority",))
        params = {"id": http_api.job_id(request), "priority": body.get("priority")}
        return http_api.json_response(200, self._write(request, "set_priority", params)["job"])

    def audit(self, request: http_api.Request) -> http_api.Response:
        http_api.known_params(request, ("limit", "before"))
        params = {
            "limit": http_api.int_param(request, "limit"),
            "before": http_api.int_param(request, "before"),
        }
        with self.clients.reader() as client:
            return http_api.json_response(200, client.call("audit", params))
