"""The workflow scenario: one fan-out/fan-in of --workflow-jobs no-op jobs (10,000): a root,
the jobs submitted `after` it, and one job `after` all of those, submitted before the daemon
starts and drained by its workers like the burn-down; its rate against the plain burn-down's
in the same run (target: at least half of it).  The root's end releases every middle job in
one statement; each middle job's end takes one off the last job's count."""

from __future__ import annotations

from harness import SUBMIT_CHUNK, BenchStore, expect_completed, progress
from scenarios import Figure, MakeStore, Run, Target, drain_metered

from jobd.domain import NewJob

TYPE = "bench_noop"


async def fill_workflow(store: BenchStore, jobs: int) -> None:
    """The root, jobs - 2 after it, and one after all of those, through the store's own
    submit_many (what the control server's calls)."""
    jobd_store = store.jobd_store()
    await jobd_store.open()
    try:
        await jobd_store.migrate()
        root = (await jobd_store.submit(NewJob(TYPE))).job.id
        middle: list[int] = []
        for start in range(0, jobs - 2, SUBMIT_CHUNK):
            count = min(SUBMIT_CHUNK, jobs - 2 - start)
            batch = await jobd_store.submit_many([NewJob(TYPE, after=(root,))] * count)
            middle += [s.job.id for s in batch]
        await jobd_store.submit(NewJob(TYPE, after=tuple(middle)))
    finally:
        await jobd_store.close()


async def workflow(run: Run, kind: str, make: MakeStore) -> list[Figure]:
    jobs = run.sizes.workflow_jobs
    with make("workflow") as store:
        await fill_workflow(store, jobs)
        store.checkpoint()
        found, _, _ = drain_metered(run, store, jobs, f"workflow-{kind}")
    expect_completed(found, jobs, "workflow")
    progress(f"workflow: {found.rate:,.0f} jobs/s over {found.seconds:.1f} s")
    figures = [
        Figure(
            "workflow",
            kind,
            f"{jobs:,} no-op jobs as one fan-out/fan-in (1 → {jobs - 2:,} → 1):"
            " first claim → last completion",
            found.rate,
            "jobs/s",
        )
    ]
    plain = run.burn_down.get(kind)
    if plain is not None:
        figures.append(
            Figure(
                "workflow",
                kind,
                "its rate ÷ the plain burn-down's, same run",
                found.rate / plain.rate,
                "ratio",
                Target(">=", 0.5),
            )
        )
    return figures
