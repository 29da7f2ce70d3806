"""The supervisor's reading end of a worker's pipe (jobd.pipe.Inbox): every message written so
far in one read, whatever the read boundaries, in order, and the worker's EOF after them.  A
real pipe, written by multiprocessing's own Connection.send as a worker writes it."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import struct
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from jobd import pipe
from jobd.pipe import Done, Inbox, Many, Progress, Started


@pytest.fixture
def ends() -> Iterator[tuple[Connection, Connection, Inbox]]:
    ours, theirs = multiprocessing.get_context("forkserver").Pipe(duplex=True)
    inbox = Inbox(ours)
    yield ours, theirs, inbox
    inbox.close()
    ours.close()
    theirs.close()


def test_nothing_written_reads_nothing_without_blocking(ends):
    _, _, inbox = ends
    assert inbox.read() == ([], False)


def test_every_message_written_so_far_comes_in_one_read_in_order(ends):
    _, theirs, inbox = ends
    sent = [Started(1), Many((Done(1, {"n": 1}), Started(2))), Done(2, None), Progress(3, "x")]
    for message in sent:
        pipe.send(theirs, message)
    assert inbox.read() == (sent, False)
    assert inbox.read() == ([], False)


def test_a_message_larger_than_one_read_is_kept_until_complete(ends):
    _, theirs, inbox = ends
    big = Done(7, "x" * (3 * Inbox.CHUNK))
    pipe.send(theirs, Started(7))
    pipe.send(theirs, big)
    got: list[object] = []
    for _ in range(100):  # the whole message is in the socket by now; a few reads take it
        messages, closed = inbox.read()
        got += messages
        assert not closed
        if len(got) == 2:
            break
    assert got == [Started(7), big]


def test_a_frame_split_anywhere_waits_for_its_rest(ends):
    _, theirs, inbox = ends
    body = pickle.dumps(pipe.encode(Done(5, [1, 2, 3])))
    frame = struct.pack("!i", len(body)) + body
    for cut in (2, 4, len(frame) - 1):
        os.write(theirs.fileno(), frame[:cut])
        assert inbox.read() == ([], False)
        os.write(theirs.fileno(), frame[cut:])
        assert inbox.read() == ([Done(5, [1, 2, 3])], False)


def test_the_workers_end_closing_is_seen_after_its_last_messages(ends):
    _, theirs, inbox = ends
    pipe.send(theirs, Done(9, 1))
    theirs.close()
    messages, closed = inbox.read()
    if not closed:  # the EOF may come in the next read, never before the messages
        more, closed = inbox.read()
        messages += more
    assert messages == [Done(9, 1)] and closed
