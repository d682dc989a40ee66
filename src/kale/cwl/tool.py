"""Running one CommandLineTool invocation: inputs completed (:mod:`kale.cwl.inputs`,
literals made real), the output directory prepared (:mod:`kale.cwl.workdir`), the command
run as an argv list (or, under ShellCommandRequirement, the line the tool wrote, through
``/bin/sh -c``) in that directory with CWL's environment, and the output object
collected (:mod:`kale.cwl.outputs`). Each invocation has a fresh directory of its own
(``out/``, ``tmp/``, ``inputs/``)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.cwl import cmdline, files
from kale.cwl.document import CwlError, requirement
from kale.cwl.expr import evaluate
from kale.cwl.inputs import complete_inputs, load_contents
from kale.cwl.outputs import ToolFailed, collect
from kale.cwl.workdir import repath, stage_workdir


def runtime_of(process: Mapping[str, Any], outdir: Path, tmpdir: Path,
               inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CWL's ``runtime``: the directories, and ResourceRequirement's minimums (else its
    maximums, else 1 core, 1024 MiB) rounded up; they may refer to the inputs."""
    res = requirement(dict(process), "ResourceRequirement") or {}

    def amount(lo: str, hi: str, default: int) -> int:
        v = evaluate(res.get(lo, res.get(hi, default)),
                     {"inputs": inputs or {}, "self": None, "runtime": {}})
        try:
            return math.ceil(float(v))
        except (TypeError, ValueError):
            return default

    return {"outdir": str(outdir), "tmpdir": str(tmpdir),
            "cores": amount("coresMin", "coresMax", 1), "ram": amount("ramMin", "ramMax", 1024),
            "outdirSize": amount("outdirMin", "outdirMax", 1024),
            "tmpdirSize": amount("tmpdirMin", "tmpdirMax", 1024)}


def run_tool(tool: Mapping[str, Any], given: Mapping[str, Any], workdir: Path, *,
             discover: bool = True) -> dict[str, Any]:
    """Run ``tool`` once on ``given`` inputs in ``workdir`` (made empty); the output
    object. ``discover``: see :func:`complete_inputs`."""
    if workdir.exists():
        shutil.rmtree(workdir)
    outdir, tmpdir, stage = workdir / "out", workdir / "tmp", workdir / "inputs"
    for d in (outdir, tmpdir, stage):
        d.mkdir(parents=True)
    inputs = complete_inputs(tool, given, discover=discover)
    inputs = files.fill(files.materialise(inputs, stage))
    inputs = load_contents(tool, inputs)
    runtime = runtime_of(tool, outdir, tmpdir, inputs)
    context = {"inputs": inputs, "runtime": runtime, "self": None}
    moved = stage_workdir(tool, context, outdir, stage)
    if moved:  # an input staged into the output directory is read from there
        inputs = repath(inputs, moved)
        context = {"inputs": inputs, "runtime": runtime, "self": None}
    ws = cmdline.words(tool, inputs, runtime)
    streams = _streams(tool, context)
    code = _execute(tool, ws, streams, context, outdir)
    runtime["exitCode"] = code
    return collect(tool, inputs, runtime, streams)


def _streams(tool: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for stream in ("stdin", "stdout", "stderr"):
        value = evaluate(tool.get(stream), context)
        if files.is_file_like(value):
            value = value["path"]
        out[stream] = str(value) if value is not None else None
    for p in tool.get("outputs") or []:
        for stream in ("stdout", "stderr"):
            if p["type"] == stream and out[stream] is None:
                out[stream] = f"{stream}-{uuid.uuid4().hex[:12]}"
    for stream in ("stdout", "stderr"):
        name = out[stream]
        if name is not None and (os.path.isabs(name) or ".." in Path(name).parts):
            raise CwlError(f"{tool['_file']}: {stream} must be a file name in the output "
                           f"directory (got {name!r})")
    return out


def _environment(tool: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, str]:
    runtime = context["runtime"]
    env = {"HOME": runtime["outdir"], "TMPDIR": runtime["tmpdir"],
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key in ("LANG", "LC_ALL", "KALE_RUN_ID", "KALE_TASK"):
        if key in os.environ:
            env[key] = os.environ[key]
    req = requirement(dict(tool), "EnvVarRequirement")
    defs = (req or {}).get("envDef") or []
    pairs = defs.items() if isinstance(defs, dict) else (
        (d.get("envName"), d.get("envValue")) for d in defs)
    for name, value in pairs:
        env[str(name)] = str(evaluate(value, context))
    return env


def _execute(tool: Mapping[str, Any], ws: list[cmdline.Word], streams: dict[str, str | None],
             context: Mapping[str, Any], outdir: Path) -> int:
    if not ws:
        raise CwlError(f"{tool['_file']}: the command line is empty (no baseCommand and "
                       "no arguments)")
    shell = requirement(dict(tool), "ShellCommandRequirement", hints=False) is not None
    argv = ["/bin/sh", "-c", cmdline.shell_line(ws)] if shell else [w for w, _ in ws]
    limit = requirement(dict(tool), "ToolTimeLimit")
    timeout = float(limit["timelimit"]) if limit and limit.get("timelimit") else None
    with contextlib.ExitStack() as stack:
        def opened(name: str | None, mode: str) -> Any:
            return stack.enter_context(open(name, mode)) if name else None

        stdin = opened(streams["stdin"], "rb") or subprocess.DEVNULL
        stdout = opened(str(outdir / streams["stdout"]) if streams["stdout"] else None, "wb")
        stderr = opened(str(outdir / streams["stderr"]) if streams["stderr"] else None, "wb")
        try:
            proc = subprocess.run(argv, cwd=outdir, env=_environment(tool, context),
                                  stdin=stdin, stdout=stdout, stderr=stderr, timeout=timeout,
                                  check=False)
        except FileNotFoundError:
            raise ToolFailed(f"{tool['_file']}: command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"{tool['_file']}: the tool ran longer than its ToolTimeLimit "
                             f"({timeout:g} s)") from None
    ok = tool.get("successCodes") or [0]
    if proc.returncode not in ok:
        raise ToolFailed(f"{tool['_file']}: the command exited with {proc.returncode} "
                         f"(success: {', '.join(map(str, ok))}): "
                         + " ".join(w for w, _ in ws)[:500])
    return proc.returncode
