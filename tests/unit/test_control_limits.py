"""What a flood of clients may cost the control server (jobd.control_server, jobd.control_accept):
the connection cap, the idle timeout and accept errors, on an in-process server."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobd.control import Operations
from jobd.control_accept import Acceptor
from jobd.control_server import ControlServer
from jobd.control_socket import bind_control_socket
from jobd.domain import NewJob
from jobd.handlers import Registry
from jobd.store.memory import MemoryStore

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        await asyncio.sleep(0.01)


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[ControlServer]]]:
    directory = Path(tempfile.mkdtemp(prefix="jobd", dir="/tmp"))
    servers: list[ControlServer] = []
    sup: Any = SimpleNamespace(store=MemoryStore(), node="node-a", registry=Registry())

    async def make(**limits: Any) -> ControlServer:
        ops = Operations(sup, wait_poll=0.05)
        bound = bind_control_socket(directory / f"{len(servers)}.sock")
        server = ControlServer(ops, bound, 4096, **limits)
        servers.append(server)
        await server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            await server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def connect(server: ControlServer) -> Streams:
    streams = await asyncio.open_unix_connection(str(server.path))
    await eventually(lambda: server.connections >= 1)
    return streams


async def ask(streams: Streams, method: str, params: dict[str, Any] | None = None) -> Any:
    reader, writer = streams
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), 5))


async def closed(streams: Streams, timeout: float = 5.0) -> bool:
    return await asyncio.wait_for(streams[0].read(), timeout) == b""


async def test_an_idle_connection_is_closed_but_not_one_in_a_wait(
    make_server: Callable[..., Awaitable[ControlServer]],
) -> None:
    server = await make_server(idle_timeout=0.3)
    job = (await server.operations.store.submit(NewJob("echo"))).job
    idle, waiting = await connect(server), await connect(server)
    await ask(idle, "hello")
    reader, writer = waiting
    wait = {"jsonrpc": "2.0", "id": 7, "method": "wait", "params": {"id": job.id, "timeout": 2}}
    writer.write(json.dumps(wait).encode() + b"\n")
    started = time.monotonic()
    assert await closed(idle)
    assert time.monotonic() - started < 1.5
    answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert answer["id"] == 7 and answer["result"]["timed_out"]  # answered, never cut off
    assert time.monotonic() - started >= 1.5
    assert await closed(waiting)  # and idle again afterwards: closed in its turn


async def test_past_the_cap_the_longest_idle_connection_makes_room(
    make_server: Callable[..., Awaitable[ControlServer]],
) -> None:
    server = await make_server(max_connections=3)
    first = await connect(server)
    rest = [await asyncio.open_unix_connection(str(server.path)) for _ in range(2)]
    await eventually(lambda: server.connections == 3)
    for streams in rest:
        await ask(streams, "hello")  # more recently active than `first`
    newcomer = await asyncio.open_unix_connection(str(server.path))
    assert (await ask(newcomer, "hello"))["result"]["node"] == "node-a"
    assert await closed(first)
    for streams in rest:
        assert (await ask(streams, "hello"))["result"]
    assert server.connections == 3


async def test_past_the_cap_with_every_connection_busy_the_newcomer_is_told_and_closed(
    make_server: Callable[..., Awaitable[ControlServer]],
) -> None:
    server = await make_server(max_connections=2)
    job = (await server.operations.store.submit(NewJob("echo"))).job
    busy = [await asyncio.open_unix_connection(str(server.path)) for _ in range(2)]
    for _, writer in busy:
        wait = {"jsonrpc": "2.0", "id": 1, "method": "wait", "params": {"id": job.id}}
        writer.write(json.dumps(wait).encode() + b"\n")
    await eventually(lambda: sum(c.active for c in server._connections) == 2)
    reader, _ = await asyncio.open_unix_connection(str(server.path))
    error = json.loads(await asyncio.wait_for(reader.readline(), 5))["error"]
    assert error["data"]["code"] == "unavailable"
    assert "connection limit (2, control.max_connections)" in error["message"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert server.connections == 2


async def test_the_cap_leaves_room_under_the_descriptor_limit(
    make_server: Callable[..., Awaitable[ControlServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert (await make_server(max_connections=5000)).max_connections == 768
    assert (await make_server(max_connections=10)).max_connections == 10


async def test_out_of_descriptors_accepting_pauses_and_logs_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = 0
    admitted: list[socket.socket] = []
    left, right = socket.socketpair()

    async def accept(_: socket.socket) -> tuple[socket.socket, object]:
        nonlocal failures
        if failures < 6:
            failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        if admitted:
            await asyncio.Event().wait()  # nothing more to accept
        return right, None

    acceptor = Acceptor(left, admitted.append, accept, log_interval=0.5)
    caplog.set_level(logging.WARNING, "jobd.control")
    started = time.monotonic()
    task = asyncio.create_task(acceptor.run())
    await eventually(lambda: bool(admitted), timeout=15)
    took = time.monotonic() - started
    task.cancel()
    left.close()
    right.close()
    # paused 0.1, 0.2, 0.4, 0.8, then 1 s each time: the loop never spins
    assert took >= 0.1 + 0.2 + 0.4 + 0.8 + 2 * 1.0
    lines = [r for r in caplog.records if r.getMessage().startswith("cannot accept")]
    assert 2 <= len(lines) <= took / 0.5 + 1
    assert sum(r.failures for r in lines) <= 6 and lines[0].failures == 1
