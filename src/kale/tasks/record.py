"""``kale.record(name, value)``: a task publishes a named value to downstream tasks.

Inside a task, records are appended to the file named by ``$KALE_RECORD_FILE`` (set by
Kale for every task kind, notebook kernels included). Outside a task, ``record`` keeps the
value in memory and returns it, so a notebook runs unchanged when opened by hand.
"""

from __future__ import annotations

import os
import pickle
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


def read_records(path: str | Path) -> dict[str, Any]:
    """All values recorded to ``path``; a later record of a name wins."""
    out: dict[str, Any] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return out
    with f:
        while True:
            try:
                name, value = pickle.load(f)
            except EOFError:
                break
            out[name] = value
    return out
