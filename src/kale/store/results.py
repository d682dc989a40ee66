"""How task results are kept: JSON in the store when the value survives JSON unchanged,
otherwise a pickle file beside the task. Both give a content hash for result reuse."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kale import serial
from kale.model.sealed import Sealed
from kale.model.workflow import Task
from kale.store.store import TaskRecord

RESULT_FILE = ".kale-result.pkl"


def encode(value: Any, workdir: str | Path, files: Mapping[str, str] | None = None
           ) -> dict[str, Any]:
    """Columns (``result_json``/``result_path``/``result_hash``) for a task's result.

    ``files``: the declared outputs in the result (name -> path, or paths joined by commas).
    The hash covers their *content*, not where they are: the same files made again in
    another run's directory are the same result."""
    if value is None:
        return {"result_json": None, "result_path": None, "result_hash": NULL_HASH,
                "outputs": None}
    text = as_json(value)
    if text is not None:
        # (their metadata before their content: a write in between shows as a change)
        made = json.dumps(fingerprints(files.values())) if files else None
        return {"result_json": text, "result_path": None,
                "result_hash": _json_hash(value, files), "outputs": made}
    # A sealed value was pickled where the task ran: kept as those bytes. (Sealed items
    # inside a value pickle as "open these bytes".)
    blob = value.blob if isinstance(value, Sealed) else serial.dumps(value)
    path = Path(workdir, RESULT_FILE)
    path.write_bytes(blob)
    return {"result_json": None, "result_path": str(path), "result_hash": _hash(blob),
            "outputs": None}


def as_json(value: Any) -> str | None:
    """``value`` as JSON text, if JSON gives back the very same value (same types: a
    tuple or an int-keyed dict would come back changed); else None."""
    try:
        text = json.dumps(value, sort_keys=False, allow_nan=True)
        back = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None
    try:
        return text if back == value and _same_types(back, value) else None
    except Exception:  # an __eq__ that raises (numpy arrays inside, say)
        return None


def decode(rec: TaskRecord, base_dir: str | Path | None = None, *,
           sealed: bool = False) -> Any:
    """A stored result. ``sealed`` (in a manager): a pickled one is not opened but
    returned as :class:`~kale.model.sealed.Sealed` bytes, for the owner's processes."""
    if rec.result_json is not None:
        return json.loads(rec.result_json)
    if rec.result_path:
        blob = Path(rec.result_path).read_bytes()
        return Sealed(blob) if sealed else loads(blob, base_dir)
    return None


def loads(blob: bytes, base_dir: str | Path | None = None) -> Any:
    """Unpickle a value a task made. Its classes may live in modules beside the workflow,
    which task processes import from ``base_dir``: look there too."""
    return serial.loads(blob, base_dir)


def _json_hash(value: Any, files: Mapping[str, str] | None) -> str:
    """The hash of a JSON result, its declared output files by their content."""
    view = value
    if files and isinstance(value, dict):
        view = {k: (f"content:{content_hash(v)}"
                    if k in files and v == files[k] else v) for k, v in value.items()}
    # Equal values are the same result, as Python's == says: a dict's order is not part
    # of it (a dict built from a set comes in another order in each process)
    return _hash(json.dumps(view, sort_keys=True).encode())


def output_files(task: Task, result: Any) -> dict[str, str]:
    """The declared output files in a shell or notebook task's result (name -> path, or
    paths joined by commas): their content, not their path, is in the result's hash."""
    if task.kind == "python" or not isinstance(result, dict):
        return {}
    return {o: result[o] for o in task.outputs if isinstance(result.get(o), str)}


