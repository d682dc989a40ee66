"""Functions pickled by value (defined in a notebook or script) keep the name of the file
they came from, so a task's traceback shows the user's source lines. cloudpickle 3.1.3
and later write ``<dynamic-code>`` instead, for deterministic payloads."""

from __future__ import annotations

from typing import Any


def dumps(func: Any) -> bytes:
    import cloudpickle

    code = getattr(func, "__code__", None)
    return bytes(cloudpickle.dumps((func, code.co_filename if code is not None else None)))


def loads(blob: bytes) -> Any:
    import cloudpickle

    func, filename = cloudpickle.loads(blob)
    return restore_filename(func, filename)


def restore_filename(func: Any, filename: str | None) -> Any:
    code = getattr(func, "__code__", None)
    if filename and code is not None and code.co_filename != filename:
        func.__code__ = _with_filename(code, filename)
    return func


def _with_filename(code: Any, filename: str) -> Any:
    consts = tuple(_with_filename(c, filename) if hasattr(c, "co_filename") else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
