"""The peers' worker processes for bench/peers.py: one consumer of pgqueuer or one worker of
procrastinate, on the schema of the database it is given, running a no-op job type until
SIGTERM.

    python -m bench.peer_processes pgqueuer|procrastinate URL SCHEMA [--batch-size N]
        [--concurrency N] [--poll SECONDS]

Started from the checkout's root (so `bench.` resolves and bench/http.py does not shadow the
standard library's http); it imports nothing of the harness or of jobd, only the peer.  The
settings are each peer's documented throughput settings (docs/adr/0024-benchmark-peers.md says
which and why); bench/peers.py passes them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta
from typing import Any

NOOP = "bench_noop"


def search_path_options(schema: str) -> str:
    """A libpq `options` value that puts the peer's objects in its own schema."""
    return f"-c search_path={schema}"


async def pgqueuer_consumer(url: str, schema: str, batch_size: int, poll: float) -> None:
    """One pgqueuer QueueManager on a dedicated asyncpg connection (its docs: "Always use a
    direct asyncpg connection (not a pool) for the QueueManager"), woken by its LISTEN/NOTIFY,
    re-polling after `poll` seconds without a notification."""
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint(NOOP)
    async def noop(job: Any) -> None:
        return None

    _stop_on_sigterm(pgq.shutdown)
    await pgq.run(
        batch_size=batch_size,
        dequeue_timeout=timedelta(seconds=poll),
        # Unset, as in `pgq run`: no per-worker cap, so the dequeue query leaves out its
        # worker-budget part (no-op jobs never pile up in a worker).
        max_concurrent_tasks=None,
        # Keep pgqueuer_log as written: the benchmark reads its completion times.
        log_aggregation_interval=timedelta(0),
    )
    await conn.close()


async def procrastinate_worker(url: str, schema: str, concurrency: int, poll: float) -> None:
    """One procrastinate worker with LISTEN/NOTIFY on (its default) and `concurrency` jobs at
    a time (the tasks are async no-ops, which its docs allow to run concurrently)."""
    from procrastinate import App, PsycopgConnector

    connector = PsycopgConnector(conninfo=url, kwargs={"options": search_path_options(schema)})
    app = App(connector=connector)

    @app.task(name=NOOP)
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.run_worker_async(
            concurrency=concurrency,
            listen_notify=True,
            fetch_job_polling_interval=poll,
            install_signal_handlers=True,  # SIGTERM: finish the jobs in hand, then stop
        )


def _stop_on_sigterm(event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, event.set)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("peer", choices=("pgqueuer", "procrastinate"))
    p.add_argument("url")
    p.add_argument("schema")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--poll", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.peer == "pgqueuer":
        asyncio.run(pgqueuer_consumer(args.url, args.schema, args.batch_size, args.poll))
    else:
        asyncio.run(procrastinate_worker(args.url, args.schema, args.concurrency, args.poll))


if __name__ == "__main__":
    main()
