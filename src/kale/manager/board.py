"""The status board: what the status line (:mod:`kale.manager.statusline`, a process of
its own) needs to answer a live run's summary without the manager's interpreter, in a
file both map (``$KALE_HOME/status.board``, 0600 in the 0700 home).

Two parts:

- **counts**: one slot per live run, a task count per state. The run's engine keeps its
  counts in a :class:`Counts`, a dict that writes each change through to its slot, so the
  board is never behind the engine: a client that cancels a run and then asks sees what
  the engine did, as it would in the manager itself.
- **meta**: a JSON document, rewritten when a run goes live or ends, when a token is
  first seen, or when what the manager would say of a user's waiting tasks changes. It
  names the live runs (their slot, their run document, whose they are), the digests of
  the tokens the manager knows (never the tokens) and who they are, and for the users of
  the live runs whether their waiting tasks have a problem to report (workers that
  cannot start, no worker of theirs): while they do, or until the manager has judged a
  new run's user, the status line leaves a summary with waiting tasks to the manager,
  which words the problem. The manager judges every :data:`TEND` seconds. Meta is
  written in the region readers are not told to read, with a CRC, and then one 8-byte
  word (``generation * 2 + region``) flips: a reader that sees the word change while it
  read reads again.

One writer (the manager, under a lock; counts from each run's engine thread), any number
of readers; nothing here is unpickled or executed, and what a reader cannot check
(a bad CRC, a document that does not parse) it treats as not there, leaving the answer to
the manager."""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import zlib
from collections import deque
from pathlib import Path
from typing import Any

from kale.model.states import TaskState

BOARD_FILE = "status.board"
MAGIC = b"KALEBRD1"
#: live runs the board holds; a run beyond them is answered by the manager itself
SLOTS = 4096
#: counters per slot (at least one per task state)
WIDTH = 16
#: bytes of each of the two meta regions; a meta document beyond it leaves the runs that
#: do not fit to the manager
META = 4 << 20
#: a run document beyond this is not put on the board (its summary comes from the manager)
MAX_RUN_DOC = 64 * 1024
#: seconds between the manager's looks at tokens and at the live runs' users' workers
TEND = 0.05
_HEAD = 64
_COUNTS = _HEAD + 2 * META
SIZE = _COUNTS + SLOTS * WIDTH * 8
STATES: tuple[TaskState, ...] = tuple(TaskState)
INDEX: dict[TaskState, int] = {s: i for i, s in enumerate(STATES)}
assert len(STATES) <= WIDTH


class Counts(dict[TaskState, int]):
    """An engine's tasks per state (every state a key), each change also written to the
    run's slot on the board. Reads are a dict's."""

    __slots__ = ("_slot",)

    def __init__(self, slot: memoryview) -> None:
        super().__init__(dict.fromkeys(TaskState, 0))
        self._slot = slot
        slot[:] = memoryview(bytes(len(slot) * 8)).cast("q")

    def __setitem__(self, state: TaskState, n: int) -> None:
        dict.__setitem__(self, state, n)
        self._slot[INDEX[state]] = n


