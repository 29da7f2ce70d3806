"""A result over jobs.max_result_bytes fails its attempt for good in the worker: it never
crosses the pipe, and the job says why (a real `jobd run` on PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from control_harness import running_daemon

pytestmark = pytest.mark.postgres

LIMIT = 4096


def test_an_oversized_result_fails_the_job_naming_the_limit(pg_url: str) -> None:
    env = {"JOBD_JOBS_MAX_RESULT_BYTES": str(LIMIT)}
    schema = f"jobd_result_{uuid.uuid4().hex[:8]}"
    with running_daemon(pg_url, schema, env=env) as daemon, daemon.client() as client:
        small = client.submit("echo", {"text": "x" * (LIMIT // 2)}, max_attempts=3).job
        large = client.submit("echo", {"text": "x" * LIMIT}, max_attempts=3).job
        small_end = client.wait(small.id, timeout=30).job
        large_end = client.wait(large.id, timeout=30).job

    assert small_end.state == "completed"
    assert large_end.state == "failed"
    assert large_end.attempts == 1  # permanent: another attempt would return as much
    assert large_end.result is None
    assert large_end.last_error is not None
    assert large_end.last_error.type == "ResultTooLarge"
    assert f"jobs.max_result_bytes ({LIMIT})" in large_end.last_error.message
