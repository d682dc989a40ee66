"""InitialWorkDirRequirement: Files, Directories and text written into a tool's output
directory before it runs. Invariant: nothing is written outside that directory; an input
copied there is then read from there (its ``path`` in ``inputs`` is the copy's)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.cwl import files
from kale.cwl.document import CwlError, requirement
from kale.cwl.expr import evaluate


def repath(value: Any, moved: Mapping[str, Path]) -> Any:
    """``value`` with every File or Directory that :func:`stage_workdir` copied naming
    its copy."""
    if isinstance(value, list):
        return [repath(v, moved) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: repath(v, moved) for k, v in value.items()}
    if files.is_file_like(value) and value.get("path") in moved:
        target = moved[value["path"]]
        out.update(path=str(target), location=files.uri(target), basename=target.name,
                   dirname=str(target.parent))
    return out


def stage_workdir(tool: Mapping[str, Any], context: Mapping[str, Any], outdir: Path,
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
