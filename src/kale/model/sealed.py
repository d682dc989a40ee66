"""Pickled values the manager carries but never opens.

A manager may serve several users (a shared PostgreSQL store), so it must never unpickle
what a client or a worker sends: unpickling runs code. Python functions defined in a
notebook, and task results that are not plain JSON, therefore travel through it *sealed*:
as the bytes their owner's process made. Only the owner's own processes open them — a
worker running that user's task, or the user's client.

The trick that keeps this free of special cases downstream: a sealed value pickles as the
instruction "unpickle these bytes". When the manager sends a task to a worker (the task's
context is pickled), every sealed function, result and result item inside becomes the real
value again as the worker reads the context; when a result that holds sealed items is
stored, the stored pickle opens to the real values for whoever loads it. The manager only
ever *writes* pickles of sealed values; it never reads one.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sealed:
    """A pickled value (``blob``), opened only by its owner's processes."""

    blob: bytes

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _open, (self.blob,)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()

    def item(self, key: str, task: str) -> SealedItem:
        """``value[key]``, taken where the value is opened (a reference
        ``${task.result.key}`` into a result the manager cannot look into)."""
        return SealedItem(self.blob, key, task)

    def __repr__(self) -> str:
        return f"<sealed value, {len(self.blob)} bytes>"


@dataclass(frozen=True, slots=True)
class SealedItem:
    """``key`` of a sealed value: resolved where it is opened."""

    blob: bytes
    key: str
    task: str

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _open_item, (self.blob, self.key, self.task)


@dataclass(frozen=True, slots=True)
class SealedFunction:
    """A Python task's function pickled by value (defined in a notebook or script), as a
    stored workflow holds it: ``{"pickle": base64, "name": ..., "file": ...}``."""

    pickle: str          # base64 of cloudpickle.dumps(function)
    name: str
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pickle": self.pickle, "name": self.name}
        if self.file is not None:
            out["file"] = self.file
        return out

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _open_function, (self.pickle, self.file)

    def __repr__(self) -> str:
        return f"<sealed function {self.name}>"


def _open(blob: bytes) -> Any:
    import pickle

    return pickle.loads(blob)


class SealedKeyMissing(LookupError):
    """A reference asked for a key its (sealed) result does not have: raised where the
    result is opened, with the message :class:`kale.model.refs.MissingResult` gives."""


def _open_item(blob: bytes, key: str, task: str) -> Any:
    value = _open(blob)
    try:
        return value[key]
    except (KeyError, TypeError, IndexError):
        raise SealedKeyMissing(
            f"result of task {task!r} has no key {key!r}"
            + (f" (it has: {', '.join(map(str, value))})" if isinstance(value, dict) else "")
        ) from None


def _open_function(pickled: str, file: str | None) -> Any:
    import cloudpickle

    return restore_filename(cloudpickle.loads(base64.b64decode(pickled)), file)


def restore_filename(func: Any, filename: str | None) -> Any:
    """Give a function pickled by value back the name of the file it came from, so its
    traceback shows the user's source lines (cloudpickle 3.1.3 and later write
    ``<dynamic-code>`` instead, for deterministic payloads)."""
    code = getattr(func, "__code__", None)
    if filename and code is not None and code.co_filename != filename:
        func.__code__ = _with_filename(code, filename)
    return func


def _with_filename(code: Any, filename: str) -> Any:
    consts = tuple(_with_filename(c, filename) if hasattr(c, "co_filename") else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
