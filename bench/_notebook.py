"""The trivial notebook both notebook peers run: a ``parameters`` cell and one more."""

from __future__ import annotations

from pathlib import Path

import nbformat


def make_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("y = x + 1\ny")]
    nbformat.write(nb, path)
    return path
