"""Tasks that a task adds to its run (``kale.add_tasks``): checked as any workflow is, and
renamed into the run (``refine`` added by ``plan`` is ``plan[refine]``). No I/O here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from kale.errors import Problem, ValidationError
from kale.model.refs import Ref
from kale.model.workflow import NAME, Task, Workflow, _task_from_dict


def added_tasks(parent: str, data: Any, known: Collection[str], params: Mapping[str, Any],
                base_dir: Path | None) -> tuple[list[Task], list[Problem]]:
    """The tasks a task added (a workflow's canonical dict, or its ``tasks``), validated as
    any workflow is, renamed into the run, in an order that respects their dependencies.
    They may depend on each other and on ``known`` tasks of the run (those that
    succeeded)."""
    tasks = data.get("tasks") if isinstance(data, dict) and "tasks" in data else data
    if not isinstance(tasks, dict) or not tasks:
        return [], [Problem("kale.add_tasks() needs a workflow with at least one task")]
    stubs = {n: {"shell": "true"} for n in known if n not in tasks and NAME.fullmatch(n)}
    wf, problems = Workflow.parse({"name": "added", "parameters": dict(params),
                                   "tasks": {**stubs, **tasks}}, base_dir=base_dir,
                                  trusted=True)
    if problems:
        return [], problems
    names = {n: f"{parent}[{n}]" for n in tasks}
    return [renamed(wf.tasks[n], names) for n in wf.order() if n in names], []


def renamed(task: Task, names: Mapping[str, str]) -> Task:
    """``task`` with its name and every reference to the tasks in ``names`` renamed."""
    def value(v: Any) -> Any:
        if isinstance(v, Ref):
            return Ref(names.get(v.task, v.task), v.key) if not v.is_param else v
        if isinstance(v, list):
            return [value(x) for x in v]
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        return v

    def text(t: str, *, dot: bool) -> str:  # in a command, a reference has a dot
        after = r"(?=\s*\.)" if dot else r"(?=[\s.}])"
        return re.sub(r"(\$\{\s*)([A-Za-z_][\w-]*)" + after,
                      lambda m: m.group(1) + names.get(m.group(2), m.group(2)), t)

    target = task.target
    if task.kind == "shell":
        target = text(target, dot=True) if isinstance(target, str) \
            else [text(a, dot=True) for a in target]
    return dataclasses.replace(
        task, name=names[task.name], target=target, after=[names.get(a, a) for a in task.after],
        parameters=value(task.parameters), map=value(task.map) if task.map else task.map,
        when=text(task.when, dot=False) if task.when else task.when)


def added_task(name: str, data: dict[str, Any]) -> Task:
    """A task a run added, from its stored row (already renamed and validated)."""
    task, problems = _task_from_dict("added", data, trusted=True)
    if task is None or problems:
        raise ValidationError(problems)
    return dataclasses.replace(task, name=name)
