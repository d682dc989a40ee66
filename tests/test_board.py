"""The status board (kale.manager.board): what the status line answers from, written by
the manager's side and read through a second mapping of the same file, as the status
line's process reads it."""

from __future__ import annotations

import hashlib
import json
import mmap
from pathlib import Path

from kale.manager.board import _HEAD, META, Board, BoardReader
from kale.model.states import TaskState


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def answer(reader: BoardReader, token: str, run: str) -> dict[str, object] | None:
    body = reader.answer(digest(token), run)
    return None if body is None else dict(json.loads(body))


def test_a_reader_sees_each_count_as_the_engine_writes_it_and_only_its_users_runs(
        tmp_path: Path) -> None:
    board = Board(tmp_path / "status.board", "alice", ["alice", None])
    reader = BoardReader(tmp_path / "status.board")
    board.update({digest("a-token"): "alice", digest("b-token"): "bob"}, [])
    counts = board.open("r1", {"id": "r1", "state": "RUNNING"}, None)
    assert counts is not None and dict(counts) == dict.fromkeys(TaskState, 0)
    counts[TaskState.PENDING] += 3
    counts[TaskState.PENDING] -= 1
    counts[TaskState.RUNNING] += 1
    assert answer(reader, "a-token", "r1") == {"run": {"id": "r1", "state": "RUNNING"},
                                              "counts": {"PENDING": 2, "RUNNING": 1}}
    # bob's token does not see alice's run, an unknown token sees nothing, nor does
    # anyone see a run that is not on the board: the manager answers those
    assert answer(reader, "b-token", "r1") is None
    assert answer(reader, "nope", "r1") is None
    assert answer(reader, "a-token", "r2") is None
    bobs = board.open("r2", {"id": "r2"}, "bob")
    assert bobs is not None
    assert answer(reader, "b-token", "r2") == {"run": {"id": "r2"}, "counts": {}}
    assert answer(reader, "a-token", "r2") is None  # the owner's own users: alice, None
    board.close("r1")
    assert answer(reader, "a-token", "r1") is None


def test_waiting_tasks_are_left_to_the_manager_until_it_judged_their_user(
        tmp_path: Path) -> None:
    """A run with tasks waiting for a worker is answered here only once the manager has
    said that its user's waiting tasks have no problem to report."""
    board = Board(tmp_path / "status.board", "alice", ["alice", None])
    reader = BoardReader(tmp_path / "status.board")
    board.update({digest("a-token"): "alice"}, [])
    counts = board.open("r1", {"id": "r1"}, "alice")
    assert counts is not None
    counts[TaskState.SUBMITTED] = 2
    assert answer(reader, "a-token", "r1") is None  # not judged yet
    board.update({digest("a-token"): "alice"}, [("alice", True)])
    assert answer(reader, "a-token", "r1") is None  # a problem: the manager words it
    board.update({digest("a-token"): "alice"}, [("alice", False)])
    assert answer(reader, "a-token", "r1") == {"run": {"id": "r1"},
                                              "counts": {"SUBMITTED": 2}}


def test_a_slot_taken_again_starts_from_zero_and_a_torn_meta_is_not_believed(
        tmp_path: Path) -> None:
    path = tmp_path / "status.board"
    board = Board(path, "alice", ["alice"])
    reader = BoardReader(path)
    board.update({digest("t"): "alice"}, [])
    for i in range(5000):  # past the number of slots: each is taken again
        counts = board.open(f"r{i}", {"id": i}, "alice")
        assert counts is not None
        counts[TaskState.SUCCEEDED] = i
        board.close(f"r{i}")
    counts = board.open("last", {"id": "last"}, "alice")
    assert counts is not None
    assert answer(reader, "t", "last") == {"run": {"id": "last"}, "counts": {}}
    # a region whose bytes do not match their CRC (as a reader might see one being
    # written) is read again, and never taken for a document
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as raw:
        word = int.from_bytes(raw[8:16], "little")
        start = _HEAD + (word & 1) * META + 8
        raw[start:start + 2] = b"[]"
        fresh = BoardReader(path)
        assert fresh.answer(digest("t"), "last") is None