def available(rec: TaskRecord, task: Task | None = None) -> bool:
    """Whether a stored result can still be used: its pickle file and the task's declared
    outputs it names still exist, and output files changed since the task ended (a task
    below that edited one in place, a person) still have the content the result's hash
    covers (read again only then: a file untouched since is taken as it was)."""
    if rec.result_path and not Path(rec.result_path).is_file():
        return False
    if task is not None and task.outputs and rec.result_json:
        result = json.loads(rec.result_json)
        if task.map is not None and isinstance(result, list):  # a map: its members' files
            named = [p for r in result for v in output_files(task, r).values()
                     for p in v.split(",")]
            # (changed: not taken whole; its members judge)
            return all(os.path.exists(p) for p in named) \
                and not _changed_since(named, rec.ended_at, rec.outputs)
        if isinstance(result, dict):
            for pattern in task.outputs:
                paths = str(result.get(pattern, "")).split(",")
                if not all(p and os.path.exists(p) for p in paths):
                    return False
            files = output_files(task, result)
            if files and _changed_since(files.values(), rec.ended_at, rec.outputs) \
                    and _json_hash(result, files) != rec.result_hash:
                return False
    return True


def fingerprints(paths: Iterable[str]) -> dict[str, list[int]]:
    """Files as they are now (``paths``: each entry paths joined by commas; a directory:
    it and every file in it): path -> ``[size, mtime_ns, ctime_ns, inode]``, ``[]`` for
    one that is missing. A write sets the ctime, which no one can set back, and a file
    put in another's place has another inode: unchanged metadata means an untouched file.
    This compares the file system's times with its own, never with this host's clock (a
    shared file system's server may keep another time)."""
    found: dict[str, list[int]] = {}
    for joined in paths:
        for path in joined.split(","):
            p = Path(path)
            for f in [p, *(_inside(p) or ())]:
                try:
                    st = f.stat()
                except OSError:
                    found[str(f)] = []
                    continue
                found[str(f)] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return found


#: file times come from the kernel's coarse clock, up to a tick (1-10 ms) behind
#: ``time.time()``: an edit made just after a task ended may carry an earlier time than
#: its end. Files with times this close to the end count as changed (read again).
CLOCK_SLACK = 0.05


def _changed_since(paths: Iterable[str], ended: float | None,
                   made: Mapping[str, list[int]] | None = None) -> bool:
    """Whether a file of ``paths`` (joined by commas; a directory: any file in it) may
    have changed since its task made it: its metadata is not ``made``, what it was then
    (:func:`fingerprints`; None, recorded by a Kale before schema 6: times alone tell);
    or its time (``ctime`` too, which a copy that keeps times still sets) is after
    ``ended`` (unknown: yes), or so close to it that the file's clock cannot tell (a
    write moments after the task ended, within the tick, keeps size and times)."""
    found = fingerprints(paths)
    if made is not None and found != made:
        return True
    if ended is None:
        return True
    edge = (ended - CLOCK_SLACK) * 1e9
    return any(not fp or max(fp[1], fp[2]) > edge for fp in found.values())


def content_hash(paths: str) -> str:
    """Hash of the content of files or directories (paths joined by commas, as a result
    names several matches of a glob), independent of where they are."""
    h = hashlib.sha256()
    for path in paths.split(","):
        p = Path(path)
        inside = _inside(p)
        items = [(p, "")] if inside is None else \
            [(f, str(f.relative_to(p))) for f in inside if _is_file(f)]
        for f, rel in items:
            h.update(f"\0{rel}\0".encode())
            try:
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            except OSError:
                h.update(b"\0missing")
    return h.hexdigest()[:32]


def _inside(path: Path) -> list[Path] | None:
    """Every path in the directory ``path``, sorted; None if it is not a directory, or
    cannot be listed (removed while it is read, unreadable, a name the system refuses):
    it is then read as a file (and found missing), which no listing recorded matches,
    and it never stops the engine."""
    try:
        return sorted(path.rglob("*")) if path.is_dir() else None
    except OSError:
        return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:32]


#: the hash of a result of None (most tasks'), made once
NULL_HASH = _hash(b"null")


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    return True
