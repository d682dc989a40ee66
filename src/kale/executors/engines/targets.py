"""What an engine's spec names, imported: ``module:name`` or ``file.py:name`` (a cluster
class, a Parsl config), resolved against the workflow's folder."""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path
from typing import Any

from kale.errors import UsageError


def load_target(value: str, base_dir: Path, what: str) -> Any:
    """The object ``value`` names. A relative ``file.py`` and a module that is not
    installed are looked up in ``base_dir`` (the workflow's folder) first. Raises
    :class:`UsageError` saying what could not be loaded and why."""
    where, _, name = value.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            path = path if path.is_absolute() else base_dir / path
            namespace: dict[str, Any] = runpy.run_path(str(path))
            obj: Any = namespace[name.split(".")[0]]
            rest = name.split(".")[1:]
        else:
            if str(base_dir) not in sys.path:
                sys.path.insert(0, str(base_dir))
            obj, rest = importlib.import_module(where), name.split(".")
        for part in rest:
            obj = getattr(obj, part)
    except Exception as e:  # the user's module: say which and why, not a traceback
        raise UsageError(f"{what} {value!r}: cannot load it: {type(e).__name__}: {e}") from e
    return obj
