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
        return {"result_json": None, "result_path": None, "result_hash": NULL_HASH}
    text = as_json(value)
    if text is not None:
        return {"result_json": text, "result_path": None,
                "result_hash": _json_hash(value, files)}
    # A sealed value was pickled where the task ran: kept as those bytes. (Sealed items
    # inside a value pickle as "open these bytes".)
    blob = value.blob if isinstance(value, Sealed) else serial.dumps(value)
    path = Path(workdir, RESULT_FILE)
    path.write_bytes(blob)
    return {"result_json": None, "result_path": str(path), "result_hash": _hash(blob)}


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
            return all(os.path.exists(p) for p in named) \
                and not _changed_since(named, rec.ended_at)  # (else: its members judge)
        if isinstance(result, dict):
            for pattern in task.outputs:
                paths = str(result.get(pattern, "")).split(",")
                if not all(p and os.path.exists(p) for p in paths):
                    return False
            files = output_files(task, result)
            if files and _changed_since(files.values(), rec.ended_at) \
                    and _json_hash(result, files) != rec.result_hash:
                return False
    return True


#: file times come from the kernel's coarse clock, up to a tick (1-10 ms) behind
#: ``time.time()``: an edit made just after a task ended may carry an earlier time than
#: its end. Files with times this close to the end count as changed (read again).
CLOCK_SLACK = 0.05


def _changed_since(paths: Iterable[str], ended: float | None) -> bool:
    """Whether a file of ``paths`` (joined by commas; a directory: any file in it) was
    changed (or its metadata: ``ctime``, which a copy that keeps times still sets) after
    ``ended`` (unknown: yes), or so close to it that the file's clock cannot tell."""
    if ended is None:
        return True
    ended -= CLOCK_SLACK
    for joined in paths:
        for path in joined.split(","):
            p = Path(path)
            try:
                for f in [p] if not p.is_dir() else [p, *p.rglob("*")]:
                    st = f.stat()
                    if max(st.st_mtime, st.st_ctime) > ended:
                        return True
            except OSError:
                return True
    return False


def content_hash(paths: str) -> str:
    """Hash of the content of files or directories (paths joined by commas, as a result
    names several matches of a glob), independent of where they are."""
    h = hashlib.sha256()
    for path in paths.split(","):
        p = Path(path)
        items = [(p, "")] if not p.is_dir() else sorted(
            (f, str(f.relative_to(p))) for f in p.rglob("*") if f.is_file())
        for f, rel in items:
            h.update(f"\0{rel}\0".encode())
            try:
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            except OSError:
                h.update(b"\0missing")
    return h.hexdigest()[:32]


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
