"""Enabling the sample handlers (handlers.samples) and handing their settings to workers."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pickle
from pathlib import Path

import pytest

from jobd import daemon
from jobd.config import load_config, setting
from jobd.handlers import registry
from jobd.samples import SAMPLE_MODULES, enabled_modules, settings


def test_every_sample_name_has_a_module_that_registers_it() -> None:
    assert set(SAMPLE_MODULES) == set(setting("handlers.samples").kind.item.choices)
    for name, module in SAMPLE_MODULES.items():
        importlib.import_module(module)
        assert name in registry


def test_enabled_modules_come_first_and_once() -> None:
    modules = enabled_modules(["process_file", "send_email"], ["myapp.jobs", "jobd.samples.files"])
    assert modules == ("jobd.samples.files", "jobd.samples.mail", "myapp.jobs")


def test_supervisor_and_fork_server_get_the_same_modules() -> None:
    config = load_config(
        env={
            "JOBD_HANDLERS_SAMPLES": "generate_report",
            "JOBD_HANDLER_MODULES": "itest_handlers",
            "JOBD_FILES_ALLOWED_DIRS": "/srv/jobs",
        }
    )
    expected = ("jobd.samples.report", "itest_handlers")
    assert daemon.handler_modules(config) == expected
    assert daemon.supervisor_settings(config).handler_modules == expected


def test_worker_setup_without_sample_handlers_is_just_logging() -> None:
    setup = daemon.worker_setup(load_config(env={}), "node-1")
    assert isinstance(setup, functools.partial) and setup.args == ("INFO", "json", "node-1")


def test_worker_setup_hands_over_a_snapshot() -> None:
    config = load_config(
        env={
            "JOBD_HANDLERS_SAMPLES": "send_email,process_file",
            "JOBD_SMTP_FROM": "jobs@example.com",
            "JOBD_SMTP_PASSWORD": "hunter2",
            "JOBD_FILES_ALLOWED_DIRS": "/srv/in,/srv/out",
        }
    )
    setup = daemon.worker_setup(config, "node-1")
    assert "hunter2" not in repr(setup)
    in_worker = pickle.loads(pickle.dumps(setup))  # how it reaches each worker
    assert in_worker.setup_logging.args == ("INFO", "json", "node-1")
    calls: list[str] = []
    # Not the real logging set-up: it would take the root logger from pytest.
    in_worker = dataclasses.replace(in_worker, setup_logging=lambda: calls.append("logging"))
    try:
        in_worker()
        assert calls == ["logging"]
        current = settings.current()
        assert current.smtp.password == "hunter2" and current.smtp.from_ == "jobs@example.com"
        assert current.files.allowed_dirs == (Path("/srv/in"), Path("/srv/out"))
    finally:
        settings.configure(None)


def test_outside_the_daemon_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBD_FILES_ALLOWED_DIRS", "/data/a")
    monkeypatch.setenv("JOBD_SMTP_HOST", "mail.internal")
    settings.configure(None)
    try:
        current = settings.current()
        assert current.files.allowed_dirs == (Path("/data/a"),)
        assert current.smtp.host == "mail.internal"
        monkeypatch.setenv("JOBD_SMTP_HOST", "elsewhere")
        assert settings.current() is current  # loaded once per process
    finally:
        settings.configure(None)


def test_file_handlers_without_allowed_dirs_stop_the_daemon() -> None:
    config = load_config(env={"JOBD_HANDLERS_SAMPLES": "process_file,generate_report"})
    assert settings.startup_problems(config) == [
        "handlers.samples enables process_file and generate_report but files.allowed_dirs is"
        " empty (JOBD_FILES_ALLOWED_DIRS): every path would be refused"
    ]
    fine = load_config(
        env={"JOBD_HANDLERS_SAMPLES": "process_file", "JOBD_FILES_ALLOWED_DIRS": "/srv"}
    )
    assert settings.startup_problems(fine) == []
