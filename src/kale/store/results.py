"""How task results are kept: JSON in the store when the value survives JSON unchanged,
otherwise a pickle file beside the task. Both give a content hash for result reuse."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from kale.store.store import TaskRecord

RESULT_FILE = ".kale-result.pkl"


def encode(value: Any, workdir: Path) -> dict[str, Any]:
    """Columns (``result_json``/``result_path``/``result_hash``) for a task's result."""
    if value is None:
        return {"result_json": None, "result_path": None, "result_hash": _hash(b"null")}
    try:
        text = json.dumps(value, sort_keys=False, allow_nan=True)
        if json.loads(text) == value and _same_types(json.loads(text), value):
            return {"result_json": text, "result_path": None,
                    "result_hash": _hash(json.dumps(value, sort_keys=True).encode())}
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        blob = cloudpickle.dumps(value)
    path = workdir / RESULT_FILE
    path.write_bytes(blob)
    return {"result_json": None, "result_path": str(path), "result_hash": _hash(blob)}


def decode(rec: TaskRecord) -> Any:
    if rec.result_json is not None:
        return json.loads(rec.result_json)
    if rec.result_path:
        return pickle.loads(Path(rec.result_path).read_bytes())
    return None


def available(rec: TaskRecord) -> bool:
    """Whether a stored result (and the files it names) can still be used."""
    return not rec.result_path or Path(rec.result_path).is_file()


def _hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:32]


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    return True
