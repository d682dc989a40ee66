"""What a Kale task of an imported CWL workflow runs: ``kale.cwl.runtime:run_step``, one
workflow step, that is its tool once, or once per element under ``scatter``, in the
task's own directory (a step that runs a Workflow under ``scatter`` or ``when``: that
workflow, inside the task, step after step); ``kale.cwl.runtime:gather``, a workflow's
output object; ``kale.cwl.runtime:step_values``, the inputs of a sub-workflow.

A step task's parameters are ``step`` (the step as JSON text: its tool, its ``in`` list,
``scatter``/``scatterMethod`` and ``when``; text, so nothing in it is read as a Kale
reference) and ``sources`` (for each step input, the values of its sources: Kale
references to workflow parameters and upstream steps' results, resolved by the engine).
Its result is the step's output object (a dict, JSON), which is what the references of
the steps below it read.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.cwl import files
from kale.cwl.document import CwlError, inherit
from kale.cwl.expr import evaluate
from kale.cwl.tool import run_tool
from kale.cwl.types import check


def merge(values: list[Any], spec: Mapping[str, Any]) -> Any:
    """The value of an input or output with these sources' values (``linkMerge``,
    ``pickValue``)."""
    sources = spec.get("source") or spec.get("outputSource") or []
    if len(sources) == 1 and not spec.get("linkMerge"):
        value = values[0]
    elif spec.get("linkMerge") == "merge_flattened":
        value = [x for v in values for x in (v if isinstance(v, list) else [v])]
    else:
        value = list(values)
    pick = spec.get("pickValue")
    if pick and isinstance(value, list):
        present = [v for v in value if v is not None]
        if pick == "first_non_null":
            if not present:
                raise CwlError(f"{spec.get('id')}: pickValue first_non_null: all are null")
            value = present[0]
        elif pick == "the_only_non_null":
            if len(present) != 1:
                raise CwlError(f"{spec.get('id')}: pickValue the_only_non_null: "
                               f"{len(present)} are not null")
            value = present[0]
        else:
            value = present
    return value


def step_inputs(spec: Mapping[str, Any], sources: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Each step input's value before ``valueFrom``: its sources merged, else its default."""
    out: dict[str, Any] = {}
    where = Path(spec["dir"])
    for i in spec["in"]:
        values = sources.get(i["id"]) or []
        value = merge(values, i) if i.get("source") else None
        if value is None and i.get("default") is not None:
            value = files.resolve(i["default"], where)
        out[i["id"]] = value
    return out


def _value_from(spec: Mapping[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    context = {"inputs": files.fill(inputs), "runtime": {}, "self": None}
    out = dict(inputs)
    for i in spec["in"]:
        if i.get("valueFrom") is not None:
            out[i["id"]] = evaluate(i["valueFrom"], {**context, "self": inputs.get(i["id"])})
    return out


def _jobs(spec: Mapping[str, Any], inputs: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                                      list[int]]:
    """The tool's input objects, one per scatter element, and the shape of the result
    (one length per level for nested_crossproduct, else one)."""
    scatter = spec.get("scatter") or []
    if not scatter:
        return [inputs], []
    lists = []
    for name in scatter:
        value = inputs.get(name)
        if not isinstance(value, list):
            raise CwlError(f"step {spec['id']!r}: scatter over {name!r}, which is not a list")
        lists.append(value)
    method = spec.get("scatterMethod") or "dotproduct"
    if method == "dotproduct":
        if len({len(x) for x in lists}) > 1:
            raise CwlError(f"step {spec['id']!r}: dotproduct scatter over lists of "
                           f"different lengths ({', '.join(str(len(x)) for x in lists)})")
        combos = list(zip(*lists, strict=True))
        shape = [len(combos)]
    else:
        combos = list(itertools.product(*lists))
        shape = [len(x) for x in lists] if method == "nested_crossproduct" else [len(combos)]
    return [dict(inputs, **dict(zip(scatter, c, strict=True))) for c in combos], shape


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    size = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[k * size:(k + 1) * size], shape[1:]) for k in range(shape[0])]


