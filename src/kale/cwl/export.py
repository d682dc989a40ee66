"""A Kale workflow as one CWL v1.2 document: :func:`dump_cwl`.

The document is a ``$graph``: ``#main``, the Workflow (one input per workflow parameter,
with its value as default, and ``kale_base``, the workflow's folder, when a Python or
notebook task needs it; one step per task; every declared output file, and every Python
or notebook task's result file, and every executed notebook, as workflow outputs named
``TASK__PORT``), then one
CommandLineTool per task (:mod:`kale.cwl.export_tools`). ``cwltool wf.cwl`` runs it with
no job file; a job file sets parameters (``n: 5``) or points ``kale_base`` at a copy of the
workflow's folder (``kale_base: {class: Directory, path: /elsewhere}``).

What Kale does that CWL has no form for is refused (interactive steps, sites, other task
kinds, some references: :mod:`kale.cwl.export_plan`) or, where the outputs do not depend
on it (executors, retries, tags, debug), listed in a comment at the top of the document.
Timeouts become ``ToolTimeLimit``, resources a ``ResourceRequirement`` hint.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from kale.config import version
from kale.cwl.export_plan import BASE, NOTEBOOK, RESULT, Plan, make_plan
from kale.cwl.export_tools import runner_tool, shell_tool, tool_id
from kale.cwl.export_values import ident, output_type
from kale.model.workflow import Workflow

CWL_VERSION = "v1.2"


def dump_cwl(wf: Workflow, *, python: str | None = None) -> str:
    """The CWL text of ``wf`` (YAML). ``python``: the interpreter the Python and notebook
    tools run Kale's task runner with (default: this one, ``sys.executable``). Raises
    :class:`~kale.errors.UsageError` for what has no CWL form, naming the task."""
    doc = to_cwl(wf, python=python)
    text: str = yaml.safe_dump(doc, sort_keys=False, width=10**6, allow_unicode=True)
    return "".join(f"# {line}\n" if line else "#\n" for line in _comments(wf)) + text


def to_cwl(wf: Workflow, *, python: str | None = None) -> dict[str, Any]:
    """The CWL document of ``wf``, as a dict (see :func:`dump_cwl`)."""
    plan = make_plan(wf, python or sys.executable)
    tools, steps = [], {}
    for name in wf.order():
        task = wf.tasks[name]
        build = shell_tool if task.kind == "shell" else runner_tool
        tool, sources = build(plan, task)
        tools.append(tool)
        steps[name] = {"run": "#" + tool_id(name), "in": sources,
                       "out": list(tool["outputs"])}
    main: dict[str, Any] = {"class": "Workflow", "id": "main", "label": wf.name}
    if wf.description:
        main["doc"] = wf.description
    main["inputs"] = _inputs(plan)
    main["outputs"] = _outputs(plan)
    main["steps"] = steps
    return {"cwlVersion": CWL_VERSION, "$graph": [main, *tools]}


def _inputs(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pname, wf_id in plan.params.items():
        out[wf_id] = {"type": plan.types[pname], "default": plan.wf.parameters[pname]}
        if wf_id != pname:
            out[wf_id]["label"] = pname
    if plan.runners:
        out[BASE] = {"type": "Directory", "doc": "the workflow's folder (its modules and "
                     "notebooks)", "default": {"class": "Directory",
                                               "location": plan.wf.base_dir.as_uri()}}
    return out


def _outputs(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    taken: set[str] = set()
    for name, task in plan.wf.tasks.items():
        if task.kind != "shell":
            out[ident(f"{name}__{RESULT}", taken)] = {"type": "File",
                                                      "outputSource": f"{name}/{RESULT}"}
        if task.kind == "notebook":
            out[ident(f"{name}__{NOTEBOOK}", taken)] = {"type": ["null", "File"],
                                                        "outputSource": f"{name}/{NOTEBOOK}"}
        for pattern, port in plan.outs[name].items():
            out[ident(f"{name}__{port}", taken)] = {"type": output_type(pattern),
                                                    "outputSource": f"{name}/{port}"}
    return out


def _comments(wf: Workflow) -> list[str]:
    """The header: where the document came from, and what of the workflow it does not
    carry (none of it changes what the steps write)."""
    lines = [f"CWL {CWL_VERSION} written by Kale {version()} from workflow {wf.name!r}.",
             "Run: cwltool wf.cwl [job.yml]; a job file sets workflow parameters "
             "(name: value) and kale_base, the workflow's folder.",
             "Python and notebook steps run through Kale's task runner "
             "(python -m kale.cwl.task): Kale must be installed where they run.",
             "Steps get the CWL runner's environment (cwltool: HOME is the step's "
             "directory); cwltool --preserve-entire-environment gives them yours, as "
             "kale run does."]
    lost: list[str] = []
    if wf.executor is not None:
        lost.append(f"the workflow's executor ({wf.executor.to_value()!r}): the CWL "
                    "runner decides where steps run")
    for t in wf.tasks.values():
        if t.executor is not None:
            lost.append(f"task {t.name!r}: executor {t.executor.to_value()!r}")
        if t.retries:
            lost.append(f"task {t.name!r}: retries {t.retries} (CWL has no retries; "
                        "cwltool's --on-error does not retry)")
        if t.tags:
            lost.append(f"task {t.name!r}: tags {t.tags!r} (CWL has no selection by tag)")
        if t.debug_for is not None:
            lost.append(f"task {t.name!r}: debug_for (no kernel is kept after a failure)")
        if t.resources.gpus or t.resources.walltime or t.resources.queue:
            lost.append(f"task {t.name!r}: batch resources (gpus, walltime, queue, account)")
    if lost:
        lines += ["", "Not carried into CWL:", *(f"- {item}" for item in lost)]
    return lines
