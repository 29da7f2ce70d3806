"""Every value a client controls reaches every store as a bound parameter, never as SQL text
(docs/guarantees.md, "Security"): SQL metacharacters and placeholder syntax in the type, queue,
payload, correlation id, idempotency key, result, error and list filters are stored and found
exactly as given, match nothing else, and leave the table whole."""

from __future__ import annotations

import pytest

from jobd.domain import ErrorInfo, NewJob, State
from jobd.store import JobFilter, Outcome, OutcomeKind, Store

NODE = "node'; DROP TABLE jobs; --"  # the node id is bound too
HOSTILE = [
    "x'; DROP TABLE jobs; --",
    "x' OR '1'='1",
    'x" OR "1"="1',
    "x\\'; SELECT 1; --",
    "%s %(type)s %% %(",
    "? ?1 :name $1 @p",
    "/* x */ -- y",
    "`x`; [x]; {x}",
    "x) UNION SELECT * FROM jobs --",
    "ünïcödé ✓ 😀",
    "jobs",
    "%",
    "_",
]


@pytest.mark.parametrize("text", HOSTILE)
async def test_metacharacters_in_every_field_are_data(store: Store, text: str) -> None:
    bystander = (await store.submit(NewJob("echo", {"n": 0}))).job
    spec = NewJob(
        text,
        {text: text, "nested": [text, {"k": text}]},
        queue=text,
        idempotency_key=text,
        correlation_id=text,
    )
    job = (await store.submit(spec)).job
    again = await store.submit(spec)  # the key finds the job it holds, and only it
    assert not again.created and again.job.id == job.id

    got = await store.get(job.id)
    assert (got.type, got.queue, got.correlation_id, got.idempotency_key) == (text,) * 4
    assert got.payload == {text: text, "nested": [text, {"k": text}]}

    for filters in (
        JobFilter(type=text),
        JobFilter(queue=text),
        JobFilter(type=text, queue=text, states=(State.PENDING,)),
    ):
        assert [j.id for j in (await store.list(filters)).jobs] == [job.id], filters
    # LIKE-style wildcards and prefixes match literally, not as patterns
    assert (await store.list(JobFilter(type=text + "%"))).jobs == []
    assert (await store.list(JobFilter(queue=text[:1]))).jobs == [] or text[:1] == text

    claimed = await store.claim(NODE, 5, lease=30, queues=[text], types=[text])
    assert [j.id for j in claimed] == [job.id]
    assert await store.heartbeat(NODE, 30, [job.id]) == []
    error = ErrorInfo(text, text, text)
    applied = await store.finish(NODE, [Outcome(job.id, 1, OutcomeKind.FAILED, error=error)])
    assert applied == {job.id: State.FAILED}
    failed = await store.get(job.id)
    assert failed.last_error == error
    assert (await store.retry(job.id)).state is State.PENDING
    [again_claimed] = await store.claim(NODE, 1, lease=30, queues=[text])
    result = {text: [text]}
    applied = await store.finish(
        NODE, [Outcome(job.id, again_claimed.attempts, OutcomeKind.COMPLETED, result=result)]
    )
    assert applied == {job.id: State.COMPLETED}
    assert (await store.get(job.id)).result == result

    # The rest of the table is untouched, and still there.
    assert (await store.get(bystander.id)).state is State.PENDING
    counts = (await store.counts()).by("queue")
    assert counts[text] == {"completed": 1} and counts["default"] == {"pending": 1}
    assert len((await store.list()).jobs) == 2
