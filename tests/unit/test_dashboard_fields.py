"""The job page's table of every field (jobd.http.ui.pages): seconds shown as durations."""

from __future__ import annotations

from jobd.http.ui.pages import _fields
from jobd.http.ui.render import duration_text


def test_the_timeout_and_result_ttl_are_durations_and_other_numbers_stay_text() -> None:
    job = {"id": 7, "timeout": 30.0, "result_ttl": 3600.0, "priority": 5, "attempts": 1}
    kinds = {name: kind for name, _, kind in _fields(job)}
    assert kinds["timeout"] == kinds["result_ttl"] == "duration"
    assert kinds["priority"] == kinds["attempts"] == "text"
    assert duration_text(3600.0) == "60.0 min"


def test_a_job_without_a_result_ttl_shows_none_as_text() -> None:
    kinds = {name: kind for name, _, kind in _fields({"id": 7, "result_ttl": None})}
    assert kinds["result_ttl"] == "text"  # shown as a dash
