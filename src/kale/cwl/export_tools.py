"""One CWL CommandLineTool per task, with the step inputs that feed it.

A shell task is a tool of its own: its command runs as Kale runs it (a command line by
``/bin/sh -c`` with each reference in an environment variable ``KALE_REF_n``; an argv
list with the values put into the arguments), its parameters and ``env`` are its
environment, its declared outputs are globbed outputs. A Python or notebook task is a
tool that runs ``python -m kale.cwl.task`` on a JSON file of all its inputs (written by
``InitialWorkDirRequirement`` from ``$(inputs)``): the task's definition, the workflow's
folder, the workflow parameters and what the tasks above it left.

Invariants: a tool's ``baseCommand`` is literal (CWL never reads it); every other string
is escaped (:mod:`kale.cwl.export_values`); each task takes the order-keeping output of
every task above it (``after`` included), so CWL runs the steps in Kale's order.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

from kale.cwl.export_plan import BASE, NOTEBOOK, RECORDS, RESULT, Plan, shell_refs
from kale.cwl.export_values import NIL, escape, is_text, literal, output_type
from kale.model.refs import Ref, substitute, text_refs
from kale.model.workflow import Task
from kale.tasks.launchers import launch_prefix
from kale.tasks.record import ENV as RECORD_ENV
from kale.tasks.shell import env_value

_ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
#: where a shell task's ``kale record`` writes, in its output directory
RECORDS_FILE = ".kale-records.pkl"
#: the JSON file a runner tool's ``kale.cwl.task`` reads
INPUTS_FILE = ".kale-inputs.json"


class ToolBuilder:
    """The inputs of one tool and, for each, where its step takes it from."""

    def __init__(self, plan: Plan, task: Task) -> None:
        self.plan, self.task = plan, task
        self.inputs: dict[str, Any] = {}
        self.sources: dict[str, Any] = {}
        self._refs: dict[Ref, str] = {}

    def add(self, tool_id: str, cwl: Any, source: Any) -> str:
        self.inputs[tool_id] = {"type": cwl}
        self.sources[tool_id] = source
        return tool_id

    def upstream(self) -> None:
        """Every task above this one (its ``after`` too): its order-keeping output."""
        for up in self.task.upstream:
            self.add(self.up_id(up, self.plan.handle(up)), self.plan.handle_type(up),
                     f"{up}/{self.plan.handle(up)}")

    def up_id(self, up: str, port: str) -> str:
        return f"u_{up}__{port}"

    def ref(self, ref: Ref, lone: bool) -> str:
        """The parameter reference standing for ``ref``'s value as text; ``lone``: the
        whole string is this one reference (so a non-text value needs :data:`NIL`)."""
        tool_id = self._refs.get(ref)
        plan = self.plan
        if tool_id is None:
            tool_id = f"r{len(self._refs) + 1}"
            self._refs[ref] = tool_id
            if ref.is_param:
                assert ref.key is not None
                self.add(tool_id, plan.types[ref.key], plan.params[ref.key])
            elif ref.key in plan.outs[ref.task] and plan.wf.tasks[ref.task].kind != "python":
                port = plan.outs[ref.task][ref.key]
                self.add(tool_id, output_type(str(ref.key)), f"{ref.task}/{port}")
            else:
                port = plan.values[ref.task][str(ref.key)]
                self.add(tool_id, "string", f"{ref.task}/{port}")
        cwl = self.inputs[tool_id]["type"]
        if isinstance(cwl, list) and "File" in cwl:
            return f"$(inputs.{tool_id}.path)"
        if lone and not is_text(cwl):
            self.inputs.setdefault(NIL, {"type": "string", "default": ""})
            return f"$(inputs.{tool_id})$(inputs.{NIL})"
        return f"$(inputs.{tool_id})"

    def text(self, text: str) -> str:
        """``text`` with its references as parameter references, the rest escaped."""
        spans = text_refs(text)
        if not spans:
            return literal(text)
        if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(text):
            return self.ref(spans[0][2], lone=True)
        out, pos = [], 0
        for start, end, ref in spans:
            out += [escape(text[pos:start]), self.ref(ref, lone=False)]
            pos = end
        return "".join([*out, escape(text[pos:])])


def shell_tool(plan: Plan, task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """A shell task's tool, and its step's inputs."""
    b = ToolBuilder(plan, task)
    shell_refs(task)  # refuses what has no CWL form
    env: dict[str, str] = {}
    for key, value in task.parameters.items():
        if set(key) <= _ENV_NAME_CHARS and not key[0].isdigit():
            env[key] = b.ref(value, lone=True) if isinstance(value, Ref) \
                else literal(env_value(value))
    env.update({"KALE_TASK": task.name, "KALE_ATTEMPT": "1",
                RECORD_ENV: f"$(runtime.outdir)/{RECORDS_FILE}"})
    env.update({k: literal(v) for k, v in task.env.items()})
    prefix = launch_prefix(task.launcher, task.resources) if task.launcher else []
    tool = _tool_head(task)
    if isinstance(task.target, str):
        names: dict[Ref, str] = {}

        def variable(ref: Ref) -> str:
            return "${" + names.setdefault(ref, f"KALE_REF_{len(names) + 1}") + "}"

        tool["baseCommand"] = [*prefix, "/bin/sh", "-c", substitute(task.target, variable)]
        env.update({var: b.ref(ref, lone=True) for ref, var in names.items()})
    else:
        argv = [str(a) for a in task.target]
        lead = next((i for i, a in enumerate(argv) if text_refs(a)), len(argv))
        if prefix or lead:
            tool["baseCommand"] = [*prefix, *argv[:lead]]
        if lead < len(argv):
            tool["arguments"] = [b.text(a) for a in argv[lead:]]
    b.upstream()
    tool["requirements"] = {**tool["requirements"],
                            "EnvVarRequirement": {"envDef": env}}
    tool["inputs"] = b.inputs
    tool["outputs"] = {**_declared(plan, task),
                       RECORDS: {"type": ["null", "File"],
                                 "outputBinding": {"glob": RECORDS_FILE}}}
    return tool, b.sources


def runner_tool(plan: Plan, task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Python or notebook task's tool (run by ``kale.cwl.task``), and its step's inputs."""
    b = ToolBuilder(plan, task)
    b.add(BASE, "Directory", BASE)
    for pname, wf_id in plan.params.items():
        b.add(f"p_{wf_id}", plan.types[pname], wf_id)
    upstream: dict[str, Any] = {}
    for up in task.upstream:
        outs = {pattern: b.add(b.up_id(up, port), output_type(pattern), f"{up}/{port}")
                for pattern, port in plan.outs[up].items()}
        upstream[up] = {"kind": plan.wf.tasks[up].kind, "outputs": outs,
                        "handle": b.up_id(up, plan.handle(up))}
    b.upstream()
    values = {key: f"kale_value_{port}.txt" for key, port in plan.values[task.name].items()}
    spec = {"workflow": plan.wf.name, "name": task.name, "task": task.to_dict(),
            "params": {p: f"p_{i}" for p, i in plan.params.items()}, "base": BASE,
            "upstream": upstream, "values": values, "result": result_stem(task.name)}
    b.inputs["kale_task"] = {"type": "string", "default": json.dumps(spec)}
    tool = _tool_head(task)
    tool["baseCommand"] = [plan.python, "-m", "kale.cwl.task", INPUTS_FILE]
    tool["requirements"] = {**tool["requirements"], "InitialWorkDirRequirement": {
        "listing": [{"entryname": INPUTS_FILE, "entry": "$(inputs)"}]}}
    tool["inputs"] = b.inputs
    stem = result_stem(task.name)
    tool["outputs"] = {
        RESULT: {"type": "File", "outputBinding": {"glob": [f"{stem}.json", f"{stem}.pkl"]}},
        **_declared(plan, task),
        **{port: {"type": "string", "outputBinding": {
            "glob": values[key], "loadContents": True, "outputEval": "$(self[0].contents)"}}
           for key, port in plan.values[task.name].items()}}
    if task.kind == "notebook":  # the runner saves it in the task's directory, by its name
        tool["outputs"][NOTEBOOK] = {"type": ["null", "File"], "outputBinding": {
            "glob": literal(PurePath(str(task.target)).name)}}
    return tool, b.sources


