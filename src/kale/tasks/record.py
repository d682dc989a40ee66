"""``kale.record(name, value)``: a task publishes a named value to downstream tasks.

Inside a task, records are appended to the file named by ``$KALE_RECORD_FILE`` (set by
Kale for every task kind, notebook kernels included). Outside a task, ``record`` keeps the
value in memory and returns it, so a notebook runs unchanged when opened by hand.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

ENV = "KALE_RECORD_FILE"
_local: dict[str, Any] = {}


def record(name: str, value: Any) -> Any:
    """Record ``value`` under ``name`` as part of the current task's result."""
    if not isinstance(name, str) or not name:
        raise ValueError("record(name, value): name must be a non-empty string")
    path = os.environ.get(ENV)
    if not path:
        _local[name] = value
        return value
    try:
        blob = pickle.dumps((name, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        blob = cloudpickle.dumps((name, value))
    with open(path, "ab") as f:
        f.write(blob)
    return value


def read_records(path: str | Path, base_dir: str | Path | None = None) -> dict[str, Any]:
    """All values recorded to ``path``; a later record of a name wins. Values whose
    classes live in modules beside the workflow are found through ``base_dir``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    try:
        return _unpickle_all(data)
    except ImportError:
        if base_dir is None or str(base_dir) in sys.path:
            raise
        sys.path.append(str(base_dir))
        return _unpickle_all(data)


def _unpickle_all(data: bytes) -> dict[str, Any]:
    import io

    out: dict[str, Any] = {}
    f = io.BytesIO(data)
    while f.tell() < len(data):
        name, value = pickle.load(f)
        out[name] = value
    return out
