"""The warm Python worker's link: what :class:`multiprocessing.connection.Connection`
sends, :class:`kale.tasks.wire.Reader` reads back, whole and in order, however the bytes
arrive."""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from kale.tasks.wire import Reader


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_messages_sent_by_a_connection_come_back_whole_and_in_order(
        link: tuple[socket.socket, socket.socket]) -> None:
    a, b = link
    sender = Connection(os.dup(a.fileno()))
    rng = random.Random(7)
    sent = [os.urandom(rng.choice([0, 1, 3, 4, 5, 100, 65_536, 70_000, 1_000_000]))
            for _ in range(200)]

    def send() -> None:
        for m in sent:
            sender.send_bytes(m)
        sender.close()
        a.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send)
    thread.start()
    reader, got = Reader(b.fileno()), []
    with pytest.raises(EOFError):
        while True:
            got.extend(reader.read())
    thread.join()
    assert got == sent


def test_a_message_cut_anywhere_is_held_until_its_last_byte(
        link: tuple[socket.socket, socket.socket]) -> None:
    a, b = link
    first, second = b"\0" * 8 + b"answer", b"x" * 300
    stream = b"".join(len(m).to_bytes(4, "big") + m for m in (first, second))
    # the long header (-1, then 8 bytes) that Connection uses from 2 GiB on
    stream += (-1).to_bytes(4, "big", signed=True) + (5).to_bytes(8, "big") + b"large"
    for cut in range(1, len(stream)):
        reader = Reader(b.fileno())
        a.sendall(stream[:cut])
        got = reader.read()
        a.sendall(stream[cut:])
        while sum(map(len, got)) < len(first) + len(second) + 5:
            got += reader.read()
        assert got == [first, second, b"large"], cut


def test_a_closed_link_is_the_end(link: tuple[socket.socket, socket.socket]) -> None:
    a, b = link
    reader = Reader(b.fileno())
    a.sendall((3).to_bytes(4, "big") + b"ab")  # a message the sender never finished
    assert reader.read() == []
    a.close()
    with pytest.raises(EOFError):
        reader.read()
