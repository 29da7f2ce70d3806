"""Workflows as the stores keep them: jobs submitted `after` other jobs, and what a parent's
end, a cancel or an operator's retry does to its dependents (docs/adr/0027-workflows.md).

The domain (jobd.domain) decides each dependent's transition; this module walks the edges.
The memory and SQLite stores run it over their own rows (a `Graph`); the PostgreSQL store does
the same walk in SQL (migrations/postgres/0005_workflows.sql), and the contract tests in
tests/store/test_workflow_contract.py hold the three to one behaviour.

Each walk touches the dependents of the jobs that changed, never the other waiting jobs: a
waiting job counts its unfinished parents (`Job.pending_parents`), each parent's end takes one
off, and the job is pending when none is left."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from jobd.domain import BatchRef, Job, NewJob, State, parent_failed_error
from jobd.errors import InvalidParams


class Graph(Protocol):
    """A store's jobs and edges, inside one of its transactions.  `job` need not load the
    job's parents (a fan-in's child has thousands): the walks ask `parents_of` when they
    need them."""

    def job(self, job_id: int) -> Job | None: ...

    def children_of(self, job_id: int) -> Sequence[int]: ...

    def parents_of(self, job_id: int) -> Sequence[int]: ...

    def save(self, job: Job) -> None: ...


# --- a batch: parents named by position, checked before anything is written -------------------


def where(index: int, count: int) -> str:
    """The prefix of a field of the batch's job `index` in an error ("" for a single job)."""
    return f"jobs[{index}]." if count > 1 else ""


def refusal(index: int, count: int, field: str, problem: str) -> InvalidParams:
    """InvalidParams about the batch's job `index` (its `index` in the data, as the control
    server's own refusals of a batch's job carry it)."""
    data = {"index": index} if count > 1 else {}
    return InvalidParams.of_field(where(index, count) + field, problem, **data)


def batch_order(specs: Sequence[NewJob]) -> list[int]:
    """The positions of a batch's jobs, each after the jobs of the batch it names in `after`
    (BatchRef); InvalidParams naming the field for a reference out of the batch or a cycle."""
    count = len(specs)
    refs: list[list[int]] = []
    for index, spec in enumerate(specs):
        mine = []
        for position, ref in enumerate(spec.after):
            if isinstance(ref, BatchRef):
                if not 0 <= ref.position < count or ref.position == index:
                    problem = "names no other job of the batch"
                    raise refusal(index, count, f"after[{position}]", problem)
                mine.append(ref.position)
        refs.append(mine)
    order: list[int] = []
    state = [0] * count  # 0 unseen, 1 on the current path, 2 placed
    for root in range(count):
        if state[root]:
            continue
        stack: list[tuple[int, Iterator[int]]] = [(root, iter(refs[root]))]
        state[root] = 1
        while stack:
            node, parents = stack[-1]
            parent = next(parents, None)
            if parent is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state[parent] == 1:
                raise refusal(node, count, "after", f"makes a cycle through jobs[{parent}]")
            elif state[parent] == 0:
                state[parent] = 1
                stack.append((parent, iter(refs[parent])))
    return order


def resolve_after(spec: NewJob, ids: Sequence[int | None]) -> tuple[int, ...]:
    """`spec.after` as job ids, ascending: a BatchRef is the id its job got in the batch."""
    out = set()
    for parent in spec.after:
        if isinstance(parent, BatchRef):
            resolved = ids[parent.position]
            if resolved is None:  # pragma: no cover - batch_order placed it first
                raise RuntimeError(f"batch job {parent.position} has no id yet")
            out.add(resolved)
        else:
            out.add(parent)
    return tuple(sorted(out))


def unknown_parent(spec: NewJob, missing: int, index: int, count: int) -> InvalidParams:
    position = next(
        (i for i, p in enumerate(spec.after) if not isinstance(p, BatchRef) and p == missing), 0
    )
    return refusal(index, count, f"after[{position}]", f"job {missing} not found")


# --- the walks ---------------------------------------------------------------------------------


def wait_for_parents(graph: Graph, job: Job, now: datetime) -> Job:
    """A new job with `job.parents` set: waiting for the unfinished ones, pending if none,
    canceled at once if one already failed and it cancels on that.  Saved."""
    parents = [graph.job(parent_id) for parent_id in job.parents]
    unfinished = sum(1 for p in parents if p is not None and not p.state.terminal)
    failed = next(((p.id, p.state) for p in parents if p is not None and _ended_badly(p)), None)
    job = job.initial_wait(unfinished, failed, now)
    graph.save(job)
    return job


