"""`jobd run`: put the configured store, handlers and supervisor together and run them.

Threads (docs/adr/0022, 0036): the supervisor on the main thread's event loop; the store on
the I/O thread's; the control server next to it, or, on PostgreSQL, on a control thread of its
own with a store (a pool) of its own, so that a flood of requests does not delay the
supervisor's writes.  The supervisor reaches the store through a StoreProxy, the control
server the supervisor through a Crossing, each call under a deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import functools
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobd import garbage_collection
from jobd.config import Config, mask_url
from jobd.control import OwnThread
from jobd.control_server import ControlServer
from jobd.control_socket import ControlSocketError, check_control_socket
from jobd.domain import Backoff
from jobd.errors import Unavailable
from jobd.handlers import Registry
from jobd.http.child import HttpChild
from jobd.logs import setup_logging
from jobd.samples import settings as handler_settings
from jobd.schedules import ScheduleError
from jobd.schedules.registry import declared, node_schedules
from jobd.startup import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_UNAVAILABLE,
    StartupError,
    check_handlers,
    handler_modules,
)
from jobd.store import Store, create_store
from jobd.store.postgres import PostgresStore
from jobd.store.postgres.connections import SessionTimeouts
from jobd.store.sqlite import SQLiteStore
from jobd.store.sqlite.lock import NodeLockHeld
from jobd.supervisor import BootError, Supervisor, SupervisorSettings, new_node_id
from jobd.supervisor.crossing import Crossing
from jobd.supervisor.event_loop import new_event_loop
from jobd.supervisor.finished_relay import FinishedRelay
from jobd.supervisor.home_loop import HomeLoop
from jobd.supervisor.io_thread import IoThread
from jobd.supervisor.store_proxy import StoreProxy
from jobd.supervisor.submit_claims import SubmitClaims

log = logging.getLogger("jobd.daemon")

#: A store call of the supervisor's is given up this long after database.statement_timeout
#: (by then the server should have cancelled the statement itself).
STORE_CALL_GRACE = 2.0
#: The control server's calls onto the supervisor's loop (which never waits for I/O).
SUPERVISOR_TIMEOUT = 2.0
#: The control server's start and stop on the I/O thread (its stop gives requests 2 s).
SERVER_HOOK_TIMEOUT = 3.0
#: Closing the store at exit; a database that hangs is not waited for longer.
STORE_CLOSE_TIMEOUT = 1.0
#: The control server's PostgreSQL sessions are named so (pg_stat_activity), the
#: supervisor's "jobd".
CONTROL_APPLICATION = "jobd-control"


def supervisor_settings(config: Config) -> SupervisorSettings:
    jobs, workers = config.jobs, config.workers
    return SupervisorSettings(
        workers=workers.count,
        handler_modules=handler_modules(config),
        prefetch=workers.prefetch,
        max_jobs_per_worker=workers.max_jobs_per_worker,
        max_worker_memory=workers.max_memory,
        max_result_bytes=jobs.max_result_bytes,
        max_crashes=workers.max_crashes,
        lease_seconds=jobs.lease_seconds,
        heartbeat_seconds=jobs.heartbeat_seconds,
        poll_interval=jobs.poll_interval,
        default_timeout=jobs.default_timeout,
        backoff=Backoff(jobs.backoff_base, jobs.backoff_factor, jobs.backoff_max),
        queue_limits={
            name: q.concurrency for name, q in config.queues.items() if q.concurrency is not None
        },
        fleet_limits={name: q.fleet for name, q in config.queues.items() if q.fleet},
        retention=jobs.retention,
        prune_interval=jobs.prune_interval,
        drain_timeout=config.shutdown.drain_timeout,
        kill_grace=config.shutdown.kill_grace,
        job_events=config.logging.job_events,
        schedules=tuple(config.schedules.values()),
        default_max_attempts=jobs.default_max_attempts,
    )


def worker_setup(config: Config, node: str) -> Callable[[], None]:
    """What every worker process runs first: its logging and, when sample handlers are
    enabled, the settings they read, since workers are not given the Config
    (docs/adr/0012-handler-settings.md)."""
    setup = functools.partial(setup_logging, config.logging.level, config.logging.format, node)
    if not config.handlers.samples:
        return setup  # nothing to hand over: spare each worker importing jobd.config
    return handler_settings.WorkerSetup(setup, handler_settings.HandlerSettings.from_config(config))


def open_store(config: Config, **options: Any) -> Store:
    db = config.database
    return create_store(
        db.url,
        schema=db.schema,
        min_size=db.pool_min,
        max_size=db.pool_max,
        connect_timeout=db.connect_timeout,
        session=SessionTimeouts(db.statement_timeout, db.network_timeout),
        **options,
    )


#: Where the supervisor's store runs: the I/O thread, or the supervisor's own loop.
StorePlace = IoThread | HomeLoop


@dataclass
class ControlSide:
    """Where the control server runs and the store it uses: the I/O thread and the
    supervisor's store, or (PostgreSQL) a thread and a store of its own (docs/adr/0036)."""

    thread: StorePlace
    store: Store
    relay: FinishedRelay | None = None  # the supervisor's finishes, on PostgreSQL

    @property
    def apart(self) -> bool:
        return isinstance(self.store, PostgresStore)

    @classmethod
    def beside(cls, place: StorePlace, store: Store, config: Config) -> ControlSide:
        if not isinstance(store, PostgresStore):
            return cls(place, store)  # one SQLite file, one connection: one thread serves both
        own = open_store(config, listen=False, application_name=CONTROL_APPLICATION)
        assert isinstance(own, PostgresStore)
        store.pool.share_echoes(own.pool)  # its NOTIFYs are announced to the supervisor
        return cls(IoThread("jobd-control").start(), own)

    def relay_finished(self, store: Store) -> None:
        """The supervisor's finishes, announced to the control server's `wait`s."""
        if self.apart:
            self.relay = FinishedRelay(self.thread.loop, self.store.announce)
            store.add_listener(self.relay)

    async def open(self) -> None:
        if self.apart:
            await self.thread.run(self.store.open())

    async def close(self) -> None:
        if self.apart:
            await _close_store(self.thread, self.store)
            assert isinstance(self.thread, IoThread)  # its own, started by beside
            self.thread.stop()


