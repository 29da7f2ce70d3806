"""`post_webhook`: POST a JSON document to a URL — an example of a jobd job type.

Payload::

    {"url": "https://hooks.example.com/orders",   required, http or https
     "body": {"order": 42}}                       a JSON object, default {}

What it shows (docs/handlers.md explains each):

- a validator, run when the job is submitted, that checks the payload's shape, and the same
  checks again in the handler (a job can reach the database without the validator);
- a setting of the handler's own, `WEBHOOK_ALLOWED_HOSTS`, read from the environment: a job
  type that makes requests for whoever may submit jobs must not reach any host they name
  (the cloud metadata service at 169.254.169.254, an admin port on localhost, ...);
- failures sorted by whether retrying can help: 4xx, 501 and redirects are PermanentError,
  other 5xx and network errors are ordinary exceptions (retried with backoff), 429/503 with
  a Retry-After become RetryLater(delay);
- idempotency: an `Idempotency-Key` header that is the same on every attempt of one job, so a
  receiver can ignore the second delivery when a job runs twice after a crash;
- cancellation: a check before the request; the request itself is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from jobd import JobContext, PermanentError, RetryLater, handler

ALLOWED_HOSTS_ENV = "WEBHOOK_ALLOWED_HOSTS"
REQUEST_TIMEOUT = 30.0  # seconds, unless the job's own timeout is shorter
MAX_RETRY_AFTER = 3600.0  # a Retry-After longer than this is capped


class WebhookUnavailable(Exception):
    """The receiver could not be reached or failed (5xx): worth another attempt."""


def check_payload(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(url, body) from a payload; ValueError("field: problem") for a bad one."""
    unknown = set(payload) - {"url", "body"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown field (this job type takes url, body)")
    url = payload.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError("url: is required (an http or https URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url: must be an http or https URL with a host")
    if parts.username or parts.password:
        raise ValueError("url: must not carry a user name or password")
    body = payload.get("body", {})
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    return url, body


def validate(payload: dict[str, Any]) -> None:
    """The submit-time validator: the payload's shape only.  Whether the host is allowed is
    the worker's business, since an application submitting with jobd.enqueue does not have
    this node's environment."""
    check_payload(payload)


@handler("post_webhook", max_attempts=8, timeout=60, validator=validate)
def post_webhook(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        url, body = check_payload(payload)
    except ValueError as exc:
        raise PermanentError(f"invalid payload: {exc}") from None
    host = urlsplit(url).hostname or ""
    if host.lower() not in allowed_hosts():
        raise PermanentError(f"url: host {host!r} is not in {ALLOWED_HOSTS_ENV}")
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "jobd-webhook/0.1",
            # The same on every attempt of this job: the receiver can drop a duplicate.
            "Idempotency-Key": f"jobd-job-{ctx.job_id}",
        },
    )
    ctx.check_cancelled()  # don't start a request for a job that is being stopped
    timeout = min(REQUEST_TIMEOUT, ctx.timeout) if ctx.timeout else REQUEST_TIMEOUT
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise _failure(url, exc) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timed out
        raise WebhookUnavailable(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    ctx.logger.info("webhook delivered", extra={"status": status})
    return {"status": status}


def allowed_hosts() -> set[str]:
    """Read at each job, not at import: the fork server imports this module once, early."""
    value = os.environ.get(ALLOWED_HOSTS_ENV, "")
    return {host.strip().lower() for host in value.split(",") if host.strip()}


def _failure(url: str, exc: urllib.error.HTTPError) -> Exception:
    """The exception for an HTTP error status: retry it or not, and when."""
    where = f"{url}: {exc.code} {exc.reason}"
    delay = _retry_after(exc.headers.get("Retry-After"))
    if exc.code in (429, 503) and delay is not None:
        return RetryLater(delay, f"{where} (Retry-After {delay:g}s)")
    if (exc.code >= 500 and exc.code not in (501, 505)) or exc.code in (408, 429):
        return WebhookUnavailable(where)
    # 3xx (redirects are not followed), the other 4xx, and 501/505: the receiver does not
    # support the request, which no retry changes.
    return PermanentError(where)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored: backoff applies instead)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 <= seconds < float("inf"):
        return None
    return min(seconds, MAX_RETRY_AFTER)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead to a host that is not allowed: report it instead of following."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
