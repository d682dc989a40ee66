"""Running one CommandLineTool invocation: inputs completed (defaults, checks, secondary
files, literals made real), the working directory prepared (InitialWorkDirRequirement),
the command run as an argv list (or, under ShellCommandRequirement, the line the tool
wrote, through ``/bin/sh -c``) in its own output directory with CWL's environment, and
the output object collected (``cwl.output.json``, else each output's glob, loadContents
and outputEval).

Invariant: the output object holds only the tool's declared outputs, every File in it
exists and carries its ``size`` and ``checksum``.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import json
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
from kale.cwl.types import allows_null, check, choose


class ToolFailed(CwlError):
    """The tool ran and failed (an exit code not among its successCodes, an output
    missing)."""


def complete_inputs(tool: Mapping[str, Any], given: Mapping[str, Any], *,
                    discover: bool = True) -> dict[str, Any]:
    """The tool's input object: ``given`` values, else defaults (their locations read
    against the tool's directory); checked against the declared types. Secondary files
    are looked for beside their primary file (``discover``: a tool run on its own), or
    must come with it (a step, whose Files come from the workflow's inputs or a step
    above, which declared them)."""
    out: dict[str, Any] = {}
    where = Path(tool["_dir"])
    for p in tool.get("inputs") or []:
        name = p["id"]
        value = given.get(name)
        if value is None and p.get("default") is not None:
            value = files.resolve(p["default"], where)
        if value is None and not allows_null(p["type"]):
            raise CwlError(f"{tool['_file']}: input {name!r} is required (type "
                           f"{_typename(p['type'])}) and the input object has no value for it")
        check(p["type"], value, f"{tool['_file']}: input {name!r}")
        out[name] = with_secondary(p, value, discover)
    return out


def _typename(type_: Any) -> str:
    from kale.cwl.types import describe

    return describe(type_)


def with_secondary(p: Mapping[str, Any], value: Any, discover: bool = True) -> Any:
    """``value`` with the secondary files its parameter (or a record field in it) asks
    for, found beside each primary file."""
    if isinstance(value, list):
        return [with_secondary(dict(p, type=_items(p.get("type"))), v, discover)
                for v in value]
    t = choose(p.get("type"), value)
    if isinstance(value, dict) and not files.is_file_like(value) and isinstance(t, dict) \
            and t.get("type") == "record":
        out = dict(value)
        for f in t.get("fields") or []:
            if f["name"] in out:
                out[f["name"]] = with_secondary(f, out[f["name"]], discover)
        return out
    patterns = _patterns(p.get("secondaryFiles"))
    if not patterns or not files.is_file_like(value) or "path" not in value:
        return value
    have = list(value.get("secondaryFiles") or [])
    named = {s.get("basename") for s in have if isinstance(s, dict)}
    for pattern, required in patterns:
        path = Path(secondary_name(value["path"], pattern))
        if path.name in named:
            continue
        if path.exists() and discover:
            have.append({"class": "Directory" if path.is_dir() else "File",
                         "location": files.uri(path), "path": str(path),
                         "basename": path.name})
        elif required:
            raise CwlError(f"input {p.get('id', p.get('name'))!r}: secondary file "
                           f"{path.name} of {value['basename']} is missing")
    return dict(value, secondaryFiles=have)


def _items(type_: Any) -> Any:
    for t in type_ if isinstance(type_, list) else [type_]:
        if isinstance(t, dict) and t.get("type") == "array":
            return t.get("items")
    return "Any"


def _patterns(spec: Any, required: bool = True) -> list[tuple[str, bool]]:
    """Secondary file patterns and whether each is required (``required``: the default,
    true for inputs, false for outputs; a pattern ending in ``?`` is optional)."""
    items = spec if isinstance(spec, list) else [spec] if spec else []
    out = []
    for s in items:
        if isinstance(s, dict):
            flag = s.get("required", required)
            out.append((str(s.get("pattern")), flag is True or (flag is None and required)))
        else:
            text = str(s)
            out.append((text.rstrip("?"), required and not text.endswith("?")))
    return out


def secondary_name(primary: str, pattern: str) -> str:
    """``x.bam`` with ``.bai`` -> ``x.bam.bai``; with ``^.bai`` -> ``x.bai``."""
    while pattern.startswith("^"):
        primary, pattern = os.path.splitext(primary)[0], pattern[1:]
    return primary + pattern


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
    inputs = _load_contents(tool, inputs)
    runtime = runtime_of(tool, outdir, tmpdir, inputs)
    context = {"inputs": inputs, "runtime": runtime, "self": None}
    moved = _stage_workdir(tool, context, outdir, stage)
    if moved:  # an input staged into the output directory is read from there
        inputs = _repath(inputs, moved)
        context = {"inputs": inputs, "runtime": runtime, "self": None}
    ws = cmdline.words(tool, inputs, runtime)
    streams = _streams(tool, context)
    code = _execute(tool, ws, streams, context, outdir)
    runtime["exitCode"] = code
    return collect(tool, inputs, runtime, streams)


def _load_contents(tool: Mapping[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    for p in tool.get("inputs") or []:
        load = p.get("loadContents") or (p.get("inputBinding") or {}).get("loadContents")
        value = inputs.get(p["id"])
        if load and isinstance(value, dict) and value.get("class") == "File":
            inputs[p["id"]] = dict(value, contents=files.read_contents(value["path"]))
    return inputs


def _repath(value: Any, moved: Mapping[str, Path]) -> Any:
    if isinstance(value, list):
        return [_repath(v, moved) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _repath(v, moved) for k, v in value.items()}
    if files.is_file_like(value) and value.get("path") in moved:
        target = moved[value["path"]]
        out.update(path=str(target), location=files.uri(target), basename=target.name,
                   dirname=str(target.parent))
    return out


def _stage_workdir(tool: Mapping[str, Any], context: Mapping[str, Any], outdir: Path,
                   stage: Path) -> dict[str, Path]:
    """Write InitialWorkDirRequirement's listing into the output directory; where each
    File or Directory it copied came from and went."""
    moved: dict[str, Path] = {}
    req = requirement(dict(tool), "InitialWorkDirRequirement", hints=False)
    if req is None:
        return moved
    listing = evaluate(req.get("listing"), context)
    for entry in listing if isinstance(listing, list) else [listing]:
        entry = evaluate(entry, context)
        for item in entry if isinstance(entry, list) else [entry]:
            if files.is_file_like(item):  # written in the document: its own locations
                item = files.materialise(files.resolve(item, Path(tool["_dir"])), stage)
            _stage_one(item, context, outdir, moved)
    return moved


def _inside(outdir: Path, name: str) -> Path:
    target = outdir / name
    if not os.path.normpath(target).startswith(str(outdir) + os.sep):
        raise CwlError(f"InitialWorkDirRequirement: {name!r} is outside the output directory")
    return target


def _stage_one(item: Any, context: Mapping[str, Any], outdir: Path,
               moved: dict[str, Path]) -> None:
    if item is None:
        return
    if files.is_file_like(item):
        target = _inside(outdir, item.get("basename", Path(item["path"]).name))
        _copy(Path(item["path"]), target)
        moved[item["path"]] = target
        for extra in item.get("secondaryFiles") or []:
            _stage_one(extra, context, outdir, moved)
        return
    if not isinstance(item, dict) or "entry" not in item:
        raise CwlError(f"InitialWorkDirRequirement: cannot stage {item!r}")
    value = evaluate(item["entry"], context)
    name = evaluate(item.get("entryname"), context)
    if value is None:
        return
    if isinstance(value, list) and name is None and all(map(files.is_file_like, value)):
        for v in value:
            _stage_one(v, context, outdir, moved)
        return
    if files.is_file_like(value):
        target = _inside(outdir, str(name or value.get("basename")))
        _copy(Path(value["path"]), target)
        moved[value["path"]] = target
        return
    text = value if isinstance(value, str) else json.dumps(value)
    target = _inside(outdir, str(name))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False)
    else:
        shutil.copyfile(source, target)


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


def collect(tool: Mapping[str, Any], inputs: Mapping[str, Any], runtime: Mapping[str, Any],
            streams: Mapping[str, str | None]) -> dict[str, Any]:
    """The tool's output object, from its output directory."""
    outdir = Path(runtime["outdir"])
    context = {"inputs": inputs, "runtime": runtime, "self": None}
    custom = outdir / "cwl.output.json"
    given: dict[str, Any] | None = None
    if custom.is_file():
        try:
            given = json.loads(custom.read_text())
        except ValueError as e:
            raise ToolFailed(f"{tool['_file']}: cwl.output.json is not JSON: {e}") from None
        if not isinstance(given, dict):
            raise ToolFailed(f"{tool['_file']}: cwl.output.json is not an object")
    out: dict[str, Any] = {}
    for p in tool.get("outputs") or []:
        if given is not None:
            value = _described(files.resolve(given.get(p["id"]), outdir))
        else:
            value = _output(p, context, streams, outdir)
        value = _format(tool, p, value, context)
        if value is not None:
            value = _out_secondary(p, value)
        check(p["type"], value, f"{tool['_file']}: output {p['id']!r}")
        out[p["id"]] = value
    return out


