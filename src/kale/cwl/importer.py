"""A CWL v1.2 document (a Workflow of CommandLineTools, or one CommandLineTool) and its
input object as a Kale workflow.

- The workflow's inputs become Kale workflow parameters, with the input object's values
  (Files and Directories with absolute locations), else their defaults.
- Each step becomes a Python task running :func:`kale.cwl.runtime.run_step`: its
  parameters are the step (JSON text) and, for each step input, references to the
  parameters and upstream steps it reads (``${params.x}``, ``${step.out}``), so the DAG,
  the durable state, reuse and partial runs are Kale's. A scatter runs inside its step's
  one task (the list is often known only when the step above has run).
- The workflow's outputs are the result of one more task, ``outputs`` (running
  :func:`kale.cwl.runtime.gather`); a lone CommandLineTool is one task whose result is
  the output object.

Everything Kale does not do is refused here, by name, before anything runs
(:func:`check`): JavaScript expressions, requirements it cannot honour, ExpressionTools,
Operations, sub-workflows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kale.cwl import files
from kale.cwl.document import CwlError, Unsupported, inherit, job_object, load
from kale.cwl.expr import check as check_expression
from kale.cwl.expr import references
from kale.cwl.inputs import with_secondary
from kale.cwl.outputs import expand_iri
from kale.cwl.types import allows_null
from kale.cwl.types import check as check_type
from kale.model.refs import PARAMS
from kale.model.workflow import NAME, Workflow

#: requirements Kale honours (InlineJavascriptRequirement: parameter references only)
SUPPORTED = ("InlineJavascriptRequirement", "SchemaDefRequirement", "InitialWorkDirRequirement",
             "EnvVarRequirement", "ShellCommandRequirement", "ResourceRequirement",
             "StepInputExpressionRequirement", "ScatterFeatureRequirement",
             "MultipleInputFeatureRequirement", "LoadListingRequirement", "WorkReuse",
             "NetworkAccess", "ToolTimeLimit", "SubworkflowFeatureRequirement")
RUN_STEP = "kale.cwl.runtime:run_step"
#: the workflow parameter that stamps the input files (:func:`input_stamp`)
STAMP = "cwl:input-files"
GATHER = "kale.cwl.runtime:gather"
STEP_VALUES = "kale.cwl.runtime:step_values"
#: fields that hold text, never expressions
_NOT_EXPRESSIONS = ("doc", "label", "default", "steps", "run", "id", "class", "cwlVersion",
                    "baseCommand",  # literal in CWL: never interpolated
                    "type", "symbols")


@dataclass
class Imported:
    """A CWL document as a Kale workflow, and the task whose result is the output
    object."""

    workflow: Workflow
    outputs_task: str
    process: dict[str, Any]


def load_checked(path: str | Path) -> dict[str, Any]:
    """The document, read and checked (:func:`check`)."""
    process = load(path)
    check(process)
    return process


def check(process: Mapping[str, Any], inherited: tuple[dict[str, Any], ...] = ()) -> None:
    """Refuse, by name, what Kale does not do."""
    where = process["_file"]
    cls = process["class"]
    if cls in ("ExpressionTool", "Operation"):
        raise Unsupported(f"{where}: {cls} {process['id']!r} is not supported (Kale runs "
                          "CommandLineTools; an ExpressionTool is JavaScript)")
    for r in list(inherited) + list(process.get("requirements") or []):
        if r["class"] not in SUPPORTED:
            raise Unsupported(f"{where}: requirement {r['class']} is not supported (Kale "
                              f"honours: {', '.join(SUPPORTED)}); as a hint it would be "
                              "ignored")
    declared = {p["id"] for p in process.get("inputs") or []}
    for text, what in _expressions(process, ""):
        check_expression(text, f"{where}: {what}")
        for symbol, segs in references(text):
            if symbol == "inputs" and segs and segs[0] not in declared:
                raise CwlError(f"{where}: {what}: $(inputs.{segs[0]}) names no input of "
                               f"{process['id']!r} (inputs: {', '.join(sorted(declared))})")
    if cls == "Workflow":
        reqs = tuple(process.get("requirements") or [])
        for step in process["steps"]:
            run = step["run"]
            for i in step["in"]:
                for key in ("valueFrom",):
                    if i.get(key) is not None:
                        check_expression(str(i[key]), f"{where}: step {step['id']!r} input "
                                         f"{i['id']!r}")
            if step.get("when") is not None:
                check_expression(str(step["when"]), f"{where}: step {step['id']!r} 'when'")
            check(run, reqs + tuple(step.get("requirements") or []))
        _check_links(process)


def _expressions(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        if "$(" in node or "${" in node:
            yield node, path or "value"
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _expressions(v, f"{path}[{i}]")
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in _NOT_EXPRESSIONS or str(k).startswith(("_", "$")) or ":" in str(k):
                continue  # Kale's own keys, $namespaces..., extensions (s:author)
            yield from _expressions(v, f"{path}.{k}" if path else str(k))


def _check_links(wf: Mapping[str, Any]) -> None:
    where = wf["_file"]
    names = {i["id"] for i in wf["inputs"]}
    outs = {f"{s['id']}/{o}" for s in wf["steps"] for o in s["out"]}
    for s in wf["steps"]:
        for i in s["in"]:
            for src in i["source"]:
                if src not in names and src not in outs:
                    raise CwlError(f"{where}: step {s['id']!r} input {i['id']!r}: unknown "
                                   f"source {src!r}")
        for name in s["scatter"]:
            if name not in {i["id"] for i in s["in"]}:
                raise CwlError(f"{where}: step {s['id']!r} scatters over {name!r}, "
                               "which is not one of its inputs")
        for o in s["out"]:
            if o not in {p["id"] for p in s["run"]["outputs"]}:
                raise CwlError(f"{where}: step {s['id']!r}: {o!r} is not an output of "
                               f"{s['run']['_file']}")
    for o in wf["outputs"]:
        for src in o["outputSource"]:
            if src not in names and src not in outs:
                raise CwlError(f"{where}: output {o['id']!r}: unknown source {src!r}")


def input_object(process: Mapping[str, Any], job: Mapping[str, Any], base: Path,
                 *, job_name: str) -> dict[str, Any]:
    """The process's inputs from the input object: values resolved (relative locations
    against ``base``), defaults for what is absent, required ones checked."""
    out: dict[str, Any] = {}  # keys of the input object that are no input: ignored (CWL)
    for p in process["inputs"]:
        name = p["id"]
        value = files.resolve(job.get(name), base)
        _must_exist(value, f"{job_name}: input {name!r}")
        value = _expand_formats(value, process)
        if value is None and p.get("default") is not None:
            value = _expand_formats(files.resolve(p["default"], Path(process["_dir"])), process)
        if value is None and not allows_null(p["type"]):
            raise CwlError(f"{job_name}: no value for the required input {name!r} of "
                           f"{process['_file']}")
        check_type(p["type"], value, f"{job_name}: input {name!r}")
        out[name] = with_secondary(p, value)
    return out


def _must_exist(value: Any, what: str) -> None:
    if isinstance(value, list):
        for v in value:
            _must_exist(v, what)
    elif isinstance(value, dict):
        if files.is_file_like(value) and "path" in value and not os.path.exists(value["path"]):
            raise CwlError(f"{what}: no such {value['class'].lower()}: {value['path']}")
        for v in value.values():
            _must_exist(v, what)


def _expand_formats(value: Any, process: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [_expand_formats(v, process) for v in value]
    if files.is_file_like(value) and isinstance(value.get("format"), str):
        return dict(value, format=expand_iri(value["format"], process))
    if isinstance(value, dict):
        return {k: _expand_formats(v, process) for k, v in value.items()}
    return value


def _task_names(ids: list[str], taken: set[str]) -> dict[str, str]:
    """Kale task names for CWL ids: other characters as ``_``, never ``params`` (a
    reference's word for the workflow's parameters), unique."""
    out: dict[str, str] = {}
    taken = taken | {PARAMS}
    for ident in ids:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", ident)[:100] or "step"
        if not NAME.match(name):
            name = "s_" + name
        base, n = name, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        out[ident] = name
    return out


def to_workflow(process: dict[str, Any], params: dict[str, Any]) -> Imported:
    """The Kale workflow of a checked process and its resolved inputs."""
    base = Path(process["_dir"])
    doc = process.get("doc")
    wf = Workflow(process["id"] or "cwl", doc if isinstance(doc, str) else "",
                  parameters=params, base_dir=base)
    if process["class"] == "CommandLineTool":
        name = _task_names([process["id"]], set())[process["id"]]
        spec = {"id": process["id"], "tool": process, "dir": str(base), "scatter": [],
                "discover": True,
                "in": [{"id": p["id"], "source": [p["id"]]} for p in process["inputs"]],
                "out": [o["id"] for o in process["outputs"]]}
        wf.python(RUN_STEP, name=name, parameters={
            "step": json.dumps(spec), "sources": {
                p["id"]: ["${params." + p["id"] + "}"] for p in process["inputs"]}})
        return Imported(wf, name, process)
    taken: set[str] = set()
    scope = {p["id"]: "${params." + p["id"] + "}" for p in process["inputs"]}
    gather = _add_steps(wf, process, scope, "", [], taken, None)
    return Imported(wf, gather, process)


def _add_steps(wf: Workflow, process: dict[str, Any], scope: dict[str, str], prefix: str,
               levels: list[list[dict[str, Any]]], taken: set[str], gather: str | None
               ) -> str:
    """Add a CWL workflow's steps to ``wf`` (a sub-workflow's too, flattened: its steps'
    names start with its step's, its inputs come from a task ``STEP-in``, its outputs are
    the result of the task ``STEP``, which is what the steps below read); the name of
    the task whose result is the output object. ``scope``: each input's reference."""
    base = Path(process["_dir"])
    levels = [*levels, process["requirements"], process["hints"]]
    named = _task_names([prefix + s["id"] for s in process["steps"]], taken)
    names = {s["id"]: named[prefix + s["id"]] for s in process["steps"]}

    def ref(source: str) -> str:
        step, sep, out = source.partition("/")
        return "${" + names[step] + "." + out + "}" if sep else scope[source]

    for s in process["steps"]:
        sources = {i["id"]: [ref(src) for src in i["source"]] for i in s["in"]}
        step_levels = [*levels, s["requirements"], s["hints"]]
        run = s["run"]
        if run["class"] == "Workflow" and not s["scatter"] and s.get("when") is None:
            adapter = _task_names([names[s["id"]] + "-in"], taken)[names[s["id"]] + "-in"]
            spec = {"id": s["id"], "dir": str(base), "in": s["in"],
                    "inputs": [{"id": p["id"], "default": p.get("default")}
                               for p in run["inputs"]], "inner_dir": run["_dir"]}
            wf.python(STEP_VALUES, name=adapter,
                      parameters={"step": json.dumps(spec), "sources": sources})
            inner = {p["id"]: "${" + adapter + "." + p["id"] + "}" for p in run["inputs"]}
            _add_steps(wf, run, inner, names[s["id"]] + "-", step_levels, taken,
                       names[s["id"]])
            continue
        tool = inherit(step_levels, run)
        spec = {"id": s["id"], "tool": tool, "dir": str(base), "in": s["in"], "out": s["out"],
                "scatter": s["scatter"], "scatterMethod": s.get("scatterMethod"),
                "when": s.get("when")}
        wf.python(RUN_STEP, name=names[s["id"]],
                  parameters={"step": json.dumps(spec), "sources": sources})
    if gather is None:
        gather = _task_names(["outputs"], taken)["outputs"]
    outs = [{k: o.get(k) for k in ("id", "outputSource", "linkMerge", "pickValue", "type")}
            for o in process["outputs"]]
    wf.python(GATHER, name=gather, parameters={
        "outputs": json.dumps(outs),
        "sources": {o["id"]: [ref(src) for src in o["outputSource"]]
                    for o in process["outputs"]}})
    return gather


