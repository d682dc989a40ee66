"""Papermill-style parameter injection: a new code cell tagged ``injected-parameters``
right after the cell tagged ``parameters`` (or at the top), assigning each parameter.

A value whose ``repr`` reads back as an equal literal of the same type is written as that
literal; anything else (datetimes, sets of custom objects, arrays...) is pickled to a file
beside the executed notebook and loaded by the injected cell.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell

from kale import serial
from kale.errors import KaleError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
PICKLE_DIR = ".kale-params"
MAX_LITERAL = 100_000  # characters; bigger values are pickled to keep the notebook small


class ParameterError(KaleError):
    """A parameter cannot be passed to a notebook."""


def _tags(cell: NotebookNode) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


def has_parameters_cell(nb: NotebookNode) -> bool:
    """Whether a cell of ``nb`` is tagged ``parameters`` (else parameters go at the top)."""
    return any(PARAMETERS_TAG in _tags(c) for c in nb.cells)


def literal(value: Any) -> str | None:
    """``repr(value)`` if it evaluates back to an equal value of the same type, else None."""
    try:
        text = repr(value)
        if len(text) > MAX_LITERAL:
            return None
        back = ast.literal_eval(text)
        if type(back) is type(value) and bool(back == value):
            return text
    except Exception:
        pass
    return None


def _dump(name: str, value: Any, folder: Path) -> Path:
    try:
        blob = serial.dumps(value)
    except Exception as e:  # not even cloudpickle can pickle it
        raise ParameterError(f"parameter {name!r} cannot be pickled: "
                             f"{type(e).__name__}: {e}") from e
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pkl"
    path.write_bytes(blob)
    return path


def parameters_source(params: Mapping[str, Any], workdir: Path) -> str:
    """The injected cell's source: one assignment per parameter."""
    lines = ["# Parameters"]
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ParameterError(f"parameter name {name!r} is not a Python identifier, so it "
                                 "cannot be passed to a notebook")
        text = literal(value)
        if text is None:
            path = _dump(name, value, workdir / PICKLE_DIR)
            text = f'__import__("pickle").load(open({str(path)!r}, "rb"))'
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"


def inject(nb: NotebookNode, params: Mapping[str, Any], workdir: Path) -> list[int | None]:
    """Insert the parameters cell into ``nb`` (in place). Cells tagged
    ``injected-parameters`` from an earlier run are removed first, as papermill does.

    Returns, for every cell of the result, its index in the notebook as read (None for
    the injected cell), so errors name the cell the user sees in their own notebook.
    """
    cells = list(nb.cells)
    origin: list[int | None] = []
    kept: list[NotebookNode] = []
    for i, cell in enumerate(cells):
        if INJECTED_TAG in _tags(cell):
            continue
        kept.append(cell)
        origin.append(i)
    if params:
        cell = new_code_cell(parameters_source(params, workdir),
                             metadata={"tags": [INJECTED_TAG]})  # type: ignore[no-untyped-call]
        if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) < (4, 5):
            cell.pop("id", None)  # cell ids are only valid from nbformat 4.5
        at = next((j + 1 for j, c in enumerate(kept) if PARAMETERS_TAG in _tags(c)), 0)
        kept.insert(at, cell)
        origin.insert(at, None)
    nb.cells = kept
    return origin
