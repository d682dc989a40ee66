"""The model layer: workflows, tasks, resources, references, selection, states. No I/O.

The names below are imported when first used (PEP 562): a process that only needs the
states (``kale status``, the store) does not build the workflow model's modules."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kale.model.refs import Ref
    from kale.model.resources import Resources
    from kale.model.selection import Selection
    from kale.model.states import RunState, TaskState
    from kale.model.workflow import Task, Workflow

__all__ = ["Ref", "Resources", "RunState", "Selection", "Task", "TaskState", "Workflow"]

_WHERE = {"Ref": "kale.model.refs", "Resources": "kale.model.resources",
          "Selection": "kale.model.selection", "RunState": "kale.model.states",
          "TaskState": "kale.model.states", "Task": "kale.model.workflow",
          "Workflow": "kale.model.workflow"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kale.model' has no attribute {name!r}")