async def prepare_store(store: Store, config: Config, migrate: bool) -> None:
    """Open the store and make sure its schema is current (the embedded stores migrate
    themselves; PostgreSQL only with --migrate, since several nodes and an application may
    share that database and a schema change there deserves a deliberate step)."""
    try:
        await store.open()
        pending = await store.pending_migrations()
        if pending and (migrate or store.kind != "postgres"):
            for name in await store.migrate():
                log.info("applied migration", extra={"migration": name, "store": store.kind})
        elif pending:
            raise StartupError(
                f"the database schema is out of date (pending: {', '.join(pending)});"
                " run `jobd migrate` first, or start with `jobd run --migrate`",
                EXIT_CONFIG,
            )
    except Unavailable as exc:
        raise database_unavailable(config, exc) from None


def database_unavailable(config: Config, exc: Unavailable) -> StartupError:
    url = mask_url(config.database.url)
    return StartupError(f"cannot use the database {url}: {exc.message}", EXIT_UNAVAILABLE)


def check_socket_free(config: Config) -> None:
    try:
        check_control_socket(config.control.socket, config.control.socket_group)
    except ControlSocketError as exc:
        raise StartupError(str(exc), exc.exit_code) from None


def lock_for_node(store: Store, config: Config) -> None:
    """A SQLite file serves one node: take it for this daemon, or refuse to start
    (docs/adr/0025-one-node-per-sqlite-file.md)."""
    if not isinstance(store, SQLiteStore):
        return
    try:
        store.lock_for_node(config.control.socket)
    except NodeLockHeld as exc:
        raise StartupError(str(exc), EXIT_FAILURE) from None
    except Unavailable as exc:
        raise database_unavailable(config, exc) from None


