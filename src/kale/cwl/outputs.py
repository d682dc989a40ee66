"""A tool's output object, collected from its output directory: ``cwl.output.json`` if
the tool wrote it, else each output's glob, ``loadContents``, ``outputEval``, secondary
files and format. Invariant: it holds only the declared outputs, each of its declared
type, and every File in it exists inside the output directory and carries its ``size``
and ``checksum``."""

from __future__ import annotations

import glob as globlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.cwl import files
from kale.cwl.document import CwlError
from kale.cwl.expr import evaluate
from kale.cwl.inputs import secondary_name, secondary_patterns
from kale.cwl.types import check, choose


class ToolFailed(CwlError):
    """The tool ran and failed (an exit code not among its successCodes, an output
    missing)."""


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
    wanted = secondary_patterns(p.get("secondaryFiles"), required=False)
    if not wanted:
        return value
    if isinstance(value, list):
        return [_out_secondary(p, v) for v in value]
    if not (files.is_file_like(value) and "path" in value):
        return value
    found = []
    for pattern, required in wanted:
        path = Path(secondary_name(value["path"], pattern))
        if path.exists():
            found.append(files.describe(path))
        elif required:
            raise ToolFailed(f"output {p.get('id', p.get('name'))!r}: secondary file "
                             f"{path.name} is missing")
    return dict(value, secondaryFiles=found)