def result_stem(name: str) -> str:
    """The file (``.json``, else ``.pkl``) a runner tool writes its task's result to."""
    return f"kale_result_{name}"


def _declared(plan: Plan, task: Task) -> dict[str, Any]:
    return {port: {"type": output_type(pattern), "outputBinding": {"glob": literal(pattern)}}
            for pattern, port in plan.outs[task.name].items()}


def _tool_head(task: Task) -> dict[str, Any]:
    tool: dict[str, Any] = {"class": "CommandLineTool", "id": tool_id(task.name)}
    if task.description:
        tool["doc"] = task.description
    reqs: dict[str, Any] = {}
    if task.timeout:
        reqs["ToolTimeLimit"] = {"timelimit": max(1, math.ceil(task.timeout))}
    tool["requirements"] = reqs
    hints = _resources(task)
    if hints:
        tool["hints"] = {"ResourceRequirement": hints}
    return tool


def tool_id(name: str) -> str:
    return f"tool_{name}"


def _resources(task: Task) -> dict[str, Any]:
    res = task.resources
    out: dict[str, Any] = {}
    if res.cpus * res.ranks * res.nodes > 1:
        out["coresMin"] = res.cpus * res.ranks * res.nodes
    mib = mebibytes(res.memory)
    if mib:
        out["ramMin"] = mib
    return out


def mebibytes(memory: str | None) -> int | None:
    """Kale's memory request (``"4G"``, ``"512M"``, ``"2GB"``, plain bytes) in MiB."""
    if not memory:
        return None
    text = memory.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}.get(text[-1:])
    try:
        number = float(text[:-1]) if scale else float(text) / 2**20
    except ValueError:
        return None
    return max(1, math.ceil(number * (scale or 1)))