def _described(value: Any) -> Any:
    if isinstance(value, list):
        return [_described(v) for v in value]
    if files.is_file_like(value):
        if "path" not in value:
            return value
        path = Path(value["path"])
        if not path.exists():
            raise ToolFailed(f"output {path} does not exist")
        return {**value, **files.describe(path)}
    if isinstance(value, dict):
        return {k: _described(v) for k, v in value.items()}
    return value


def _output(p: Mapping[str, Any], context: Mapping[str, Any],
            streams: Mapping[str, str | None], outdir: Path) -> Any:
    if p["type"] in ("stdout", "stderr"):
        return files.describe(outdir / str(streams[p["type"]]))
    binding = p.get("outputBinding") or {}
    t = choose(p["type"], {})
    if not binding and isinstance(t, dict) and t.get("type") == "record":
        return {f["name"]: _out_secondary(f, _output(f, context, streams, outdir))
                for f in t.get("fields") or []}
    found: list[dict[str, Any]] | None = None
    if binding.get("glob") is not None:
        patterns = evaluate(binding["glob"], context)
        patterns = patterns if isinstance(patterns, list) else [patterns]
        paths: list[Path] = []
        for pat in patterns:
            paths += _glob(str(pat), outdir)
        found = [files.describe(x, contents=bool(binding.get("loadContents"))) for x in paths]
    if "outputEval" in binding:
        return _described(evaluate(binding["outputEval"], {**context, "self": found}))
    if found is None:
        return None
    t = choose(p["type"], found)
    if t in ("File", "Directory") or (isinstance(t, str) and t not in ("Any",)):
        if len(found) > 1 and t in ("File", "Directory"):
            raise ToolFailed(f"output {p.get('id', p.get('name'))!r}: {len(found)} files "
                             f"match its glob, its type is one {t}")
        return found[0] if found else None
    return found


