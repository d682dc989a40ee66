"""Kale: HPC workflows in Jupyter.

Build a :class:`Workflow` of shell, Python and notebook tasks, run all or part of it, watch
it, and step into it. Importing :mod:`kale` is cheap: names load on first use, so
``kale.record`` inside a task kernel does not pull in the engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Workflow": "kale.api",
    "Task": "kale.model.workflow",
    "Resources": "kale.model.resources",
    "Ref": "kale.model.refs",
    "TaskState": "kale.model.states",
    "RunState": "kale.model.states",
    "Selection": "kale.model.selection",
    "RunOptions": "kale.model.options",
    "Run": "kale.api",
    "Client": "kale.api",
    "runs": "kale.api",
    "get_run": "kale.api",
    "record": "kale.tasks.record",
    "add_tasks": "kale.tasks.record",
    "KaleError": "kale.errors",
    "ValidationError": "kale.errors",
    "TaskError": "kale.errors",
    "NotebookCellError": "kale.errors",
}

__all__ = [
    "Client", "KaleError", "NotebookCellError", "Ref", "Resources", "Run", "RunOptions",
    "RunState", "Selection",
    "Task", "TaskError", "TaskState", "ValidationError", "Workflow", "__version__",
    "add_tasks", "get_run", "record", "runs",
]

if TYPE_CHECKING:
    __version__: str
    from kale.api import Client, Run, Workflow, get_run, runs
    from kale.errors import KaleError, NotebookCellError, TaskError, ValidationError
    from kale.model.options import RunOptions
    from kale.model.refs import Ref
    from kale.model.resources import Resources
    from kale.model.selection import Selection
    from kale.model.states import RunState, TaskState
    from kale.model.workflow import Task
    from kale.tasks.record import add_tasks, record


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read from the package metadata on first use, then kept
        from kale.config import version

        globals()[name] = value = version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kale' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