def import_cwl(path: str | Path, job: str | Path | None = None,
               overrides: Mapping[str, Any] | None = None) -> Imported:
    """Read, check and import ``path`` with the input object in ``job`` (a YAML or JSON
    file; None: no inputs but defaults) and ``overrides`` (``-p name=value``)."""
    data, base = job_object(job)
    process = load(path)
    extra = data.pop("cwl:requirements", None)
    if extra:
        if not isinstance(extra, list) or not all(isinstance(r, dict) and "class" in r
                                                  for r in extra):
            raise CwlError(f"{job}: 'cwl:requirements' must be a list of requirements")
        process = _add_requirements(process, extra)
    check(process)
    for name, value in (overrides or {}).items():
        data[name] = files.resolve(_typed(process, name, value), Path.cwd())
    params = input_object(process, data, base, job_name=str(job or path))
    return to_workflow(process, {**params, STAMP: input_stamp(params)})


def input_stamp(value: Any) -> str:
    """What the input object's Files and Directories are now (path, size, modification
    time, a Directory's all the way down), as a hash: a workflow parameter no step reads,
    so that result reuse (whose key covers the parameters) sees a changed input file."""
    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            if files.is_file_like(v) and "path" in v:
                for root, dirs, names in os.walk(v["path"]) if v["class"] == "Directory" \
                        else [("", [], [v["path"]])]:
                    dirs.sort()
                    for name in sorted(names):
                        _stat_into(h, os.path.join(root, name))
            for x in v.values():
                walk(x)

    walk(value)
    return h.hexdigest()[:32]


