"""A tool's input object made whole before it runs: values else defaults, checked
against the declared types, secondary files found (or required), ``loadContents``.
Invariant: what comes out has a value (maybe null) for every declared input, and every
File in it names its required secondary files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.cwl import files
from kale.cwl.document import CwlError
from kale.cwl.types import allows_null, check, choose, describe


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
                           f"{describe(p['type'])}) and the input object has no value for it")
        check(p["type"], value, f"{tool['_file']}: input {name!r}")
        out[name] = with_secondary(p, value, discover)
    return out


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
    wanted = secondary_patterns(p.get("secondaryFiles"))
    if not wanted or not files.is_file_like(value) or "path" not in value:
        return value
    have = list(value.get("secondaryFiles") or [])
    named = {s.get("basename") for s in have if isinstance(s, dict)}
    for pattern, required in wanted:
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


def secondary_patterns(spec: Any, required: bool = True) -> list[tuple[str, bool]]:
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


def load_contents(tool: Mapping[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    for p in tool.get("inputs") or []:
        load = p.get("loadContents") or (p.get("inputBinding") or {}).get("loadContents")
        value = inputs.get(p["id"])
        if load and isinstance(value, dict) and value.get("class") == "File":
            inputs[p["id"]] = dict(value, contents=files.read_contents(value["path"]))
    return inputs
