"""A submit the supervisor hears of starts its claim from the notification's callback, not on
the loop's next turn (docs/adr/0041): one hop less between a submit and its start."""

from __future__ import annotations

from jobd.handlers import Registry
from jobd.handlers.registration import HandlerSpec
from jobd.store import Notification, NotificationKind
from jobd.store.memory import MemoryStore
from jobd.supervisor.loop import Supervisor
from jobd.supervisor.settings import SupervisorSettings


def supervisor() -> Supervisor:
    registry = Registry()
    registry.register(HandlerSpec("noop", lambda ctx, payload: None))
    return Supervisor(MemoryStore(), registry, SupervisorSettings(workers=1))


async def test_a_submit_heard_starts_the_claim_at_once() -> None:
    sup = supervisor()
    assert not sup.dispatch.claim_in_flight()
    sup._on_notification(Notification(NotificationKind.SUBMITTED, queue="default"))
    assert sup.dispatch.claim_in_flight()  # the loop has not turned: no await since
    assert sup.dispatch.claiming is not None
    await sup.dispatch.claiming  # no worker takes work yet: it claims nothing


async def test_a_draining_supervisor_starts_no_claim() -> None:
    sup = supervisor()
    sup.draining = True
    sup._on_notification(Notification(NotificationKind.SUBMITTED, queue="default"))
    assert not sup.dispatch.claim_in_flight()
