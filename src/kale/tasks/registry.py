"""Task kinds are plug-ins: the ``kale.task_kinds`` entry point maps a kind name to its
runner class. The built-in kinds are registered the same way (see pyproject.toml)."""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from kale.errors import KaleError
from kale.tasks.base import TaskRunner

GROUP = "kale.task_kinds"
_BUILTIN = {
    "shell": "kale.tasks.shell:ShellRunner",
    "python": "kale.tasks.python:PythonRunner",
    "notebook": "kale.tasks.notebook:NotebookRunner",
}


@cache
def _registered() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    return {**_BUILTIN, **found}


def runner_kind(task: Any) -> str:
    """Which runner runs ``task``: its kind's, except that a Python task given a
    ``kernel`` runs in a Jupyter kernel (the notebook runner's, as a one-cell notebook)."""
    if task.kind == "python" and task.kernel:
        return "notebook"
    return str(task.kind)


def runner_class(kind: str) -> type[TaskRunner]:
    spec = _registered().get(kind)
    if spec is None:
        raise KaleError(f"no runner for task kind {kind!r} (known: {', '.join(_registered())})")
    module, _, name = spec.partition(":")
    cls: type[TaskRunner] = getattr(import_module(module), name)
    return cls
