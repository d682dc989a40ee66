"""The model layer: workflows, tasks, resources, references, selection, states. No I/O.

The names below are imported when first used (PEP 562): a process that only needs the
states (``kale status``, the store) does not build the workflow model's modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kale._lazy import lazy_getattr

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


__getattr__ = lazy_getattr(globals(), _WHERE)