async def serve(config: Config, migrate: bool = False) -> int:
    node = new_node_id()
    setup_logging(config.logging.level, config.logging.format, node)
    for warning in config.warnings:  # a deprecated setting, once at start
        log.warning(warning)
    registry = check_handlers(config)
    try:
        schedules = node_schedules(config.schedules, declared, registry.types())
    except ScheduleError as exc:
        raise StartupError(str(exc), EXIT_CONFIG) from exc
    config = dataclasses.replace(config, schedules=schedules)
    check_socket_free(config)  # a daemon that will be refused must not touch the database
    store = open_store(config)
    place = store_place(store)
    try:
        return await _serve_on(place, store, config, node, registry, migrate)
    finally:
        if isinstance(place, IoThread):
            place.stop()


async def _serve_on(
    place: StorePlace, store: Store, config: Config, node: str, registry: Registry, migrate: bool
) -> int:
    """The store opened and closed where it runs (PostgreSQL: on this loop, ADR 0040; SQLite
    and memory: on the I/O thread), the control server's on its own thread on PostgreSQL, the
    supervisor run on this loop."""
    side = ControlSide.beside(place, store, config)
    try:
        lock_for_node(store, config)
        await place.run(prepare_store(store, config, migrate))
        await _open_control_store(side, config)
        side.relay_finished(store)
        deadline = config.database.statement_timeout + STORE_CALL_GRACE
        announcers = (side.store,) if side.apart else ()
        proxy = StoreProxy(store, place.crossing(deadline), asyncio.get_running_loop(), announcers)
        supervisor = Supervisor(
            proxy,
            registry,
            supervisor_settings(config),
            node=node,
            setup_worker_logging=worker_setup(config, node),
        )
        proxy.on_answer = supervisor.health.answered
        on_supervisor = Crossing(asyncio.get_running_loop(), SUPERVISOR_TIMEOUT, "supervisor")
        on_io = side.thread.crossing(SERVER_HOOK_TIMEOUT, "control server")
        thread = OwnThread(
            side.store, on_supervisor, lambda hook: functools.partial(on_io.await_, hook)
        )
        try:
            # Bound now, so a second daemon on the same socket stops before its workers start;
            # it serves from the supervisor's start to its stop (hooks registered here).
            control = ControlServer.install(supervisor, config, thread)
        except ControlSocketError as exc:
            raise StartupError(str(exc), exc.exit_code) from None
        supervisor.events.feed = control.feed  # job changes for `subscribe`
        control.operations.submitting = SubmitClaims(supervisor, on_supervisor.post).submit
        if side.relay is not None:  # only the finishes some `wait` waits for cross
            side.relay.wanted = control.operations.waiters.__contains__
        # With http.listen set, the HTTP shim runs as a child process for as long as the
        # supervisor does (jobd/http/child.py).
        HttpChild.install(supervisor, config, node)
        # Started: what exists now lives as long as the node, and no collection walks it again.
        garbage_collection.settle(collect_first=True)
        try:
            return await supervisor.run()
        except BootError as exc:
            raise StartupError(str(exc)) from exc
        finally:
            control.close()
    finally:
        await side.close()
        await _close_store(place, store)


def store_place(store: Store) -> StorePlace:
    """Where the supervisor's store runs: PostgreSQL's, async, on the supervisor's own loop
    (docs/adr/0040); a store whose calls block (SQLite), on the I/O thread, started here."""
    if isinstance(store, PostgresStore):
        return HomeLoop(asyncio.get_running_loop())
    return IoThread().start()


async def _open_control_store(side: ControlSide, config: Config) -> None:
    try:
        await side.open()
    except Unavailable as exc:
        raise database_unavailable(config, exc) from None


async def _close_store(io: StorePlace, store: Store) -> None:
    try:
        await io.run(store.close(), STORE_CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("the store did not close in time; its connections are left behind")


def run(config: Config, migrate: bool = False) -> int:
    """Run the daemon until it has drained; return its exit status."""
    # A node that seems stuck can be asked where each thread is, without a debugger and without
    # stopping it: `kill -USR1 <pid>` prints every thread's Python stack to stderr.  Written by
    # the interpreter itself, so it answers even when the event loop is blocked.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(config, migrate))
