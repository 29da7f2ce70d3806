"""The control server in-process: its operations over a memory store and a stand-in supervisor,
its socket (creation, permissions, stale and contested paths), and jobd.client against it.

No daemon and no database: these run in milliseconds.  tests/integration/test_control.py does
the same things to a real `jobd run` on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobd.client import Client
from jobd.control import Operations
from jobd.control_server import ControlServer
from jobd.control_socket import ControlSocketError, bind_control_socket
from jobd.domain import NewJob, State
from jobd.errors import (
    Conflict,
    DaemonUnreachable,
    InvalidParams,
    NotFound,
    Unavailable,
    UnknownType,
)
from jobd.handlers import HandlerSpec, Registry
from jobd.jobspec import JobSpec
from jobd.limits import MAX_LIST_BYTES
from jobd.protocol import IdParams, NoParams, WaitParams, parse_list
from jobd.store import Notification, Outcome, OutcomeKind
from jobd.store.memory import MemoryStore
from jobd.supervisor.crossing import Crossing


class FakeSupervisor:
    """What the control server reads of jobd.supervisor.Supervisor, and nothing else."""

    def __init__(self, store: Any, registry: Registry, node: str = "node-a", workers: int = 2):
        self.store = store
        self.registry = registry
        self.node = node
        self.store_ok = True
        self.store_write_errors: list[str] = []
        self.draining = False
        self.started_at = time.time() - 5
        self.counters: dict[str, int] = {"completed": 3}
        self.on_started: list[Any] = []
        self.on_stopping: list[Any] = []
        self.settings = SimpleNamespace(workers=workers, default_timeout=3600.0)
        self.views = [
            {"index": i, "pid": 100 + i, "state": "idle", "job_id": None, "jobs_done": 0, "rss": 1}
            for i in range(1, workers + 1)
        ]
        self.cancelled: list[int] = []
        self.metrics = SimpleNamespace(events=[], totals=lambda: {"completed": 3.0})
        self.rates = SimpleNamespace(per_second=lambda totals: {"completed": 0.5})
        self.short_for = 0.0

    def job_event(self, event: str, job: Any, source: str | None) -> None:
        self.metrics.events.append((event, job.type, job.queue))

    def job_events(self, event: str, jobs: list[Any], source: str | None) -> None:
        self.metrics.events.extend((event, job.type, job.queue) for job in jobs)

    def workers_short_for(self) -> float:
        return self.short_for

    def worker_views(self) -> list[dict[str, Any]]:
        return self.views

    def cancel_running(self, job_id: int) -> bool:
        self.cancelled.append(job_id)
        return True

    async def metrics_text(self) -> str:
        await self.store.counts()  # as the supervisor's may, when its cached counts are old
        return "# HELP jobd_test A metric.\n# TYPE jobd_test gauge\njobd_test 1.0\n"


def _needs_n(payload: dict[str, Any]) -> None:
    if not isinstance(payload.get("n"), int):
        raise ValueError("n: must be an integer")


def make_registry() -> Registry:
    registry = Registry()
    registry.register(HandlerSpec("echo", lambda ctx, p: p))
    registry.register(HandlerSpec("strict", lambda ctx, p: p, max_attempts=6, validator=_needs_n))
    registry.register(HandlerSpec("buggy", lambda ctx, p: p, validator=lambda p: 1 / 0))
    return registry


class QuietStore(MemoryStore):
    """A store that tells nobody anything: as if other nodes changed the jobs."""

    def _notify(self, notification: Notification) -> None:
        pass


class HangingStore(MemoryStore):
    async def get(self, job_id: int) -> Any:
        await asyncio.sleep(3600)

    async def ping(self) -> None:
        await asyncio.sleep(3600)


class DownStore(MemoryStore):
    async def submit_many(self, specs: Any) -> Any:
        raise Unavailable("store unavailable: connection refused")

    async def ping(self) -> None:
        raise Unavailable("store unavailable: connection refused")


@pytest.fixture
def sup() -> FakeSupervisor:
    return FakeSupervisor(MemoryStore(), make_registry())


@pytest.fixture
def ops(sup: FakeSupervisor) -> Operations:
    operations = Operations(sup, default_max_attempts=4, store_timeout=0.5, wait_poll=0.05)
    operations.open()
    return operations


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket path must fit in 108 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="jobd", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def spec(job_type: str = "echo", **fields: Any) -> JobSpec:
    return JobSpec(type=job_type, payload=fields.pop("payload", {}), **fields)


async def finish(store: MemoryStore, job_id: int, node: str = "node-a") -> None:
    (job,) = await store.claim(node, 1, lease=30)
    assert job.id == job_id
    await store.finish(node, [Outcome(job.id, job.attempts, OutcomeKind.COMPLETED, result=1)])


# --- operations -----------------------------------------------------------------------------------


async def test_new_jobs_are_counted_in_the_metrics(ops: Operations, sup: FakeSupervisor) -> None:
    from jobd.protocol import SubmitManyParams

    await ops.submit(spec(queue="q1", idempotency_key="k"))
    await ops.submit(spec(queue="q1", idempotency_key="k"))  # the same job: not counted again
    await ops.submit_many(SubmitManyParams([spec(), spec("strict", payload={"n": 1})]))
    assert sup.metrics.events == [
        ("submitted", "echo", "q1"),
        ("submitted", "echo", "default"),
        ("submitted", "strict", "default"),
    ]


async def test_a_submit_is_answered_while_the_supervisors_loop_is_busy(
    sup: FakeSupervisor,
) -> None:
    """The count of a submit is posted to the supervisor's loop, not waited for: the answer
    does not depend on it (ADR 0041)."""
    busy, release = threading.Event(), threading.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        loop.call_soon_threadsafe(lambda: (busy.set(), release.wait(30)))
        assert busy.wait(10)
        ops = Operations(sup, supervisor_loop=Crossing(loop, 2.0, "supervisor"))
        ops.open()
        answer = await ops.submit(spec(queue="q1"))  # past 2 s: Unavailable, if it waited
        assert answer["created"] and sup.metrics.events == []
        release.set()
        arrived = threading.Event()
        loop.call_soon_threadsafe(arrived.set)  # after the posted count, on that loop
        assert arrived.wait(10)
        assert sup.metrics.events == [("submitted", "echo", "q1")]
    finally:
        release.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def test_submit_fills_in_the_defaults(ops: Operations) -> None:
    echo = (await ops.submit(spec()))["job"]
    assert echo["max_attempts"] == 4  # the configured default
    assert len(echo["correlation_id"]) == 32
    strict = (await ops.submit(spec("strict", payload={"n": 1})))["job"]
    assert strict["max_attempts"] == 6  # the handler's
    mine = (await ops.submit(spec("strict", payload={"n": 1}, max_attempts=2)))["job"]
    assert mine["max_attempts"] == 2


async def test_submit_refuses_unknown_types_and_payloads_the_handler_rejects(
    ops: Operations,
) -> None:
    with pytest.raises(UnknownType) as unknown:
        await ops.submit(spec("nope"))
    assert unknown.value.data == {
        "field": "type",
        "problem": "unknown job type 'nope' (this daemon runs: buggy, echo, strict)",
        "type": "nope",
        "known": ["buggy", "echo", "strict"],
    }
    assert "this daemon runs: buggy, echo, strict" in unknown.value.message
    with pytest.raises(InvalidParams) as invalid:
        await ops.submit(spec("strict", payload={"n": "one"}))
    assert (
        invalid.value.message == "payload: rejected by the 'strict' handler: n: must be an integer"
    )
    assert invalid.value.data["field"] == "payload"
    with pytest.raises(ZeroDivisionError):  # a validator's bug is a bug, not the client's fault
        await ops.submit(spec("buggy"))


async def test_submit_many_names_the_job_and_stores_all_or_none(ops: Operations) -> None:
    from jobd.protocol import SubmitManyParams

    good = spec()
    bad = JobSpec(type="nope", payload={})
    with pytest.raises(UnknownType, match=r"^jobs\[1\]\.type: unknown job type 'nope'"):
        await ops.submit_many(SubmitManyParams([good, bad]))
    assert (await ops.store.counts()).rows == []
    result = await ops.submit_many(SubmitManyParams([good, good]))
    assert [r["created"] for r in result["results"]] == [True, True]
    assert await ops.submit_many(SubmitManyParams([])) == {"results": [], "names": {}}


async def test_submit_many_asked_for_ids_answers_each_jobs_id_and_whether_it_is_new(
    ops: Operations,
) -> None:
    from jobd.protocol import SubmitManyParams

    first = await ops.submit(spec(idempotency_key="k"))
    keyed = spec(idempotency_key="k")
    named = JobSpec(type="echo", payload={}, name="a")
    result = await ops.submit_many(SubmitManyParams([spec(), keyed, named], {"a": 2}, "ids"))
    assert set(result) == {"ids", "created", "names"}
    ids = result["ids"]
    assert ids[1] == first["job"]["id"] and result["created"] == [True, False, True]
    assert result["names"] == {"a": ids[2]}
    assert [(await ops.store.get(i)).id for i in ids] == ids


async def test_a_big_submit_many_gives_the_loop_turns_and_each_job_its_own_id(
    ops: Operations,
) -> None:
    """On the supervisor's loop, 1,000 jobs must not hold up the workers' messages for the
    whole batch: other tasks run while it is handled (the memory store itself never waits)."""
    from jobd.protocol import SubmitManyParams

    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    result = await ops.submit_many(SubmitManyParams([spec()] * 1000))
    during = turns - before
    task.cancel()
    jobs = [r["job"] for r in result["results"]]
    assert during >= 10, f"the loop turned {during} times during the batch"
    assert [job["id"] for job in jobs] == sorted({job["id"] for job in jobs})
    ids = {job["correlation_id"] for job in jobs}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    got = (await ops.get(IdParams(jobs[0]["id"])))["job"]
    assert jobs[0] == {name: value for name, value in got.items() if name != "effective"}


async def test_wait_is_woken_by_the_finished_notification(sup: FakeSupervisor) -> None:
    ops = Operations(sup, wait_poll=30)  # no polling to speak of: only the notification
    ops.open()
    job_id = (await ops.submit(spec()))["job"]["id"]
    asyncio.get_running_loop().call_later(0.1, asyncio.ensure_future, finish(sup.store, job_id))
    started = time.monotonic()
    result = await ops.wait(WaitParams(job_id, 20))
    assert result["job"]["state"] == "completed" and result["timed_out"] is False
    assert time.monotonic() - started < 2
    assert ops.waiters == {}


async def test_wait_polls_for_jobs_other_nodes_finish() -> None:
    sup = FakeSupervisor(QuietStore(), make_registry())
    ops = Operations(sup, wait_poll=0.05)
    ops.open()
    job_id = (await ops.submit(spec()))["job"]["id"]
    asyncio.get_running_loop().call_later(
        0.1, asyncio.ensure_future, finish(sup.store, job_id, "node-b")
    )
    result = await ops.wait(WaitParams(job_id, 20))
    assert result["job"]["state"] == "completed"


async def test_wait_times_out_and_is_answered_at_shutdown(ops: Operations) -> None:
    job_id = (await ops.submit(spec()))["job"]["id"]
    started = time.monotonic()
    result = await ops.wait(WaitParams(job_id, 0.2))
    assert result["timed_out"] is True and result["job"]["state"] == "pending"
    assert 0.2 <= time.monotonic() - started < 1.5
    waiting = asyncio.create_task(ops.wait(WaitParams(job_id, 600)))
    await asyncio.sleep(0.1)
    ops.close()
    result = await asyncio.wait_for(waiting, 2)
    assert result["timed_out"] is True


async def test_wait_does_not_spin(ops: Operations, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = (await ops.submit(spec()))["job"]["id"]
    reads = 0
    original = ops.store.get

    async def counting_get(job_id: int) -> Any:
        nonlocal reads
        reads += 1
        return await original(job_id)

    monkeypatch.setattr(ops.store, "get", counting_get)
    await ops.wait(WaitParams(job_id, 0.5))
    assert reads <= 0.5 / ops.wait_poll + 3  # one read per poll interval, not a busy loop


async def test_a_store_that_hangs_is_unavailable_not_a_hang() -> None:
    sup = FakeSupervisor(HangingStore(), make_registry())
    ops = Operations(sup, store_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"^store unavailable: no answer within 0\.2s"):
        await ops.get(IdParams(1))
    health = await ops.health(NoParams())
    assert health["status"] == "degraded" and health["store"] == "unavailable"

    async def hanging_metrics() -> str:
        await asyncio.sleep(3600)
        return ""

    sup.metrics_text = hanging_metrics  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match="no answer within"):
        await ops.metrics(NoParams())
    assert time.monotonic() - started < 5


async def test_a_store_that_is_down_is_unavailable() -> None:
    ops = Operations(FakeSupervisor(DownStore(), make_registry()))
    with pytest.raises(Unavailable, match=r"^store unavailable: connection refused"):
        await ops.submit(spec())


async def test_cancel_stops_a_job_running_here_but_not_elsewhere(
    ops: Operations, sup: FakeSupervisor
) -> None:
    pending = (await ops.submit(spec()))["job"]["id"]
    assert (await ops.cancel(IdParams(pending)))["job"]["state"] == "canceled"
    ours = (await ops.submit(spec()))["job"]["id"]
    await sup.store.claim("node-a", 1, lease=30)
    answer = await ops.cancel(IdParams(ours))
    assert answer["job"]["state"] == "running" and answer["job"]["cancel_requested"] is True
    theirs = (await ops.submit(spec()))["job"]["id"]
    await sup.store.claim("node-b", 1, lease=30)
    await ops.cancel(IdParams(theirs))
    assert sup.cancelled == [ours]
    with pytest.raises(Conflict):
        await ops.cancel(IdParams(pending))
    with pytest.raises(NotFound):
        await ops.cancel(IdParams(999))


async def test_stats_and_workers(ops: Operations, sup: FakeSupervisor) -> None:
    await ops.submit(spec())
    sup.views[0]["state"] = "busy"
    stats = await ops.stats(NoParams())
    assert stats["node"] == "node-a" and stats["uptime"] >= 5
    assert stats["jobs"]["by_state"]["pending"] == 1
    assert stats["jobs"]["by_queue"] == {"default": {"pending": 1}}
    assert stats["jobs"]["by_type"] == {"echo": {"pending": 1}}
    assert stats["workers"] == {"busy": 1, "idle": 1, "total": 2, "expected": 2}
    assert stats["counters"] == {"completed": 3}
    assert stats["rates"] == {"completed": 0.5}
    assert (await ops.workers(NoParams()))["workers"] == sup.views


async def test_health(ops: Operations, sup: FakeSupervisor) -> None:
    healthy = await ops.health(NoParams())
    assert healthy == {
        "status": "ok",
        "store": "ok",
        "workers": {"ready": 2, "expected": 2},
        "draining": False,
        "node": "node-a",
        "problems": [],
    }
    sup.views[1]["state"] = "starting"
    sup.short_for = 1.0  # a worker being replaced: not a problem yet
    assert (await ops.health(NoParams()))["status"] == "ok"
    sup.short_for = 11.0
    sup.draining = True
    degraded = await ops.health(NoParams())
    assert degraded["status"] == "degraded" and degraded["workers"]["ready"] == 1
    assert degraded["problems"] == [
        "1 of 2 workers ready for 11s",
        "draining: this node is shutting down",
    ]


# --- the socket -----------------------------------------------------------------------------------


def test_the_socket_gets_its_mode_whatever_the_umask(short_dir: Path) -> None:
    for umask, mode in ((0o000, 0o660), (0o077, 0o660), (0o022, 0o600)):
        old = os.umask(umask)
        try:
            bound = bind_control_socket(short_dir / "jobd.sock", mode)
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(bound.path).st_mode) == mode
        bound.close()
        assert not bound.path.exists()
    assert os.listdir(short_dir) == ["jobd.sock.lock"]  # no temporary file left behind


def test_the_socket_group(short_dir: Path) -> None:
    gid = os.getgid()
    for group in (str(gid), grp.getgrgid(gid).gr_name):
        bound = bind_control_socket(short_dir / "jobd.sock", 0o660, group)
        assert os.stat(bound.path).st_gid == gid
        bound.close()
    with pytest.raises(ControlSocketError, match="no group named 'no-such-group-x'") as caught:
        bind_control_socket(short_dir / "jobd.sock", 0o660, "no-such-group-x")
    assert caught.value.exit_code == 2


def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "jobd.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    bound = bind_control_socket(path)
    assert os.stat(path).st_ino == bound.inode
    bound.close()


def test_a_live_socket_is_not_replaced(short_dir: Path) -> None:
    path = short_dir / "jobd.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(
            ControlSocketError, match=f"another jobd is already listening on {path}"
        ):
            bind_control_socket(path)
        assert path.exists()
    finally:
        live.close()


def test_a_second_server_on_the_same_path_is_refused_by_the_lock(short_dir: Path) -> None:
    first = bind_control_socket(short_dir / "jobd.sock")
    try:
        with pytest.raises(ControlSocketError, match="another jobd is already listening"):
            bind_control_socket(short_dir / "jobd.sock")
    finally:
        first.close()
    bind_control_socket(short_dir / "jobd.sock").close()  # free again once the first is gone


def test_a_file_that_is_not_a_socket_is_left_alone(short_dir: Path) -> None:
    path = short_dir / "jobd.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="not a socket") as caught:
        bind_control_socket(path)
    assert caught.value.exit_code == 2 and path.read_text() == "precious"


def test_a_directory_others_can_write_is_refused(short_dir: Path) -> None:
    shared = short_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ControlSocketError, match="writable by anyone"):
        bind_control_socket(shared / "jobd.sock")
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot replace our files
    bind_control_socket(shared / "jobd.sock").close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_someone_elses_directory_is_refused(short_dir: Path) -> None:
    theirs = short_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    with pytest.raises(ControlSocketError, match="belongs to uid 12345"):
        bind_control_socket(theirs / "jobd.sock")


def test_the_parent_directory_is_created(short_dir: Path) -> None:
    bound = bind_control_socket(short_dir / "a" / "b" / "jobd.sock")
    assert bound.path.exists()
    bound.close()


def test_close_leaves_a_successors_socket_alone(short_dir: Path) -> None:
    path = short_dir / "jobd.sock"
    bound = bind_control_socket(path)
    os.unlink(path)
    successor = socket.socket(socket.AF_UNIX)
    successor.bind(str(path))
    bound.close()
    bound.close()  # idempotent
    assert path.exists()
    successor.close()


# --- the server -----------------------------------------------------------------------------------


@pytest.fixture
async def server(
    sup: FakeSupervisor, ops: Operations, short_dir: Path
) -> AsyncIterator[ControlServer]:
    bound = bind_control_socket(short_dir / "jobd.sock")
    srv = ControlServer(ops, bound, max_request_bytes=4096)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def exchange(server: ControlServer, data: bytes, replies: int = 1) -> list[Any]:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(data)
    await writer.drain()
    out = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(replies)]
    writer.close()
    return out


def line(method: str, params: dict | None = None, call_id: Any = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": call_id}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode() + b"\n"


async def test_requests_in_order_blank_lines_ignored(server: ControlServer) -> None:
    data = line("hello", call_id=1) + b"\n  \n" + line("submit", {"type": "echo"}, 2)
    replies = await exchange(server, data + line("get", {"id": 1}, 3), replies=3)
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[2]["result"]["job"]["id"] == 1


async def test_notifications_are_run_but_not_answered(
    server: ControlServer, sup: FakeSupervisor
) -> None:
    note = json.dumps({"jsonrpc": "2.0", "method": "submit", "params": {"type": "echo"}})
    bad_note = json.dumps({"jsonrpc": "2.0", "method": "nope"})
    (reply,) = await exchange(server, f"{note}\n{bad_note}\n".encode() + line("hello", call_id=5))
    assert reply["id"] == 5
    assert (await sup.store.counts()).by_state()["pending"] == 1


async def test_batches(server: ControlServer) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "hello", "id": "a"},
        {"jsonrpc": "2.0", "method": "hello"},
        5,
        {"jsonrpc": "2.0", "method": "get", "params": {"id": 99}, "id": "b"},
    ]
    (replies,) = await exchange(server, json.dumps(batch).encode() + b"\n")
    assert [r["id"] for r in replies] == ["a", None, "b"]
    assert replies[1]["error"]["data"]["code"] == "invalid_request"
    assert replies[2]["error"]["data"]["code"] == "not_found"
    (empty,) = await exchange(server, b"[]\n")
    assert empty["error"]["data"]["code"] == "invalid_request"
    only_notes = json.dumps([{"jsonrpc": "2.0", "method": "hello"}]).encode() + b"\n"
    (after,) = await exchange(server, only_notes + line("hello", call_id="next"))
    assert after["id"] == "next"  # an all-notification batch has no reply line


async def test_a_bug_in_a_method_is_an_internal_error_and_the_connection_lives_on(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(params: Any) -> Any:
        raise RuntimeError("oops")

    monkeypatch.setitem(server.operations._handlers, "stats", broken)
    error, hello = await exchange(server, line("stats", call_id=1) + line("hello", call_id=2), 2)
    assert error["error"]["data"]["code"] == "internal_error"
    assert error["error"]["message"] == "internal error: RuntimeError"
    assert hello["result"]["protocol"] == 1


async def test_a_result_that_is_not_json_is_an_internal_error_and_the_connection_lives_on(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unencodable(params: Any) -> Any:
        return {"jobs": [{"id": 1}] * 150 + [{"when": object()}]}  # fails well into the reply

    monkeypatch.setitem(server.operations._handlers, "stats", unencodable)
    error, hello = await exchange(server, line("stats", call_id=1) + line("hello", call_id=2), 2)
    assert error["id"] == 1 and error["error"]["data"]["code"] == "internal_error"
    assert hello["result"]["protocol"] == 1


async def test_an_oversized_line_closes_only_its_connection(server: ControlServer) -> None:
    bystander_reader, bystander = await asyncio.open_unix_connection(str(server.path))
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(line("hello") + b"x" * 10_000 + b"\n" + line("hello", call_id=2))
    await writer.drain()
    hello = json.loads(await reader.readline())
    refused = json.loads(await reader.readline())
    assert hello["id"] == 1
    assert refused["error"]["data"] == {"limit": 4096, "code": "payload_too_large"}
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
    writer.close()
    bystander.write(line("hello", call_id="b"))
    assert json.loads(await bystander_reader.readline())["id"] == "b"
    bystander.close()


async def test_each_request_is_logged_with_the_peer(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="jobd.control"):
        await exchange(server, line("get", {"id": 12345}, "x"))
    (record,) = [r for r in caplog.records if r.getMessage() == "control request"]
    assert record.method == "get" and record.outcome == "not_found"
    assert record.peer_pid == os.getpid() and record.peer_uid == os.getuid()


async def test_many_connections_at_once(server: ControlServer, sup: FakeSupervisor) -> None:
    async def one(n: int) -> Any:
        return await exchange(server, line("submit", {"type": "echo", "payload": {"n": n}}, n))

    replies = await asyncio.gather(*(one(n) for n in range(150)))
    assert sorted(r[0]["id"] for r in replies) == list(range(150))
    assert (await sup.store.counts()).by_state()["pending"] == 150


async def test_stop_closes_idle_connections_and_removes_the_socket(
    sup: FakeSupervisor, ops: Operations, short_dir: Path
) -> None:
    srv = ControlServer(ops, bind_control_socket(short_dir / "jobd.sock"), 4096)
    await srv.start()
    reader, writer = await asyncio.open_unix_connection(str(srv.path))
    writer.write(line("hello"))
    await reader.readline()
    started = time.monotonic()
    await srv.stop()
    assert time.monotonic() - started < 1
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert not srv.path.exists()
    writer.close()


async def test_install_hooks_the_server_to_the_supervisor(
    sup: FakeSupervisor, short_dir: Path
) -> None:
    from jobd.config import load_config

    config = load_config(None, {"JOBD_SOCKET": str(short_dir / "jobd.sock")})
    srv = ControlServer.install(sup, config)
    try:
        assert sup.on_started == [srv.start] and sup.on_stopping == [srv.stop]
        assert srv.max_request_bytes == config.control.max_request_bytes
        for hook in sup.on_started:
            await hook()
        (hello,) = await exchange(srv, line("hello"))
        assert hello["result"]["node"] == "node-a"
        for hook in sup.on_stopping:
            await hook()
    finally:
        srv.close()
    assert not (short_dir / "jobd.sock").exists()


# --- the client against it ------------------------------------------------------------------------


async def test_the_client(server: ControlServer, sup: FakeSupervisor) -> None:
    def use() -> None:
        with Client(server.path, timeout=5) as c:
            submitted = c.submit("strict", {"n": 1}, queue="q", priority=3, delay=60)
            assert submitted.created and submitted.job.queue == "q"
            assert submitted.job.state is State.PENDING and submitted.job.max_attempts == 6
            again = c.submit("strict", {"n": 1}, idempotency_key="k")
            assert c.submit("strict", {"n": 2}, idempotency_key="k").job.id == again.job.id
            assert c.get(submitted.job.id) == submitted.job
            many = c.submit_many([{"type": "echo"}, {"type": "echo", "payload": {"a": 1}}])
            assert [r.created for r in many] == [True, True]
            assert [j.id for j in c.list(limit=2).jobs] == [r.job.id for r in many][::-1]
            assert len(list(c.iter_jobs(page_size=1))) == 4
            assert c.cancel(submitted.job.id).state is State.CANCELED
            assert c.retry(submitted.job.id).state is State.PENDING
            assert c.wait(submitted.job.id, timeout=0.1).timed_out
            assert c.stats().by_state["pending"] == 4
            assert [w.pid for w in c.workers()] == [101, 102]
            assert c.health().ok
            assert "jobd_test 1.0" in c.metrics()
            assert c.hello().methods[0] == "hello"
            with pytest.raises(UnknownType) as unknown:
                c.submit("nope")
            assert unknown.value.code == "unknown_type" and unknown.value.info.exit_status == 2
            with pytest.raises(NotFound):
                c.get(10**6)
            with pytest.raises(InvalidParams, match="unknown field 'priorty'"):
                c.submit_many([{"type": "echo", "priorty": 1}])

    await asyncio.to_thread(use)


async def test_the_client_waits_for_ever_in_chunks(
    server: ControlServer, sup: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobd.client

    monkeypatch.setattr(jobd.client, "WAIT_CHUNK", 0.1)
    job = (await sup.store.submit(NewJob("echo"))).job
    asyncio.get_running_loop().call_later(0.5, asyncio.ensure_future, finish(sup.store, job.id))
    result = await asyncio.to_thread(Client(server.path).wait, job.id)
    assert result.job.state is State.COMPLETED and not result.timed_out


def test_the_client_names_a_missing_socket(short_dir: Path) -> None:
    path = short_dir / "none.sock"
    with pytest.raises(DaemonUnreachable) as caught:
        Client(path).hello()
    message = caught.value.message
    assert f"no socket at {path}" in message and "jobd run" in message
    assert caught.value.code == "unavailable" and caught.value.info.exit_status == 3
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(DaemonUnreachable, match="nothing is listening on"):
        Client(path).hello()


async def test_the_client_resends_only_read_only_calls_after_a_restart(
    sup: FakeSupervisor, short_dir: Path
) -> None:
    path = short_dir / "jobd.sock"

    async def serve() -> ControlServer:
        ops = Operations(sup)
        srv = ControlServer(ops, bind_control_socket(path), 4096)
        await srv.start()
        return srv

    srv = await serve()
    client = Client(path, timeout=5)
    job_id = (await asyncio.to_thread(client.submit, "echo")).job.id
    await srv.stop()  # the client's connection is now dead
    srv = await serve()
    try:
        assert (await asyncio.to_thread(client.get, job_id)).id == job_id  # resent
        await srv.stop()
        srv = await serve()
        with pytest.raises(Unavailable, match="closed the connection before answering"):
            await asyncio.to_thread(client.submit, "echo")  # might have been acted on: not resent
        assert (await asyncio.to_thread(client.submit, "echo")).created  # a new connection
    finally:
        client.close()
        await srv.stop()


async def test_the_client_times_out(short_dir: Path) -> None:
    path = short_dir / "slow.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)  # accepts (in the backlog), never answers
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"did not answer hello within 0\.3s"):
            await asyncio.to_thread(Client(path, timeout=0.3).hello)
        assert time.monotonic() - started < 3
    finally:
        listener.close()


def test_the_default_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobd.client import default_socket_path

    assert default_socket_path({"JOBD_SOCKET": "/x/y.sock"}) == Path("/x/y.sock")
    config = tmp_path / "jobd.yaml"
    config.write_text("control:\n  socket: /run/custom/jobd.sock\n")
    assert default_socket_path({"JOBD_CONFIG": str(config)}) == Path("/run/custom/jobd.sock")
    env = {"JOBD_CONFIG": str(tmp_path / "missing.yaml"), "XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_socket_path(env) == Path("/run/user/7/jobd.sock")
    for name in ("JOBD_SOCKET", "JOBD_CONFIG", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/8")
    assert Client().socket_path == Path("/run/user/8/jobd.sock")


def test_the_system_service_socket_is_found_from_a_login_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobd.client

    system = tmp_path / "run-jobd" / "jobd.sock"
    monkeypatch.setattr(jobd.client, "SYSTEM_SOCKET", system)
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "user")}
    assert jobd.client.default_socket_path(env) == tmp_path / "user" / "jobd.sock"
    system.parent.mkdir()
    system.touch()  # jobd.service is running: its socket is there, the user's is not
    assert jobd.client.default_socket_path(env) == system
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "jobd.sock").touch()  # a daemon of the user's own wins
    assert jobd.client.default_socket_path(env) == tmp_path / "user" / "jobd.sock"


# --- list pages bounded by bytes -------------------------------------------------------------


async def test_a_list_page_of_large_jobs_stops_at_its_byte_bound_and_its_cursor_continues(
    ops: Operations, sup: FakeSupervisor
) -> None:
    big = "x" * (512 * 1024)  # twenty of them are 10 MiB, over the 8 MiB a page may carry
    ids = [(await ops.submit(spec(payload={"blob": big})))["job"]["id"] for _ in range(20)]

    first = await ops.list(parse_list({"limit": 1000}))
    assert 1 <= len(first["jobs"]) < 20
    assert sum(len(json.dumps(job)) for job in first["jobs"][:-1]) < MAX_LIST_BYTES
    assert first["next_cursor"] is not None

    seen = [job["id"] for job in first["jobs"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = await ops.list(parse_list({"limit": 1000, "cursor": cursor}))
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
    assert seen == sorted(ids, reverse=True)  # every job once, newest first


async def test_a_list_page_of_small_jobs_is_bounded_by_its_limit_alone(ops: Operations) -> None:
    for _ in range(250):  # more than one store read of LIST_CHUNK rows
        await ops.submit(spec())
    page = await ops.list(parse_list({"limit": 240}))
    assert len(page["jobs"]) == 240 and page["next_cursor"] is not None
    rest = await ops.list(parse_list({"limit": 240, "cursor": page["next_cursor"]}))
    assert len(rest["jobs"]) == 10 and rest["next_cursor"] is None
