"""What an exported CWL document names before any tool is written: the workflow inputs
(one per workflow parameter, and the workflow's folder), each task's output ports, and
the values a shell task reads from a Python or notebook task. Refuses, naming the task
and the feature, what has no CWL form.

Invariants: every id this module gives is a valid CWL identifier, unique where CWL needs
it; a reference a shell task makes is either to a workflow parameter, to a declared
(non-glob) output file of a shell or notebook task, or to a value of a Python or notebook
task's result (which that task's tool then writes as a ``string`` output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kale.cwl.export_values import NIL, cwl_type, ident, is_glob
from kale.errors import UsageError
from kale.model.refs import Ref, iter_refs
from kale.model.workflow import Task, Workflow

#: the workflow input (and runner tool input) holding the workflow's folder
BASE = "kale_base"
#: a shell tool's output holding what the task recorded (``kale record``), if anything
RECORDS = "kale_records"
#: a runner tool's output holding the task's result (JSON, else pickled)
RESULT = "kale_result"
#: a notebook tool's output holding the executed notebook (as Kale keeps it with the run)
NOTEBOOK = "kale_notebook"
RUNNER_KINDS = ("python", "notebook")
_RESERVED = {BASE, RECORDS, RESULT, NOTEBOOK, NIL, "kale_task"}


@dataclass
class Plan:
    """The names of one export. ``params``: parameter name -> workflow input id;
    ``outs``: task -> declared output pattern -> output id of its tool; ``values``: task ->
    result key -> output id of the ``string`` its tool writes for a downstream shell task."""

    wf: Workflow
    python: str
    params: dict[str, str] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)
    outs: dict[str, dict[str, str]] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)

    def handle(self, name: str) -> str:
        """The output of a task's tool that every task after it takes (its records, or its
        result): what orders the steps, as ``after`` does."""
        return RECORDS if self.wf.tasks[name].kind == "shell" else RESULT

    def handle_type(self, name: str) -> Any:
        return ["null", "File"] if self.wf.tasks[name].kind == "shell" else "File"

    @property
    def runners(self) -> bool:
        """Whether some task runs through Kale's runner (and needs the workflow's folder)."""
        return any(t.kind in RUNNER_KINDS for t in self.wf.tasks.values())


def make_plan(wf: Workflow, python: str) -> Plan:
    plan = Plan(wf, python)
    taken = set(_RESERVED)
    for pname, value in wf.parameters.items():
        plan.params[pname] = ident(pname, taken)
        plan.types[pname] = cwl_type(value)
    for name, task in wf.tasks.items():
        _refuse(task)
        used = set(_RESERVED)
        plan.outs[name] = {p: ident(p, used) for p in task.outputs}
        plan.values[name] = {}
    for task in wf.tasks.values():
        if task.kind == "shell":
            for ref in shell_refs(task):
                _value_port(plan, task, ref)
    return plan


def _refuse(task: Task) -> None:
    def no(feature: str, why: str) -> UsageError:
        return UsageError(f"task {task.name!r} cannot be written as CWL: {feature} ({why})")

    if task.kind not in ("shell", *RUNNER_KINDS):
        raise no(f"its kind {task.kind!r}", "only shell, python and notebook tasks export")
    if task.interactive is not None:
        raise no("it is an interactive step", "CWL has no step that waits for a person")
    if task.site is not None:
        raise no(f"it runs at site {task.site!r}", "a CWL runner runs every step itself")


def shell_refs(task: Task) -> list[Ref]:
    """The references a shell task makes (command first, then parameters), each once.
    A reference nested inside a parameter's list or dict has no CWL form without
    JavaScript, and is refused."""
    out: list[Ref] = []
    for ref in task.refs():
        if ref not in out:
            out.append(ref)
    for key, value in task.parameters.items():
        if not isinstance(value, Ref) and any(True for _ in iter_refs(value)):
            raise UsageError(
                f"task {task.name!r} cannot be written as CWL: its parameter {key!r} holds "
                "references inside a list or mapping (CWL builds no such value without "
                "JavaScript); give each reference a parameter of its own")
    return out


def _value_port(plan: Plan, task: Task, ref: Ref) -> None:
    """Check a shell task's reference, and give a value it reads from a Python or
    notebook task an output port there."""
    def no(why: str) -> UsageError:
        return UsageError(f"task {task.name!r} cannot be written as CWL: it refers to "
                          f"{ref}, {why}")

    if ref.is_param:
        if ref.key is None:
            raise no("every workflow parameter at once (CWL builds no such value without "
                     "JavaScript); refer to each one")
        return
    up = plan.wf.tasks[ref.task]

    if ref.key is None:
        raise no("a whole result (CWL passes a shell command files and single values)")
    if up.kind != "python" and ref.key in up.outputs:
        if is_glob(ref.key):
            raise no("the files of a glob, which Kale gives as one comma-joined text "
                     "(CWL cannot join them without JavaScript); refer to one file")
        return
    if up.kind == "shell":
        raise no("a value a shell task records (a CWL command line tool's outputs are "
                 "files); record it in a Python or notebook task, or pass a file")
    ports = plan.values[up.name]
    if ref.key not in ports:
        ports[ref.key] = ident("v_" + ref.key, set(ports.values()) | _RESERVED
                               | set(plan.outs[up.name].values()))
