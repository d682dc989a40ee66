"""Functions pickled by value (defined in a notebook or script) keep the name of the file
they came from, so a task's traceback shows the user's source lines. cloudpickle 3.1.3
and later write ``<dynamic-code>`` instead, for deterministic payloads."""

from __future__ import annotations

from typing import Any

from kale.model.sealed import restore_filename

__all__ = ["dumps", "loads", "restore_filename"]


def dumps(func: Any) -> bytes:
    import cloudpickle

    code = getattr(func, "__code__", None)
    return bytes(cloudpickle.dumps((func, code.co_filename if code is not None else None)))


def loads(blob: bytes) -> Any:
    import cloudpickle

    func, filename = cloudpickle.loads(blob)
    return restore_filename(func, filename)
