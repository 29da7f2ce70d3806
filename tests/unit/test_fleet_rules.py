"""The fleet's pure rules: version order, the minimum node version, unrunnable types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobd.store.nodes import NodeReport, too_old, unrunnable, version_key, version_refusal


def test_versions_compare_by_their_release_numbers() -> None:
    assert version_key("0.2") == version_key("0.2.0") == version_key("v0.2.0rc1")
    assert version_key("0.10.0") > version_key("0.9.9")
    with pytest.raises(ValueError):
        version_key("latest")


def test_a_node_older_than_the_minimum_may_not_claim() -> None:
    assert not too_old("0.1.0", None)
    assert not too_old("0.2.0", "0.2")
    assert too_old("0.1.9", "0.2.0")
    assert version_refusal("0.1.0", "0.1") is None
    assert "minimum node version 0.2" in (version_refusal("0.1.0", "0.2") or "")


def test_only_types_no_live_node_runs_are_unrunnable() -> None:
    started = datetime(2024, 1, 1, tzinfo=UTC)
    node = NodeReport("a", "h", 1, "0.1.0", started, ("echo",), ())
    assert unrunnable({"echo": 3, "new": 2, "none": 0}, [node]) == {"new": 2}
    assert unrunnable({"echo": 3}, []) == {"echo": 3}
