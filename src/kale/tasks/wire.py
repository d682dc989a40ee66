"""Reading the messages of a warm Python worker's link (:mod:`kale.tasks.python` and its
``_pyworker``) with as few system calls as the bytes allow.

The link's messages are framed as :class:`multiprocessing.connection.Connection` frames
them (its ``send_bytes`` sends them): a 4-byte big-endian length (``-1`` and then an
8-byte length for a message of 2 GiB or more), then the bytes. ``recv_bytes`` reads a
message with two system calls, the length and then the bytes; a :class:`Reader` reads
whatever the socket holds in one, often several messages (the answers of two queued jobs,
a job and the one queued behind it), and a message bigger than its buffer in as few reads
as its size allows. Nothing is ever read past what the socket holds: a reader that has
to wait, waits in :func:`os.read` for the next bytes.

Threads: a :class:`Reader` is used by one thread at a time."""

from __future__ import annotations

import os

CHUNK = 1 << 16  # read at most this much at once, unless a message needs more


class Reader:
    """Messages off the socket ``fd`` (which the reader does not own: closing it is its
    owner's business)."""

    __slots__ = ("_buf", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()

    def read(self) -> list[bytes]:
        """Read once (waiting for bytes if the socket holds none) and return the messages
        now complete, in order; none if the bytes so far end within a message. Raises
        :class:`EOFError` when the other end closed the link."""
        data = os.read(self.fd, max(CHUNK, self._missing()))
        if not data:
            raise EOFError("the link was closed")
        buf = self._buf
        if not buf:  # (the common case: whole messages in one read, nothing kept)
            messages, rest = _split(data)
            if rest:
                buf += rest
            return messages
        buf += data
        messages, rest = _split(buf)
        if rest is not buf:
            self._buf = bytearray(rest)  # (a slice of a bytearray: one already)
        return messages

    def _missing(self) -> int:
        """How many bytes the message begun in the buffer still lacks (0: not known yet)."""
        buf = self._buf
        if len(buf) < 4:
            return 0
        size, head = _size(buf)
        return 0 if size < 0 else head + size - len(buf)


def _size(buf: bytes | bytearray, at: int = 0) -> tuple[int, int]:
    """The length of the message whose header starts at ``at`` and the header's length;
    (-1, 0) if the header is not all there yet."""
    if len(buf) - at < 4:
        return -1, 0
    size = int.from_bytes(buf[at:at + 4], "big", signed=True)
    if size != -1:
        return size, 4
    if len(buf) - at < 12:
        return -1, 0
    return int.from_bytes(buf[at + 4:at + 12], "big"), 12


def _split(buf: bytes | bytearray) -> tuple[list[bytes], bytes | bytearray]:
    """The whole messages at the start of ``buf``, and what is left after them."""
    messages: list[bytes] = []
    at, end = 0, len(buf)
    with memoryview(buf) as view:  # (each message copied once, out of the buffer)
        while True:
            size, head = _size(buf, at)
            if size < 0 or at + head + size > end:
                break
            messages.append(view[at + head:at + head + size].tobytes())
            at += head + size
    return messages, (buf[at:] if at else buf)
