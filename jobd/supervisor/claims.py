"""The claim itself: one statement for the node's free slots, or, with queue concurrency
limits (`queues.<name>.concurrency`), one per limited queue within its limit on this node and
one for every other queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from jobd.domain import Job
from jobd.store import Store


async def claim(
    store: Store,
    node: str,
    wanted: int,
    *,
    lease: float,
    types: list[str] | None,
    limits: dict[str, int],
    held: Callable[[], Iterable[Job]],
) -> list[Job]:
    """Up to `wanted` jobs leased to `node`; `held`: the jobs the node holds already, which
    count against their queue's limit (asked for only when there are limits)."""
    if not limits:
        return await store.claim(node, wanted, lease=lease, types=types)
    jobs: list[Job] = []
    running = Counter(job.queue for job in held())
    for queue, limit in limits.items():
        room = min(limit - running[queue], wanted - len(jobs))
        if room > 0:
            jobs += await store.claim(node, room, lease=lease, queues=[queue], types=types)
    room = wanted - len(jobs)
    if room > 0:
        jobs += await store.claim(node, room, lease=lease, types=types, exclude_queues=list(limits))
    return jobs
