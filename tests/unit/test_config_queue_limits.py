"""The fleet-wide limits of a queue in the configuration (docs/adr/0032): any of
`concurrency`, `global_concurrency` and `rate` per queue; errors name the key and the form."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobd.config import ConfigError, QueueConfig, load_config
from jobd.daemon import supervisor_settings
from jobd.queue_limits import FleetLimits, LimitError, Rate

HOME = {"HOME": "/home/ann"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobd.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=HOME)
    return info.value


def test_a_queue_may_have_any_of_the_three_limits(tmp_path: Path) -> None:
    text = (
        "queues:\n"
        "  api: {global_concurrency: 3, rate: 10/s}\n"
        "  mail: {rate: 600/m}\n"
        "  emails: {concurrency: 4, global_concurrency: 8}\n"
    )
    queues = load_config(write(tmp_path, text), env=HOME).queues
    assert queues == {
        "api": QueueConfig(None, 3, Rate(10, 1.0)),
        "mail": QueueConfig(rate=Rate(600, 60.0)),
        "emails": QueueConfig(4, 8),
    }


def test_the_supervisor_gets_the_node_and_the_fleet_limits_apart(tmp_path: Path) -> None:
    text = "queues:\n  api: {global_concurrency: 3, rate: 10/s}\n  emails: {concurrency: 4}\n"
    settings = supervisor_settings(load_config(write(tmp_path, text), env=HOME))
    assert settings.queue_limits == {"emails": 4}
    assert settings.fleet_limits == {"api": FleetLimits(3, Rate(10, 1.0))}


def test_the_limits_print_and_load_back(tmp_path: Path) -> None:
    text = "queues:\n  api: {global_concurrency: 3, rate: 10/s}\n  emails: {concurrency: 4}\n"
    c = load_config(write(tmp_path, text), env=HOME)
    dumped = c.to_dict(mask_secrets=False)
    assert dumped["queues"]["api"] == {"global_concurrency": 3, "rate": "10/s"}
    assert load_config(write(tmp_path, yaml.safe_dump(dumped)), env=HOME) == c


@pytest.mark.parametrize("rate", ["10/h", "10", "0/s", "-1/s", "ten/s", "1.5/s", "10/ss"])
def test_a_bad_rate_names_the_key_and_the_form(tmp_path: Path, rate: str) -> None:
    exc = error(tmp_path, f"queues:\n  api: {{rate: {rate!r}}}\n")
    assert exc.key == "queues.api.rate"
    assert "10/s or 600/m" in str(exc)


@pytest.mark.parametrize("value", ["0", "-2", "x", "1.5"])
def test_a_bad_global_concurrency_names_the_key(tmp_path: Path, value: str) -> None:
    exc = error(tmp_path, f"queues:\n  api: {{global_concurrency: {value}}}\n")
    assert exc.key == "queues.api.global_concurrency"


def test_an_empty_queue_entry_says_what_it_may_have(tmp_path: Path) -> None:
    exc = error(tmp_path, "queues:\n  api: {}\n")
    assert exc.key == "queues.api" and "global_concurrency" in str(exc)


def test_the_environment_sets_the_per_node_concurrency_only(tmp_path: Path) -> None:
    queues = load_config(env={**HOME, "JOBD_QUEUES": "emails=4"}).queues
    assert queues == {"emails": QueueConfig(4)}


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/s", Rate(10, 1.0)), ("600/m", Rate(600, 60.0)), (" 5 / S ", Rate(5, 1.0))],
)
def test_rates_parse_and_print(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate
    assert Rate.parse(str(rate)) == rate


def test_a_rate_must_be_text() -> None:
    with pytest.raises(LimitError, match="10/s or 600/m"):
        Rate.parse(10)