def _glob(pattern: str, outdir: Path) -> list[Path]:
    base = str(outdir)
    if pattern.startswith(base + "/"):
        pattern = pattern[len(base) + 1:]
    if pattern in (".", base, "./"):
        return [outdir]
    hits = sorted(globlib.glob(globlib.escape(base) + "/" + pattern))
    inside = []
    for h in hits:
        if not os.path.normpath(h).startswith(base + os.sep):
            raise ToolFailed(f"glob {pattern!r} reaches outside the output directory")
        real = os.path.realpath(h)
        if not real.startswith(os.path.realpath(base) + os.sep):
            raise ToolFailed(f"{Path(h).name}, an output, is a link to {real}, outside the "
                             "output directory")
        if Path(h).name != "cwl.output.json":
            inside.append(Path(h))
    return inside


def _format(tool: Mapping[str, Any], p: Mapping[str, Any], value: Any,
            context: Mapping[str, Any]) -> Any:
    fmt = p.get("format")
    if fmt is None or value is None:
        return value
    if isinstance(value, list):
        return [_format(tool, p, v, context) for v in value]
    if files.is_file_like(value) and value["class"] == "File":
        iri = expand_iri(str(evaluate(fmt, {**context, "self": value})), tool)
        return dict(value, format=iri)
    return value


def expand_iri(name: str, process: Mapping[str, Any]) -> str:
    """``edam:format_2330`` with ``$namespaces: {edam: http://...}`` -> the full IRI."""
    prefix, sep, rest = name.partition(":")
    spaces = process.get("_namespaces") or {}
    if sep and prefix in spaces and not rest.startswith("//"):
        return str(spaces[prefix]) + rest
    return name


def _out_secondary(p: Mapping[str, Any], value: Any) -> Any:
    patterns = _patterns(p.get("secondaryFiles"), required=False)
    if not patterns:
        return value
    if isinstance(value, list):
        return [_out_secondary(p, v) for v in value]
    if not (files.is_file_like(value) and "path" in value):
        return value
    found = []
    for pattern, required in patterns:
        path = Path(secondary_name(value["path"], pattern))
        if path.exists():
            found.append(files.describe(path))
        elif required:
            raise ToolFailed(f"output {p.get('id', p.get('name'))!r}: secondary file "
                             f"{path.name} is missing")
    return dict(value, secondaryFiles=found)
