"""What a handler's context gives it: here, its logger."""

from __future__ import annotations

import logging

import pytest

from jobd.testing import make_context


def test_ctx_logger_keeps_the_callers_extra_fields_beside_the_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = make_context(job_id=7, type="resize", correlation_id="req-1")
    with caplog.at_level(logging.INFO):
        ctx.logger.info("resized", extra={"width": 640, "source": "s3"})
    (record,) = caplog.records
    assert (record.width, record.source) == (640, "s3")  # type: ignore[attr-defined]
    assert (record.job_id, record.job_type, record.correlation_id) == (  # type: ignore[attr-defined]
        7,
        "resize",
        "req-1",
    )


def test_ctx_logger_without_extra_carries_the_job_fields(caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_context(job_id=8, type="resize")
    with caplog.at_level(logging.INFO):
        ctx.logger.warning("no extra")
    assert caplog.records[0].job_id == 8  # type: ignore[attr-defined]
