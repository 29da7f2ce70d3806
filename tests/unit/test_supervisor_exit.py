"""A node exits in bounded time even when a side task does not end when cancelled."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from jobd.handlers import Registry
from jobd.store.memory import MemoryStore
from jobd.supervisor import loop
from jobd.supervisor.loop import Supervisor
from jobd.supervisor.settings import SupervisorSettings


async def test_a_side_task_that_ignores_its_cancel_is_left_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(loop, "SIDE_TASK_STOP_TIMEOUT", 0.2)
    sup = Supervisor(MemoryStore(), Registry(), SupervisorSettings(workers=1))
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():  # a loop whose cancel was lost: it goes on
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    async def obliging() -> None:
        await asyncio.Event().wait()

    sup._side_task("stubborn", stubborn)
    sup._side_task("obliging", obliging)
    await asyncio.sleep(0)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="jobd.supervisor"):
        await sup._stop_side_tasks()
    assert time.monotonic() - began < 5
    (record,) = [r for r in caplog.records if "did not stop" in r.getMessage()]
    assert record.tasks == ["jobd-stubborn"]  # type: ignore[attr-defined]
    (obliging_task,) = [t for t in sup._side_tasks if t.get_name() == "jobd-obliging"]
    assert obliging_task.cancelled()
    released.set()
    await asyncio.gather(*sup._side_tasks, return_exceptions=True)
