"""How Kale pickles values: the one place for "pickle, else cloudpickle" and for "unpickle,
looking beside the workflow for the classes".

- :func:`dumps`: the standard pickle at its highest protocol; what it cannot pickle (a
  function or class defined in a notebook, a lambda) goes through cloudpickle, which
  pickles such things by value. The bytes are exactly what those two calls give, so
  result hashes (:mod:`kale.store.results`) and stored results stay valid.
- :func:`loads` (and :func:`importing_from`, for readers of several pickles): the classes
  of a value a task made may live in modules beside the workflow, which task processes
  import from the workflow's folder; when unpickling fails to import one, that folder is
  put on ``sys.path`` and the read is tried once more.

Imports only the standard library (cloudpickle when first needed): a warm Python worker
(:mod:`kale.tasks._pyworker`), a task kernel (``kale.record``) and the worker link load it.
Functions pickled by value for a task are :mod:`kale.tasks.pickled`; values a manager keeps
sealed for their owner are :mod:`kale.model.sealed`.
"""

from __future__ import annotations

import pickle
import sys
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["dumps", "importing_from", "loads"]

T = TypeVar("T")


def dumps(value: Any) -> bytes:
    """``value`` pickled: by :mod:`pickle` (highest protocol), else by cloudpickle."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # functions defined in a notebook, lambdas, local classes
        import cloudpickle

        return bytes(cloudpickle.dumps(value))


def loads(blob: bytes, base_dir: str | Path | None = None) -> Any:
    """Unpickle a value a task made; its classes may be in modules in ``base_dir``."""
    return importing_from(base_dir, lambda: pickle.loads(blob))


def importing_from(base_dir: str | Path | None, read: Callable[[], T]) -> T:
    """``read()``; if it fails to import a module, once more with ``base_dir`` appended
    to ``sys.path`` (unless it is there already: then the error stands)."""
    try:
        return read()
    except ImportError:
        if base_dir is None or str(base_dir) in sys.path:
            raise
        sys.path.append(str(base_dir))
        return read()