def _stat_into(h: Any, path: str) -> None:
    try:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        h.update(f"{path}\0missing\n".encode())


def _add_requirements(process: dict[str, Any], extra: list[dict[str, Any]]
                      ) -> dict[str, Any]:
    """The input object's ``cwl:requirements``, which win over the document's, added to
    every process in it."""
    out = dict(process, requirements=[*process["requirements"], *extra])
    if process["class"] == "Workflow":
        out["steps"] = [dict(s, run=_add_requirements(s["run"], extra))
                        for s in process["steps"]]
    return out


def _typed(process: Mapping[str, Any], name: str, value: Any) -> Any:
    """A value typed on the command line (``-p name=value``) for a File or Directory
    input: a path, as that object."""
    for p in process["inputs"]:
        if p["id"] == name and isinstance(value, str):
            kinds = p["type"] if isinstance(p["type"], list) else [p["type"]]
            for kind in ("File", "Directory"):
                if kind in kinds:
                    return {"class": kind, "path": value}
    return value


def document_summary(process: Mapping[str, Any]) -> str:
    if process["class"] == "Workflow":
        return f"CWL Workflow {process['id']!r} is valid ({len(process['steps'])} steps)"
    return f"CWL {process['class']} {process['id']!r} is valid"


__all__ = ["CwlError", "Imported", "Unsupported", "check", "import_cwl", "load_checked",
           "to_workflow"]