def run_step(step: str, sources: dict[str, list[Any]]) -> dict[str, Any]:
    """Run one workflow step in this task's directory; its output object."""
    return _run(json.loads(step), sources, Path.cwd())


def _run(spec: dict[str, Any], sources: Mapping[str, list[Any]], where: Path
         ) -> dict[str, Any]:
    """A step's tool (or workflow), once or per scatter element, in ``where/cwl*``."""
    process = spec["tool"]
    inputs = step_inputs(spec, sources)
    jobs, shape = _jobs(spec, inputs)
    results: list[dict[str, Any] | None] = []
    declared = {p["id"] for p in process.get("inputs") or []}
    for n, job in enumerate(jobs):
        job = _value_from(spec, job)
        if spec.get("when") is not None:
            cond = evaluate(spec["when"], {"inputs": job, "runtime": {}, "self": None})
            if not isinstance(cond, bool):
                raise CwlError(f"step {spec['id']!r}: 'when' gave {cond!r}, not a boolean")
            if not cond:
                results.append(None)
                continue
        given = {k: v for k, v in job.items() if k in declared}
        workdir = where / ("cwl" if not shape else f"cwl-{n}")
        if process["class"] == "Workflow":
            results.append(run_workflow(process, given, workdir))
        else:
            results.append(run_tool(process, given, workdir,
                                    discover=bool(spec.get("discover"))))
    names = spec["out"]
    if not shape:
        return {o: (results[0] or {}).get(o) for o in names}
    return {o: _nest([r.get(o) if r else None for r in results], shape) for o in names}


def run_workflow(process: dict[str, Any], given: Mapping[str, Any], where: Path
                 ) -> dict[str, Any]:
    """A (sub-)workflow run inside this one task, its steps one after another in
    ``where/STEP/`` (a scattered or conditional step that runs a Workflow); its output
    object."""
    if where.exists():
        shutil.rmtree(where)
    values: dict[str, Any] = {}
    for p in process["inputs"]:
        value = given.get(p["id"])
        if value is None and p.get("default") is not None:
            value = files.resolve(p["default"], Path(process["_dir"]))
        values[p["id"]] = value
    pending = list(process["steps"])
    while pending:
        ready = [s for s in pending
                 if all(src in values for i in s["in"] for src in i["source"])]
        if not ready:
            raise CwlError(f"{process['_file']}: the steps {[s['id'] for s in pending]} "
                           "wait for each other")
        for s in ready:
            pending.remove(s)
            spec = {"id": s["id"], "dir": process["_dir"], "in": s["in"], "out": s["out"],
                    "tool": inherit([process["requirements"], process["hints"],
                                     s["requirements"], s["hints"]], s["run"]),
                    "scatter": s["scatter"], "scatterMethod": s.get("scatterMethod"),
                    "when": s.get("when")}
            sources = {i["id"]: [values[src] for src in i["source"]] for i in s["in"]}
            out = _run(spec, sources, where / s["id"])
            values.update({f"{s['id']}/{o}": out.get(o) for o in s["out"]})
    return {o["id"]: merge([values.get(src) for src in o["outputSource"]] or [None], o)
            for o in process["outputs"]}


def step_values(step: str, sources: dict[str, list[Any]]) -> dict[str, Any]:
    """The inputs of a sub-workflow from the step that runs it: its sources merged,
    defaults, ``valueFrom``; the sub-workflow's own defaults for what stays null."""
    spec = json.loads(step)
    values = _value_from(spec, step_inputs(spec, sources))
    out = {}
    for p in spec["inputs"]:
        value = values.get(p["id"])
        if value is None and p.get("default") is not None:
            value = files.resolve(p["default"], Path(spec["inner_dir"]))
        out[p["id"]] = value
    return out


def gather(outputs: str, sources: dict[str, list[Any]]) -> dict[str, Any]:
    """The workflow's output object from its outputs' sources."""
    specs = json.loads(outputs)
    out = {o["id"]: merge(sources.get(o["id"]) or [None], o) for o in specs}
    for o in specs:
        if "type" in o:
            check(o["type"], out[o["id"]], f"workflow output {o['id']!r}")
    return out
