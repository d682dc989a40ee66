"""CWL File and Directory objects on the local file system.

An object Kale hands on always has ``class``, ``location`` (a ``file://`` URI), ``path``
(absolute), ``basename``, and, for a File, ``nameroot``, ``nameext``, ``size`` and
``checksum`` (``sha1$...``) when it was collected as an output; a Directory collected as
an output has its ``listing``, all the way down. Input objects are *resolved*: a relative
``location``/``path`` is read against the job file's (or, for a default, the document's)
directory; a literal (``contents`` without a location, a Directory ``listing`` without
one) stays a literal until a step makes it real (:func:`materialise`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from kale.cwl.document import CwlError, file_path

CLASSES = ("File", "Directory")
#: what loadContents reads (CWL: at most 64 KiB)
CONTENTS_LIMIT = 64 * 1024


def is_file_like(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class") in CLASSES


def uri(path: str | Path) -> str:
    return "file://" + quote(str(path), safe="/:@+,=~-_.!")


def resolve(value: Any, base: Path) -> Any:
    """Every File/Directory inside ``value`` with absolute ``location`` and ``path``."""
    if isinstance(value, list):
        return [resolve(v, base) for v in value]
    if not isinstance(value, dict):
        return value
    if not is_file_like(value):
        return {k: resolve(v, base) for k, v in value.items()}
    out = dict(value)
    where = value.get("location") or value.get("path")
    if where:
        text = str(where)
        if "location" in value and "://" not in text:
            text = unquote(text)  # a location is a URI reference: "item %231.txt"
        path = file_path(text, base).resolve() if not text.startswith("_:") else None
        if path is not None:
            out["location"], out["path"] = uri(path), str(path)
            out.setdefault("basename", path.name)
    if "basename" in out:
        _names(out)
    for key in ("secondaryFiles", "listing"):
        if key in value:
            out[key] = [resolve(v, base) for v in value[key]]
    return out


def _names(obj: dict[str, Any]) -> None:
    if obj.get("class") == "File":
        root, ext = os.path.splitext(obj["basename"])
        obj["nameroot"], obj["nameext"] = root, ext
        if root.startswith(".") and not ext:  # ".bashrc": all root
            obj["nameroot"], obj["nameext"] = obj["basename"], ""


def materialise(value: Any, where: Path) -> Any:
    """Literals inside ``value`` written under ``where`` (a fresh directory each); a File
    or Directory whose ``basename`` differs from its path's name is linked under that
    name; secondary files are linked beside their primary file."""
    if isinstance(value, list):
        return [materialise(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    if not is_file_like(value):
        return {k: materialise(v, where) for k, v in value.items()}
    out = dict(value)
    if "path" not in out:
        out = _literal(out, where)
    secondary = out.get("secondaryFiles") or []
    needs_dir = Path(out["path"]).name != out.get("basename", Path(out["path"]).name) or any(
        is_file_like(s) and "path" in s
        and Path(s["path"]).parent != Path(out["path"]).parent for s in secondary)
    if needs_dir:
        stage = _fresh(where)
        link = stage / out.get("basename", Path(out["path"]).name)
        link.symlink_to(out["path"], target_is_directory=out["class"] == "Directory")
        out["path"], out["location"] = str(link), uri(link)
        linked = []
        for s in secondary:
            s = materialise(s, where) if is_file_like(s) else s
            if is_file_like(s) and "path" in s:
                target = stage / s.get("basename", Path(s["path"]).name)
                if not target.exists():
                    target.symlink_to(s["path"])
                s = dict(s, path=str(target), location=uri(target))
            linked.append(s)
        out["secondaryFiles"] = linked
    elif secondary:
        out["secondaryFiles"] = [materialise(s, where) for s in secondary]
    if out["class"] == "Directory" and "listing" in out:
        out["listing"] = listing(Path(out["path"]), deep=True)
    out.setdefault("basename", Path(out["path"]).name)
    _names(out)
    return out


def _fresh(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    n = len(list(where.iterdir()))
    while (where / f"stg{n}").exists():
        n += 1
    path = where / f"stg{n}"
    path.mkdir()
    return path


def _literal(obj: dict[str, Any], where: Path) -> dict[str, Any]:
    name = obj.get("basename")
    if obj["class"] == "File":
        if "contents" not in obj:
            raise CwlError(f"a File without 'location', 'path' or 'contents': {obj}")
        path = _fresh(where) / (name or "literal")
        path.write_text(str(obj["contents"]))
    else:
        path = _fresh(where) / (name or "dir")
        path.mkdir()
        for item in obj.get("listing") or []:
            made = materialise(item, where)
            target = path / made.get("basename", Path(made["path"]).name)
            if made["class"] == "Directory":
                shutil.copytree(made["path"], target, symlinks=True)
            else:
                shutil.copyfile(made["path"], target)
    return dict(obj, path=str(path), location=uri(path), basename=path.name)


def describe(path: Path, *, contents: bool = False) -> dict[str, Any]:
    """The File or Directory object of an output that exists at ``path``."""
    if path.is_dir():
        return {"class": "Directory", "location": uri(path), "path": str(path),
                "basename": path.name, "listing": listing(path, deep=True)}
    obj: dict[str, Any] = {"class": "File", "location": uri(path), "path": str(path),
                           "basename": path.name, "dirname": str(path.parent)}
    _names(obj)
    obj["size"], obj["checksum"] = _stat(path)
    if contents:
        obj["contents"] = read_contents(path)
    return obj


def _stat(path: Path) -> tuple[int, str]:
    h = hashlib.sha1(usedforsecurity=False)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, "sha1$" + h.hexdigest()


def read_contents(path: str | Path) -> str:
    with open(path, "rb") as f:
        data = f.read(CONTENTS_LIMIT + 1)
    if len(data) > CONTENTS_LIMIT:
        raise CwlError(f"{path}: loadContents reads at most 64 KiB, the file is larger")
    return data.decode("utf-8", "replace")


def listing(path: Path, *, deep: bool) -> list[dict[str, Any]]:
    out = []
    for child in sorted(path.iterdir()):
        if child.is_dir():
            d: dict[str, Any] = {"class": "Directory", "location": uri(child),
                                 "path": str(child), "basename": child.name}
            d["listing"] = listing(child, deep=True) if deep else []
            out.append(d)
        else:
            out.append(describe(child))
    return out


def fill(value: Any) -> Any:
    """Inputs made whole for a tool: ``size`` and the names of every File that exists
    (``$(inputs.f.size)``), the ``listing`` of Directories."""
    if isinstance(value, list):
        return [fill(v) for v in value]
    if not isinstance(value, dict):
        return value
    if not is_file_like(value):
        return {k: fill(v) for k, v in value.items()}
    out = dict(value)
    if "path" not in out:  # a literal not made real yet
        return out
    path = Path(out["path"])
    out["dirname"] = str(path.parent)
    if out["class"] == "File" and path.is_file():
        out.setdefault("size", path.stat().st_size)
    if out["class"] == "Directory" and path.is_dir() and "listing" not in out:
        out["listing"] = listing(path, deep=False)
    if "secondaryFiles" in out:
        out["secondaryFiles"] = [fill(s) for s in out["secondaryFiles"]]
    return out
