"""The relay of the supervisor's finishes to the control server's thread (docs/adr/0036): a
`wait` on that thread hears every job that finished, on its own loop, and a burst of finishes
costs one crossing, not one per job."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator

import pytest

from jobd.store import Notification, NotificationKind
from jobd.store.memory import MemoryStore
from jobd.supervisor.finished_relay import FinishedRelay
from jobd.supervisor.io_thread import IoThread
from jobd.supervisor.store_proxy import StoreProxy


@pytest.fixture
def control_thread() -> Iterator[IoThread]:
    thread = IoThread("jobd-control-test").start()
    yield thread
    thread.stop()


def finished(job_id: int) -> Notification:
    return Notification(NotificationKind.FINISHED, job_id=job_id)


def test_a_burst_of_finishes_crosses_once_and_only_finishes(control_thread: IoThread) -> None:
    batches: list[tuple[str, list[Notification]]] = []
    done = threading.Event()

    def deliver(notifications: Iterable[Notification]) -> None:
        batches.append((threading.current_thread().name, list(notifications)))
        done.set()

    relay = FinishedRelay(control_thread.loop, deliver)
    gate = threading.Event()  # the control loop is busy while the burst arrives
    control_thread.loop.call_soon_threadsafe(gate.wait, 10)
    relay(Notification(NotificationKind.SUBMITTED, queue="q"))
    for job_id in range(1, 101):
        relay(finished(job_id))
    relay(Notification(NotificationKind.CANCEL, job_id=7))
    gate.set()

    assert done.wait(10)
    assert batches == [("jobd-control-test", [finished(i) for i in range(1, 101)])]


def test_only_the_finishes_a_wait_waits_for_cross(control_thread: IoThread) -> None:
    heard: list[Notification] = []
    arrived = threading.Event()

    def deliver(notifications: Iterable[Notification]) -> None:
        heard.extend(notifications)
        arrived.set()

    relay = FinishedRelay(control_thread.loop, deliver)
    relay.wanted = {2, 3}.__contains__
    for job_id in range(1, 6):
        relay(finished(job_id))
    assert arrived.wait(10)
    assert heard == [finished(2), finished(3)]


def test_later_finishes_cross_again(control_thread: IoThread) -> None:
    heard: list[Notification] = []
    arrived = threading.Condition()

    def deliver(notifications: Iterable[Notification]) -> None:
        with arrived:
            heard.extend(notifications)
            arrived.notify_all()

    relay = FinishedRelay(control_thread.loop, deliver)
    for job_id in (1, 2, 3):
        relay(finished(job_id))
        with arrived:
            assert arrived.wait_for(lambda job_id=job_id: len(heard) == job_id, 10)
    assert heard == [finished(1), finished(2), finished(3)]


async def test_the_proxy_relays_what_another_store_announces(
    control_thread: IoThread,
) -> None:
    """The control server's store (another thread's) announces a submit: the supervisor,
    listening through its proxy, hears it on its own loop; finishes it does not act on."""
    supervisor_store, control_store = MemoryStore(), MemoryStore()
    proxy = StoreProxy(
        supervisor_store,
        control_thread.crossing(5.0),
        asyncio.get_running_loop(),
        announcers=(control_store,),
    )
    heard: list[Notification] = []
    proxy.add_listener(heard.append)
    said = Notification(NotificationKind.SUBMITTED, queue="mail")
    control_thread.loop.call_soon_threadsafe(control_store.announce, [finished(1), said])
    for _ in range(1000):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == [said]
    proxy.remove_listener(heard.append)
    control_store.announce([said])
    assert heard == [said]
