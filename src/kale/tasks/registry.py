"""Task kinds are plug-ins: the ``kale.task_kinds`` entry point maps a kind's name to its
runner class (``name = "module:TaskRunnerSubclass"``). Kale's own kinds are registered the
same way, in its pyproject.toml; :mod:`kale.plugins` lists the names (the only list of
them), and this module loads the runner of one."""

from __future__ import annotations

from typing import Any

from kale import plugins
from kale.errors import KaleError
from kale.tasks.base import TaskRunner

GROUP = plugins.TASK_KINDS


def runner_kind(task: Any) -> str:
    """Which runner runs ``task``: its kind's, except that a Python task given a
    ``kernel`` runs in a Jupyter kernel (the notebook runner's, as a one-cell notebook)."""
    if task.kind == "python" and task.kernel:
        return "notebook"
    return str(task.kind)


def runner_class(kind: str) -> type[TaskRunner]:
    """The runner class of task kind ``kind``. Raises :class:`KaleError` for a kind that
    is not registered, or whose entry point does not give a :class:`TaskRunner`."""
    entry = plugins.entries(GROUP).get(kind)
    if entry is None:
        raise KaleError(f"no runner for task kind {kind!r} "
                        f"(known: {', '.join(plugins.names(GROUP))})")
    cls = plugins.load(entry)
    if not (isinstance(cls, type) and issubclass(cls, TaskRunner)):
        raise KaleError(f"task kind {entry} does not give a subclass of "
                        f"kale.tasks.base.TaskRunner (got {cls!r})")
    return cls
