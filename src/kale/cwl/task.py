"""``python -m kale.cwl.task INPUTS.json``: one Python or notebook task of an exported CWL
workflow (:mod:`kale.cwl.export`), run in the CWL step's output directory by the runner
``kale run`` uses (through :class:`~kale.executors.local.LocalExecutor`).

INPUTS.json is the step's ``$(inputs)``: ``kale_task`` (JSON: the task's definition and
which input holds what), the workflow's folder, the workflow parameters, and for each
task above it the file of its result (a runner task's) or records (a shell task's) and
its declared output files, staged by the CWL runner. The task's result is rebuilt for
it as Kale would give it: declared outputs are the staged files' paths, records and
return values as they were made.

What it leaves: ``kale_result_TASK.json`` (``{"result": ..., "files": {...}}``: the result, and
which of its values are the paths of declared outputs; ``.pkl``, the same pickled, when
JSON cannot hold the result), ``kale_value_PORT.txt`` for each
value a shell task below reads (as Kale writes a value into a command: text as it is,
anything else as JSON), the task's declared outputs, and its logs on stdout/stderr.
Exit status 0 exactly when Kale would have marked the task SUCCEEDED.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from kale import serial
from kale.executors.local import LocalExecutor
from kale.model.refs import MissingResult, Ref, resolve
from kale.model.workflow import Task, Workflow
from kale.store.results import as_json
from kale.tasks.base import RECORDS_FILE, Outcome, TaskContext
from kale.tasks.record import ENV as RECORD_ENV
from kale.tasks.record import read_records
from kale.tasks.registry import runner_kind
from kale.tasks.shell import env_value


def main(argv: list[str]) -> int:
    inputs = json.loads(Path(argv[0]).read_text())
    spec = json.loads(inputs["kale_task"])
    base = Path(inputs[spec["base"]]["path"])
    params = {p: inputs[i] for p, i in spec["params"].items()}
    task = _task(spec, params, base)
    workdir = Path.cwd()
    upstream = {u: _upstream(info, inputs, base) for u, info in spec["upstream"].items()}
    try:
        resolved = resolve(task.parameters, upstream, params)
    except MissingResult as e:
        print(f"kale: task {task.name!r}: {e}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="kale-cwl-") as logs:
        ctx = TaskContext(
            run_id="cwl", task=task, attempt=1, workdir=workdir,
            stdout_path=Path(logs, "out"), stderr_path=Path(logs, "err"), base_dir=base,
            inputs=resolved, upstream=upstream, params=params,
            env={"KALE_RUN_ID": "cwl", "KALE_TASK": task.name, "KALE_ATTEMPT": "1",
                 RECORD_ENV: str(workdir / RECORDS_FILE), **task.env})
        ctx.make_workdir()
        outcome = asyncio.run(_execute(ctx))
        for name, stream in (("out", sys.stdout), ("err", sys.stderr)):
            path = Path(logs, name)
            if path.is_file():
                stream.write(path.read_text(errors="replace"))
    return _finish(spec, task, outcome, workdir, base, params)


def _task(spec: dict[str, Any], params: dict[str, Any], base: Path) -> Task:
    """The task, validated as Kale validates it (its upstream tasks stand in as stubs)."""
    tasks: dict[str, Any] = {u: {"shell": "true"} for u in spec["upstream"]}
    tasks[spec["name"]] = spec["task"]
    wf = Workflow.from_dict({"name": spec["workflow"], "parameters": params,
                             "tasks": tasks}, base_dir=base)
    return wf.tasks[spec["name"]]


def _upstream(info: dict[str, Any], inputs: dict[str, Any], base: Path) -> Any:
    """An upstream task's result as Kale gives it, its files where CWL staged them."""
    handle: dict[str, Any] | None = inputs.get(info["handle"])
    staged = {p: _paths(inputs.get(i)) for p, i in info["outputs"].items()}
    if info["kind"] == "shell":
        records = read_records(handle["path"], base) if handle else {}
        return {**staged, **records} or None
    assert handle is not None  # a runner task's result file is not optional
    path = Path(handle["path"])
    doc = serial.loads(path.read_bytes(), base) if path.suffix == ".pkl" \
        else json.loads(path.read_text())
    result = doc["result"]
    if isinstance(result, dict):
        for pattern, original in doc["files"].items():
            if result.get(pattern) == original and pattern in staged:
                result[pattern] = staged[pattern]
    return result


def _paths(value: Any) -> str:
    """A staged File/Directory, or a list of them, as Kale writes output paths."""
    if isinstance(value, list):
        return ",".join(v["path"] for v in value)
    return str(value["path"]) if isinstance(value, dict) else ""


async def _execute(ctx: TaskContext) -> Outcome:
    executor = LocalExecutor(1)
    try:
        await executor.start({runner_kind(ctx.task): 1})
        return await executor.execute(ctx)
    finally:
        await executor.close()


def _finish(spec: dict[str, Any], task: Task, outcome: Outcome, workdir: Path, base: Path,
            params: dict[str, Any]) -> int:
    """Check the outputs and write the result as Kale's engine collects it."""
    if not outcome.ok:
        print(f"kale: task {task.name!r} failed: {outcome.error or 'failed'}", file=sys.stderr)
        if outcome.traceback:
            print(outcome.traceback, file=sys.stderr)
        return 1
    found: dict[str, str] = {}
    for pattern in task.outputs:
        matches = sorted(workdir.glob(pattern)) if any(c in pattern for c in "*?[") \
            else [workdir / pattern]
        if not matches or not all(m.exists() for m in matches):
            print(f"kale: task {task.name!r}: declared output {pattern!r} was not created",
                  file=sys.stderr)
            return 1
        found[pattern] = ",".join(str(m) for m in matches)
    records = outcome.records if outcome.records is not None \
        else read_records(workdir / RECORDS_FILE, base)
    result = outcome.result if task.kind == "python" and outcome.result is not None \
        else ({**found, **records} or None)
    stem = workdir / spec["result"]
    doc = {"result": result, "files": found}
    text = as_json(doc)
    if text is not None:
        stem.with_suffix(".json").write_text(text)
    else:
        stem.with_suffix(".pkl").write_bytes(serial.dumps(doc))
    for key, file in spec["values"].items():
        try:
            value = resolve(Ref(task.name, key), {task.name: result}, params)
        except MissingResult as e:
            print(f"kale: task {task.name!r}: a shell task below reads {e}", file=sys.stderr)
            return 1
        (workdir / file).write_text(env_value(value))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