def parents_ended(graph: Graph, ended: Iterable[Job], now: datetime) -> list[Job]:
    """Jobs that just reached a terminal state: each waiting dependent takes them off its
    count (pending at zero) or, if one did not complete and it cancels on that, ends canceled,
    which its own dependents then learn in turn.  Returns the dependents changed."""
    queue = deque(job for job in ended if job.state.terminal)
    changed: dict[int, Job] = {}
    while queue:
        parent = queue.popleft()
        for child_id in graph.children_of(parent.id):
            child = graph.job(child_id)
            if child is None or child.state is not State.WAITING:
                continue
            child = child.parent_ended(parent.id, parent.state, now)
            graph.save(child)
            changed[child.id] = child
            if child.state.terminal:
                queue.append(child)
    return list(changed.values())


def parent_reopened(
    graph: Graph, reopened: Job, now: datetime, skip: Collection[int] = ()
) -> list[Job]:
    """A job left its terminal state (an operator's retry): its waiting dependents wait for it
    again, and those its failure had canceled (ParentFailed naming it) wait again too, and so
    on down; one that another failed parent would cancel stays canceled, naming that one.
    The jobs of `skip` are left alone.  Returns the dependents changed."""
    queue = deque([reopened])
    changed: dict[int, Job] = {}
    while queue:
        parent = queue.popleft()
        for child_id in graph.children_of(parent.id):
            child = graph.job(child_id)
            if child is None or child_id in skip:
                continue
            if child.state is State.WAITING:
                child = child.parent_reopened(now)
            elif child.canceled_by_parent() == parent.id:
                child = _restored(graph, child, now)
                if child.state is State.WAITING:
                    queue.append(child)
            else:
                continue
            graph.save(child)
            changed[child.id] = child
    return list(changed.values())


def _restored(graph: Graph, child: Job, now: datetime) -> Job:
    parents = [p for p in (graph.job(i) for i in graph.parents_of(child.id)) if p is not None]
    failed = next((p for p in parents if _ended_badly(p)), None)
    if failed is not None and child.on_parent_failure == "cancel":
        return child.rename_failure(parent_failed_error(failed.id, failed.state), now)
    return child.parent_retried(sum(1 for p in parents if not p.state.terminal), now)


def retry_all(graph: Graph, jobs: Sequence[Job], now: datetime) -> tuple[list[Job], list[Job]]:
    """An operator's retry of `jobs` (IllegalTransition unless each is failed or canceled):
    all leave their end first, then each waits for its unfinished parents (the others of
    `jobs` among them), and the dependents of each wait for it again (parent_reopened, which
    leaves `jobs` alone: they were counted afresh).  Returns the jobs afterwards, and the
    dependents changed."""
    for job in jobs:
        graph.save(job.operator_retry(now))
    after = []
    for job in jobs:
        retried = job.operator_retry(now, unfinished_parents(graph, job))
        graph.save(retried)
        after.append(retried)
    skip = {job.id for job in jobs}
    dependents: list[Job] = []
    for job in after:
        dependents += parent_reopened(graph, job, now, skip)
    return after, dependents


def needed(graph: Graph, job: Job) -> bool:
    """Whether a finished job must stay: a dependent of it has not finished (it may still wait
    for it, or read its result).  Pruning and purging leave such a job."""
    children = (graph.job(i) for i in graph.children_of(job.id))
    return any(child is not None and not child.state.terminal for child in children)


def unfinished_parents(graph: Graph, job: Job) -> int:
    parents = (graph.job(i) for i in graph.parents_of(job.id))
    return sum(1 for p in parents if p is not None and not p.state.terminal)


def _ended_badly(job: Job) -> bool:
    return job.state in (State.FAILED, State.CANCELED)


def connected(graph: Graph, start: int) -> set[int]:
    """Every job linked to `start` through `after`, in either direction (`list --workflow`)."""
    seen = {start}
    queue = deque([start])
    while queue:
        job_id = queue.popleft()
        for other in (*graph.children_of(job_id), *graph.parents_of(job_id)):
            if other not in seen:
                seen.add(other)
                queue.append(other)
    return seen
