"""What only the SQLite store promises: a private WAL file that survives restarts, migrations
that run once, several processes sharing one file without claiming a job twice, and driver
errors turned into jobd's errors.  The behaviour every store shares is in test_contract.py."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from jobd import migrations
from jobd.config.errors import ConfigError
from jobd.config.paths import default_database_url
from jobd.domain import ErrorInfo, NewJob, State
from jobd.errors import InvalidParams, Unavailable
from jobd.schedules import parse_schedule
from jobd.store import Outcome, OutcomeKind, create_store
from jobd.store.sqlite import SQLiteStore, statements
from jobd.store.sqlite.lock import Holder, NodeLockHeld
from tests.eventually import eventually as poll_until

ROOT = Path(__file__).resolve().parents[2]
NODE = "node-a"
LEASE = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobd" / "jobd.db"


@pytest.fixture
async def opened(db_path: Path) -> AsyncIterator[Callable[..., object]]:
    """A factory of open, migrated stores on `db_path`; all are closed at the end."""
    stores: list[SQLiteStore] = []

    async def make(**options: object) -> SQLiteStore:
        store = SQLiteStore(db_path, **options)  # type: ignore[arg-type]
        stores.append(store)
        await store.open()
        await store.migrate()
        return store

    yield make
    for store in stores:
        await store.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- the file -------------------------------------------------------------------------------


async def test_creates_a_private_directory_and_file(db_path: Path, opened) -> None:
    assert not db_path.parent.exists()
    await opened()
    assert db_path.is_file()
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


async def test_wal_mode_and_synchronous(db_path: Path, opened) -> None:
    store = await opened()
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    full = await store.db.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert full == 2  # FULL is the default
    normal_store = await opened(synchronous="normal")
    assert await normal_store.db.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1


def test_synchronous_must_be_full_or_normal(db_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(db_path, synchronous="OFF")


async def test_create_store_url_and_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    store = create_store(f"sqlite://{tmp_path / 'x.db'}", clock=clock)
    assert isinstance(store, SQLiteStore) and store.kind == "sqlite"
    async with store:
        await store.migrate()
        job = (await store.submit(NewJob("t"))).job
        assert job.created_at == clock.now == (await store.get(job.id)).created_at


# --- migrations --------------------------------------------------------------------------------


async def test_migrate_once_then_no_op(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        every = [m.name for m in migrations.load("sqlite")]
        assert await store.pending_migrations() == every
        assert await store.migrate() == every
        assert await store.migrate() == []
        assert await store.pending_migrations() == []
    async with SQLiteStore(db_path) as store:
        assert await store.migrate() == []
    with raw(db_path) as conn:
        assert conn.execute("SELECT version, name FROM schema_migrations").fetchall() == [
            (m.version, m.name) for m in migrations.load("sqlite")
        ]


async def test_unmigrated_database_is_unavailable_with_a_hint(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        with pytest.raises(Unavailable, match="jobd migrate"):
            await store.get(1)


def test_statements_splits_a_script() -> None:
    script = "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT DEFAULT ';');\n\nSELECT 1;\n"
    assert list(statements(script)) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT DEFAULT ';');",
        "SELECT 1;",
    ]
    with pytest.raises(ValueError, match="unterminated"):
        list(statements("SELECT 1;\nSELECT 2\n-- trailing\n"))


# --- durability and the JSON/time round trip -----------------------------------------------------


async def test_submitted_job_is_still_pending_after_reopen(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.migrate()
        submitted = (await store.submit(NewJob("t", {"n": 1}, idempotency_key="k1"))).job
    async with SQLiteStore(db_path) as store:
        again = await store.get(submitted.id)
        assert again == submitted
        assert again.state is State.PENDING
        resubmitted = await store.submit(NewJob("t", {"n": 2}, idempotency_key="k1"))
        assert not resubmitted.created and resubmitted.job.id == submitted.id
        (claimed,) = await store.claim(NODE, 10, lease=LEASE)
        assert claimed.id == submitted.id


async def test_every_field_survives_close_and_reopen(db_path: Path) -> None:
    clock = FakeClock()
    plus_two = timezone(timedelta(hours=2))
    payload = {"s": "é✓\u2028", "nested": {"l": [1, 2.5, None, True, "x"]}, "big": 2**60}
    async with SQLiteStore(db_path, clock) as store:
        await store.migrate()
        failed, done = await store.submit_many(
            [
                NewJob(
                    "a",
                    payload,
                    queue="q",
                    priority=-3,
                    max_attempts=1,
                    run_at=datetime(2030, 1, 2, 5, 4, 4, 999999, tzinfo=plus_two),
                    timeout=12.5,
                    correlation_id="corr",
                ),
                NewJob("b", {}, timeout=30),
            ]
        )
        claimed = await store.claim(NODE, 2, lease=LEASE)
        assert [j.id for j in claimed] == [done.job.id, failed.job.id]  # priority 0 before -3
        clock.advance(1.25)
        error = ErrorInfo("ValueError", "bad input", "Traceback (most recent call last): ...")
        states = await store.finish(
            NODE,
            [
                Outcome(failed.job.id, 1, OutcomeKind.FAILED, error=error, retry_at=clock.now),
                Outcome(
                    done.job.id,
                    1,
                    OutcomeKind.COMPLETED,
                    result=[{"ok": True}, 3.0],
                    started_at=FakeClock().now,  # its worker's start, carried by the outcome
                ),
            ],
        )
        assert states == {failed.job.id: State.FAILED, done.job.id: State.COMPLETED}
        before = [await store.get(failed.job.id), await store.get(done.job.id)]
    async with SQLiteStore(db_path, clock) as store:
        after = [await store.get(failed.job.id), await store.get(done.job.id)]
    assert after == before
    f, d = after
    assert f.payload == payload and f.last_error == error and f.crashes == 0
    assert f.run_at == datetime(2030, 1, 2, 3, 4, 4, 999999, tzinfo=UTC)
    assert f.run_at.tzinfo is UTC and f.created_at == FakeClock().now
    assert failed.job.run_at.tzinfo is UTC  # submit answers as get will
    assert f.finished_at == clock.now and f.lease_owner is None
    assert d.result == [{"ok": True}, 3.0] and d.timeout == 30
    assert d.started_at == FakeClock().now and d.updated_at == clock.now


async def test_payload_that_is_not_json_is_refused_and_nothing_is_written(opened) -> None:
    store = await opened()
    with pytest.raises(InvalidParams, match="payload"):
        await store.submit_many([NewJob("t"), NewJob("t", {"x": object()})])
    with pytest.raises(InvalidParams, match="payload"):
        await store.submit(NewJob("t", {"x": float("nan")}))
    assert (await store.list()).jobs == []
    assert (await store.submit(NewJob("t"))).job.id == 1  # the store is still usable


async def test_ids_are_never_reused_after_pruning(opened) -> None:
    clock = FakeClock()
    store = await opened(clock=clock)
    await store.submit_many([NewJob("t") for _ in range(3)])
    claimed = await store.claim(NODE, 3, lease=LEASE)
    await store.finish(NODE, [Outcome(j.id, 1, OutcomeKind.COMPLETED) for j in claimed])
    clock.advance(3600)
    assert await store.prune(timedelta(minutes=1), batch=2) == 3
    assert (await store.submit(NewJob("t"))).job.id == 4


async def test_looking_jobs_up_by_lists_of_any_length_prepares_no_new_statement(opened) -> None:
    """The write-back reads its jobs by id, the submit by idempotency key, in lists as long as
    the batch.  The connection keeps its prepared statements by text, 256 of them: with one
    text per length, each write-back of a new size kept one more, and the supervisor grew by
    megabytes over a long run.  `sqlite_stmt` lists the statements a connection holds."""
    store = await opened()
    options = await store.db.run(lambda conn: conn.execute("PRAGMA compile_options").fetchall())
    if ("ENABLE_STMTVTAB",) not in options:
        pytest.skip("this SQLite has no sqlite_stmt table")

    async def prepared() -> int:
        count = "SELECT count(*) FROM sqlite_stmt"
        return int(await store.db.run(lambda conn: conn.execute(count).fetchone()[0]))

    async def round_of(size: int) -> None:
        keys = [f"key-{size}-{n}" for n in range(size)]
        await store.submit_many([NewJob("t", idempotency_key=key) for key in keys])
        await store.submit_many([NewJob("t", idempotency_key=key) for key in keys])  # found
        claimed = await store.claim(NODE, size, lease=LEASE)
        assert len(claimed) == size
        await store.finish(NODE, [Outcome(j.id, 1, OutcomeKind.COMPLETED) for j in claimed])

    for size in (1, 2):
        await round_of(size)
    before = await prepared()
    for size in range(3, 40):
        await round_of(size)
    assert await prepared() == before


# --- several stores and processes on one file ---------------------------------------------------


async def test_two_stores_on_one_file_never_claim_a_job_twice(opened) -> None:
    first, second = await opened(), await opened()
    await first.submit_many([NewJob("t") for _ in range(50)])
    results = await asyncio.gather(
        *(
            s.claim(f"node-{i}", 7, lease=LEASE)
            for _ in range(5)
            for i, s in enumerate((first, second))
        )
    )
    ids = [j.id for batch in results for j in batch]
    assert sorted(ids) == list(range(1, 51))
    assert await first.claim(NODE, 10, lease=LEASE) == []
    assert await second.claim(NODE, 10, lease=LEASE) == []


async def test_two_stores_submitting_at_once_get_distinct_ids(opened) -> None:
    first, second = await opened(), await opened()
    batches = await asyncio.gather(
        *(
            s.submit_many([NewJob("t") for _ in range(20)])
            for _ in range(5)
            for s in (first, second)
        )
    )
    ids = [sub.job.id for batch in batches for sub in batch]
    assert sorted(ids) == list(range(1, 201))
    assert [j.id for j in (await first.list(limit=1000)).jobs] == list(range(200, 0, -1))


async def test_two_stores_migrating_at_once_apply_each_migration_once(db_path: Path) -> None:
    first, second = SQLiteStore(db_path), SQLiteStore(db_path)
    try:
        applied = await asyncio.gather(first.migrate(), second.migrate())
        every = [m.name for m in migrations.load("sqlite")]
        # Each migration is its own write transaction, so the two take turns migration by
        # migration: which applies which is timing, but each is applied once and in order.
        assert sorted(name for names in applied for name in names) == every
        assert all(names == sorted(names) for names in applied)
    finally:
        await first.close()
        await second.close()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from jobd.store import Outcome, OutcomeKind
    from jobd.store.sqlite import SQLiteStore

    async def main(path, node):
        claimed = []
        async with SQLiteStore(path, busy_timeout=30) as store:
            while batch := await store.claim(node, 5, lease=60):
                claimed += [j.id for j in batch]
                await store.finish(
                    node, [Outcome(j.id, j.attempts, OutcomeKind.COMPLETED, result=node)
                           for j in batch])
        print(json.dumps(claimed))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_processes_sharing_the_file_run_each_job_exactly_once(db_path: Path, opened) -> None:
    store = await opened()
    total = 600
    for _ in range(total // 200):
        await store.submit_many([NewJob("t", {"i": i}) for i in range(200)])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            str(db_path),
            f"proc-{n}",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for n in range(4)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    assert [p.returncode for p in procs] == [0] * len(procs)
    per_process = {f"proc-{n}": json.loads(out) for n, (out, _) in enumerate(outputs)}
    ids = [i for claimed in per_process.values() for i in claimed]
    assert sorted(ids) == list(range(1, total + 1))  # every job, and none twice

    owners = {i: node for node, claimed in per_process.items() for i in claimed}
    jobs = (await store.list(limit=1000)).jobs
    assert len(jobs) == total
    for job in jobs:
        assert job.state is State.COMPLETED and job.attempts == 1
        assert job.result == owners[job.id]  # completed by the process that claimed it
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- errors -----------------------------------------------------------------------------------


async def test_held_write_lock_makes_writes_unavailable_but_reads_go_on(
    db_path: Path, opened
) -> None:
    store = await opened(busy_timeout=0.1)
    job = (await store.submit(NewJob("t"))).job
    blocker = raw(db_path)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable, match="locked"):
            await store.submit(NewJob("t"))
        assert (await store.get(job.id)) == job  # WAL: readers do not wait for the writer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await store.submit(NewJob("t"))).job.id == job.id + 1  # no transaction left open


async def test_closed_store_is_unavailable(opened) -> None:
    store = await opened()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(Unavailable, match="closed"):
        await store.get(1)


async def test_uncreatable_location_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    store = SQLiteStore(tmp_path / "a-file" / "jobd.db")
    try:
        with pytest.raises(Unavailable, match="cannot create"):
            await store.open()
    finally:
        await store.close()


async def test_the_event_loop_is_free_while_the_database_works(opened) -> None:
    """Database work happens on the store's own thread, never on the loop's."""
    store = await opened()
    thread = await store.db.run(lambda conn: threading.current_thread().name)
    assert thread.startswith("jobd-sqlite")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await store.db.run(lambda conn: time.sleep(0.05))
    task.cancel()
    assert ticks > 10


# --- which directories are created --------------------------------------------------------


async def test_a_url_in_a_missing_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    store = create_store(f"sqlite://{missing / 'x.db'}")
    try:
        with pytest.raises(ConfigError, match=f"the directory {missing} does not exist"):
            await store.open()
    finally:
        await store.close()
    assert not (tmp_path / "no").exists()


async def test_the_default_state_directory_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("STATE_DIRECTORY", "JOBD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    async with create_store(default_database_url()) as store:
        await store.migrate()
    assert stat.S_IMODE((tmp_path / "state" / "jobd").stat().st_mode) == 0o700


# --- one node per file ---------------------------------------------------------------------------


async def test_a_file_locked_for_a_node_refuses_a_second_node_naming_the_first(
    db_path: Path, opened
) -> None:
    first = await opened()
    first.lock_for_node(Path("/run/jobd/first.sock"))
    second = SQLiteStore(db_path)
    try:
        with pytest.raises(NodeLockHeld) as refused:
            second.lock_for_node(Path("/run/jobd/second.sock"))
    finally:
        await second.close()
    assert refused.value.holder == Holder(os.getpid(), "/run/jobd/first.sock")
    assert f"(it holds {db_path}.lock)" in str(refused.value)
    assert stat.S_IMODE(Path(f"{db_path}.lock").stat().st_mode) == 0o600
    await (await opened()).ping()  # tools that do not lock (jobd migrate) still open it


async def test_closing_the_store_frees_the_file_for_the_next_node(db_path: Path) -> None:
    for socket in ("/run/jobd/first.sock", "/run/jobd/second.sock"):
        async with SQLiteStore(db_path) as store:
            store.lock_for_node(Path(socket))
    assert Path(f"{db_path}.lock").read_bytes() == b""  # no stale pid to mislead anyone


async def test_locking_a_file_in_a_missing_directory_is_the_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    store = create_store(f"sqlite://{missing / 'x.db'}")
    try:
        assert isinstance(store, SQLiteStore)
        with pytest.raises(ConfigError, match=f"the directory {missing} does not exist"):
            store.lock_for_node(Path("/run/jobd/jobd.sock"))
    finally:
        await store.close()
    assert not (tmp_path / "no").exists()


# --- schedules ----------------------------------------------------------------------------------


async def test_a_trigger_at_the_instant_of_a_tick_does_not_stop_that_ticks_run(
    db_path: Path, opened
) -> None:
    """As on PostgreSQL (schema 7): a trigger's history row on a tick's instant does not make
    the tick's run collide with it."""
    store = await opened()
    schedule = parse_schedule("pulse", {"every": "1s", "type": "echo"})
    await store.enqueue_ticks(schedule)
    triggered = await store.trigger_schedule(schedule)
    tick = float(int(time.time()) + 1)
    with raw(db_path) as conn:
        conn.execute("UPDATE schedule_runs SET tick = ? WHERE job_id = ?", (tick, triggered.id))

    async def the_ticks_run() -> list[object]:
        jobs = (await store.enqueue_ticks(schedule)).jobs
        return [job for job in jobs if job.run_at.timestamp() == tick]

    (job,) = await poll_until(the_ticks_run, what="the run of the triggered tick", timeout=10.0)
    with raw(db_path) as conn:
        kinds = conn.execute("SELECT kind FROM schedule_runs WHERE tick = ? ORDER BY kind", (tick,))
        assert [row[0] for row in kinds] == ["tick", "trigger"]
    assert job.id != triggered.id


async def test_schema_5_rebuilds_jobs_keeping_rows_and_the_id_counter(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite cannot change the state CHECK in place: 0005 rebuilds the jobs table, and must
    keep its rows and its AUTOINCREMENT counter (an id is never handed out twice)."""

    every = migrations.load("sqlite")
    monkeypatch.setattr(migrations, "load", lambda dialect: every[:4])
    async with SQLiteStore(db_path) as store:
        await store.migrate()
    with raw(db_path) as conn:
        for job_type in ("a", "b"):
            conn.execute(
                "INSERT INTO jobs (type, max_attempts, run_at, created_at, updated_at)"
                " VALUES (?, 3, 0, 0, 0)",
                (job_type,),
            )
        conn.execute("DELETE FROM jobs WHERE type = 'b'")
        conn.commit()
    monkeypatch.undo()
    async with SQLiteStore(db_path) as store:
        assert await store.migrate() == [m.name for m in every[4:]]
        assert (await store.get(1)).state is State.PENDING
        new = (await store.submit(NewJob("c", after=(1,)))).job
        assert new.id == 3 and new.state is State.WAITING
