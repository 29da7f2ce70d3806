"""jobs.max_payload_bytes and jobs.max_result_bytes: 1 MiB by default, at most 16 MiB."""

from __future__ import annotations

import pytest

from jobd.config import ConfigError, load_config
from jobd.jobspec import DEFAULT_MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES


def test_the_defaults_are_one_mib() -> None:
    jobs = load_config(env={}).jobs
    assert jobs.max_payload_bytes == jobs.max_result_bytes == DEFAULT_MAX_PAYLOAD_BYTES


@pytest.mark.parametrize("key", ["max_payload_bytes", "max_result_bytes"])
def test_sixteen_mib_is_the_most_and_more_is_an_error_naming_the_key(key: str) -> None:
    variable = f"JOBD_JOBS_{key.upper()}"
    assert getattr(load_config(env={variable: "16MiB"}).jobs, key) == MAX_PAYLOAD_BYTES
    with pytest.raises(ConfigError) as caught:
        load_config(env={variable: str(MAX_PAYLOAD_BYTES + 1)})
    assert f"jobs.{key}" in str(caught.value) and "16MiB" in str(caught.value)