class Board:
    """The manager's side: :meth:`open` a run as it goes live (its engine counts into
    what it returns), :meth:`close` it before it stops being live, :meth:`update` what
    the manager learns of tokens and waiting users. Thread-safe."""

    def __init__(self, path: Path, owner: str, own_users: list[str | None]) -> None:
        self.path = path
        path.unlink(missing_ok=True)  # a previous manager's: its readers keep their copy
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._counts = memoryview(self._map)[_COUNTS:].cast("q")
        self._lock = threading.Lock()
        self._free = deque(range(SLOTS))
        self._runs: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, str] = {}
        self._trouble: list[tuple[str | None, bool]] = []
        self._owner, self._own = owner, own_users
        self._word = 0
        self._map[:8] = MAGIC
        self._publish()

    def open(self, run_id: str, doc: dict[str, Any], user: str | None) -> Counts | None:
        """Put a live run on the board: ``doc`` its run document, ``user`` who submitted
        it. Returns the counts its engine keeps (None: not on the board, as when all
        slots are taken or its document is too big; the manager answers for it)."""
        body = json.dumps(doc)
        if len(body) > MAX_RUN_DOC:
            return None
        with self._lock:
            if not self._free or run_id in self._runs:
                return None
            slot = self._free.popleft()
            counts = Counts(self._counts[slot * WIDTH:(slot + 1) * WIDTH])
            self._runs[run_id] = {"slot": slot, "run": body, "user": user}
            self._publish()
        return counts

    def close(self, run_id: str) -> None:
        """Take a run off the board (before the manager stops answering for it as live)."""
        with self._lock:
            entry = self._runs.pop(run_id, None)
            if entry is not None:
                self._publish()
                self._free.append(entry["slot"])  # reused last: readers see the word flip

    def users(self) -> set[str | None]:
        """Whose the live runs on the board are."""
        with self._lock:
            return {run["user"] for run in self._runs.values()}

    def update(self, tokens: dict[str, str], trouble: list[tuple[str | None, bool]]) -> None:
        """The digests of the (not worker) tokens the manager knows and whose they are;
        for users of live runs, whether their waiting tasks have a problem. Rewrites meta
        only on a change."""
        trouble = sorted(trouble, key=lambda t: (t[0] is not None, t[0] or ""))
        with self._lock:
            if tokens != self._tokens or trouble != self._trouble:
                self._tokens, self._trouble = dict(tokens), trouble
                self._publish()

    def _publish(self) -> None:
        data = json.dumps({"owner": self._owner, "own_users": self._own,
                           "tokens": self._tokens, "trouble": self._trouble,
                           "runs": self._runs}).encode()
        if len(data) > META - 8:  # too many runs: none answered here, all by the manager
            data = json.dumps({"owner": self._owner, "own_users": self._own, "tokens": {},
                               "trouble": [], "runs": {}}).encode()
        region = 1 - (self._word & 1)
        start = _HEAD + region * META
        self._map[start:start + 8] = struct.pack("<II", len(data), zlib.crc32(data))
        self._map[start + 8:start + 8 + len(data)] = data
        self._word = ((self._word >> 1) + 1) * 2 + region
        self._map[8:16] = struct.pack("<q", self._word)


class BoardReader:
    """The status line's side: :meth:`answer` a summary from the board, or None (the
    manager answers it)."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), SIZE, prot=mmap.PROT_READ)
        if self._map[:8] != MAGIC:
            raise ValueError(f"{path} is not a Kale status board")
        self._counts = memoryview(self._map)[_COUNTS:].cast("q")
        self._word = -1
        self._meta: dict[str, Any] = {}

    def _read_word(self) -> int:
        word: int = struct.unpack_from("<q", self._map, 8)[0]
        return word

    def _load(self, word: int) -> bool:
        """The meta document ``word`` points to, parsed (False: torn, read again)."""
        start = _HEAD + (word & 1) * META
        size, crc = struct.unpack_from("<II", self._map, start)
        if size > META - 8:
            return False
        data = self._map[start + 8:start + 8 + size]
        if zlib.crc32(data) != crc:
            return False
        try:
            meta = json.loads(data)
            for run in meta["runs"].values():
                run["head"] = b'{"run": ' + run["run"].encode() + b', "counts": '
            meta["judged"] = {user: bool(bad) for user, bad in meta["trouble"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        self._meta, self._word = meta, word
        return True

    def answer(self, digest: str, run_id: str) -> bytes | None:
        """``GET /api/runs/RUN?tasks=false``'s body for the token of ``digest`` (its
        SHA-256, hex), as the manager would answer it, or None: not a live run on the
        board, not a token the board knows or not its run, or a problem to report."""
        for _ in range(64):
            word = self._read_word()
            if word != self._word and not self._load(word):
                continue
            meta = self._meta
            user = meta["tokens"].get(digest)
            run = meta["runs"].get(run_id)
            if user is None or run is None:
                return None
            if run["user"] not in (meta["own_users"] if user == meta["owner"] else [user]):
                return None
            base = run["slot"] * WIDTH
            values = self._counts[base:base + len(STATES)].tolist()
            if self._read_word() != word:
                continue  # the slot may have changed hands meanwhile
            counts = {s.value: n for s, n in zip(STATES, values, strict=True) if n}
            if counts.get("SUBMITTED") and meta["judged"].get(run["user"], True):
                return None  # a problem to report, or not known yet: the manager says
            return bytes(run["head"]) + json.dumps(counts).encode() + b"}"
        return None
