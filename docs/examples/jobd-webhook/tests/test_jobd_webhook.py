"""post_webhook's tests: the handler called directly, with a JobContext from jobd.testing,
against a local HTTP server.  No daemon and no database: that is how a handler is best tested."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jobd_webhook import webhook

from jobd import JobCancelled, JobContext, PermanentError, RetryLater
from jobd.config import load_config
from jobd.handlers import load_modules
from jobd.testing import make_context

HERE = Path(__file__).parent.parent


@dataclass
class Receiver:
    """A webhook receiver: answers each request with the next reply queued (default 200)."""

    port: int = 0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    replies: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((self.path, dict(self.headers), body))
            status, headers = state.replies.pop(0) if state.replies else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv(webhook.ALLOWED_HOSTS_ENV, "127.0.0.1")
    yield state
    server.shutdown()
    server.server_close()


def make_ctx(job_id: int = 11, stop: threading.Event | None = None) -> JobContext:
    """What a worker gives a handler, as jobd.testing makes it."""
    return make_context(
        job_id=job_id,
        type="post_webhook",
        max_attempts=8,
        queue="webhooks",
        timeout=5.0,
        stop=stop,
    )


def post(payload: dict[str, Any], job_id: int = 11) -> dict[str, Any]:
    webhook.validate(payload)  # as the control server would, at submit time
    return webhook.post_webhook(make_ctx(job_id), payload)


def test_delivers_the_body_with_an_idempotency_key(receiver: Receiver) -> None:
    assert post({"url": receiver.url, "body": {"order": 42}}, job_id=11) == {"status": 200}
    post({"url": receiver.url, "body": {"order": 42}}, job_id=11)  # the same job, run again
    (path, headers, body), (_, again, _) = receiver.requests
    assert path == "/hook" and json.loads(body) == {"order": 42}
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == again["Idempotency-Key"] == "jobd-job-11"


def test_server_errors_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.replies.append((502, {}))
    with pytest.raises(webhook.WebhookUnavailable, match="502"):
        post({"url": receiver.url})


def test_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.replies.append((429, {"Retry-After": "7"}))
    with pytest.raises(RetryLater) as caught:
        post({"url": receiver.url})
    assert caught.value.delay == 7


@pytest.mark.parametrize("status", [400, 404, 410, 501])
def test_errors_no_retry_can_fix_are_permanent(receiver: Receiver, status: int) -> None:
    receiver.replies.append((status, {}))
    with pytest.raises(PermanentError, match=str(status)):
        post({"url": receiver.url})


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.replies.append((302, {"Location": "http://169.254.169.254/latest/meta-data"}))
    with pytest.raises(PermanentError, match="302"):
        post({"url": receiver.url})
    assert len(receiver.requests) == 1


def test_hosts_not_allowed_are_refused_before_any_request(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(webhook.ALLOWED_HOSTS_ENV, "hooks.example.com")
    with pytest.raises(PermanentError, match="not in WEBHOOK_ALLOWED_HOSTS"):
        post({"url": receiver.url})
    assert receiver.requests == []


def test_unreachable_receiver_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(webhook.ALLOWED_HOSTS_ENV, "127.0.0.1")
    with pytest.raises(webhook.WebhookUnavailable):
        post({"url": "http://127.0.0.1:9/hook"})  # the discard port: nobody listens


def test_a_cancelled_job_makes_no_request(receiver: Receiver) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobCancelled):
        webhook.post_webhook(make_ctx(stop=stop), {"url": receiver.url})
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({}, "url: is required"),
        ({"url": "ftp://example.com/x"}, "url: must be an http or https URL"),
        ({"url": "http:///nohost"}, "url: must be an http or https URL"),
        ({"url": "https://user:pw@example.com/"}, "url: must not carry"),
        ({"url": "https://example.com/", "body": [1, 2]}, "body: must be a JSON object"),
        ({"url": "https://example.com/", "headers": {}}, "headers: unknown field"),
    ],
)
def test_bad_payloads(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        webhook.validate(payload)
    with pytest.raises(PermanentError, match=match):
        webhook.post_webhook(make_ctx(), payload)


def test_the_configuration_enables_it() -> None:
    config = load_config(HERE / "jobd.yaml", env={})
    assert config.handlers.modules == ("jobd_webhook",)
    assert config.queues["webhooks"].concurrency == 4
    registry = load_modules(config.handlers.modules)
    assert registry.get("post_webhook").validator is webhook.validate
