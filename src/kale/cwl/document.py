"""Reading CWL documents: YAML or JSON, ``$import``/``$include``, packed ``$graph``
documents (``#main`` or a named fragment), ``run:`` references to other files, and the
short forms CWL allows (maps for inputs, outputs, requirements and steps; ``File?`` and
``string[]`` types). What comes out is one shape, whatever the author wrote:

- a process is a dict with ``class``, ``id`` (no ``#``), ``inputs``/``outputs`` as lists
  of dicts with ``id``, ``requirements``/``hints`` as lists of dicts with ``class``;
  ``_dir`` is the directory relative locations in it are read from, ``_file`` the file;
- a workflow's steps are a list, each step's ``in`` a list of dicts with ``id``,
  ``source`` (a list of ``input`` or ``step/output`` names) and the rest, its ``out``
  a list of names, its ``run`` the loaded process;
- types are expanded: ``File?`` is ``["null", "File"]``, ``T[]`` is
  ``{"type": "array", "items": T}``, schema names from ``SchemaDefRequirement`` are
  replaced by their definitions.

Nothing here runs anything; every problem is a :class:`CwlError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kale.errors import UsageError, ValidationError
from kale.spec.loader import load_yaml_text

#: the CWL versions whose documents are read (as v1.2)
VERSIONS = ("v1.0", "v1.1", "v1.2")
PROCESS_CLASSES = ("CommandLineTool", "Workflow", "ExpressionTool", "Operation")


class CwlError(UsageError):
    """A CWL document (or its input object) Kale cannot read: the message names the file
    and what is wrong."""


class Unsupported(CwlError):
    """A valid CWL feature Kale does not implement, refused by name (cwl-runner's exit
    code 33, ``kale run``'s 2)."""


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise CwlError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return load_yaml_text(text, file=str(path))  # YAML 1.2, as CWL: 1.23e5 is a float
    except ValidationError as e:
        raise CwlError(f"{path}: not valid YAML/JSON: "
                       + "; ".join(str(p) for p in e.problems)) from None


def file_path(location: str, base: Path) -> Path:
    """A location (a relative path, an absolute one, or a ``file://`` URI) as a path."""
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    if "://" in location:
        scheme = location.split(":")[0]
        raise CwlError(f"{location}: only local files are supported (not {scheme}://)")
    return base / location


def _resolve_imports(node: Any, base: Path, depth: int = 0) -> Any:
    if depth > 20:
        raise CwlError(f"{base}: $import nested too deeply")
    if isinstance(node, dict):
        if "$import" in node and len(node) == 1:
            path = file_path(str(node["$import"]).split("#")[0], base)
            return _resolve_imports(read_yaml(path), path.parent, depth + 1)
        if "$include" in node and len(node) == 1:
            path = file_path(str(node["$include"]), base)
            try:
                return path.read_text()
            except OSError as e:
                raise CwlError(f"{path}: cannot $include: {e.strerror or e}") from None
        return {k: _resolve_imports(v, base, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_imports(v, base, depth) for v in node]
    return node


def short(ident: str) -> str:
    """The last part of a CWL id: ``#main/step/out`` -> ``out``."""
    return ident.split("#")[-1].split("/")[-1]


def load(path: str | Path) -> dict[str, Any]:
    """The process a file (``file.cwl`` or ``file.cwl#name``) holds, normalised."""
    text = str(path)
    where, _, fragment = text.partition("#")
    file = Path(where).resolve()
    doc = _resolve_imports(read_yaml(file), file.parent)
    return _process_in(doc, file, fragment)


def _process_in(doc: Any, file: Path, fragment: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise CwlError(f"{file}: a CWL document is a mapping with 'class' "
                       f"(got {type(doc).__name__})")
    version = doc.get("cwlVersion")
    graph = doc.get("$graph")
    if graph is not None:
        if not isinstance(graph, list):
            raise CwlError(f"{file}: '$graph' must be a list of processes")
        byid = {str(p.get("id", "")).lstrip("#"): p for p in graph if isinstance(p, dict)}
        name = fragment or ("main" if "main" in byid else "")
        if not name and len(byid) == 1:
            name = next(iter(byid))
        if name not in byid:
            raise CwlError(f"{file}: no process {name or 'main'!r} in '$graph' "
                           f"(it has: {', '.join(byid)})")
        chosen = dict(byid[name])
        chosen.setdefault("cwlVersion", version)
        return normalise(chosen, file, {"graph": byid, "namespaces": doc.get("$namespaces")})
    if fragment and str(doc.get("id", "")).lstrip("#") not in (fragment, ""):
        raise CwlError(f"{file}: no process {fragment!r} in this document")
    return normalise(doc, file, {"graph": {}, "namespaces": doc.get("$namespaces")})


def normalise(doc: dict[str, Any], file: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """One process in the one shape (module docstring)."""
    cls = doc.get("class")
    if cls not in PROCESS_CLASSES:
        raise CwlError(f"{file}: 'class' must be one of {', '.join(PROCESS_CLASSES)} "
                       f"(got {cls!r})")
    version = doc.get("cwlVersion")
    if version is not None and version not in VERSIONS:
        raise CwlError(f"{file}: cwlVersion {version!r} is not supported "
                       f"(Kale reads {', '.join(VERSIONS)})")
    out = dict(doc)
    out["_file"], out["_dir"] = str(file), str(file.parent)
    out["_namespaces"] = dict(ctx.get("namespaces") or {})
    out["id"] = short(str(doc.get("id", file.stem))) or file.stem
    out["requirements"] = _classes(doc.get("requirements"), file, "requirements")
    out["hints"] = _classes(doc.get("hints"), file, "hints")
    schemas = _schema_defs(out["requirements"] + out["hints"], file)
    for what in ("inputs", "outputs"):
        out[what] = [_param(p, file, schemas, what) for p in _listed(doc.get(what), file, what)]
    if cls == "Workflow":
        out["steps"] = [_step(s, file, ctx, out["id"])
                        for s in _listed(doc.get("steps"), file, "steps")]
        for o in out["outputs"]:
            o["outputSource"] = _sources(o.get("outputSource"), out["id"])
    return out


def _classes(value: Any, file: Path, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [{"class": k, **(v if isinstance(v, dict) else {})} for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, dict) and "class" in v for v in value):
        return [dict(v, **{"class": short(str(v["class"]))}) for v in value]
    raise CwlError(f"{file}: '{what}' must be a list of mappings with 'class', or a mapping "
                   "class -> fields")


def _listed(value: Any, file: Path, what: str) -> list[dict[str, Any]]:
    """A list of ``{id: ...}`` from either form (a list with ids, a map id -> fields)."""
    if value is None:
        return []
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.append({"id": k, **v} if isinstance(v, dict) and ("type" in v or (what != "inputs"
                       and what != "outputs")) else {"id": k, "type": v})
        return out
    if isinstance(value, list):
        for v in value:
            if not isinstance(v, dict) or "id" not in v:
                raise CwlError(f"{file}: each of '{what}' needs an 'id'")
        return [dict(v) for v in value]
    raise CwlError(f"{file}: '{what}' must be a list or a mapping")


def _schema_defs(reqs: list[dict[str, Any]], file: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in reqs:
        if r["class"] == "SchemaDefRequirement":
            for t in r.get("types") or []:
                if isinstance(t, dict) and "name" in t:
                    out[short(str(t["name"]))] = t
    for name, t in list(out.items()):
        out[name] = expand_type(t, out, file)
    return out


def expand_type(t: Any, schemas: dict[str, Any], file: Path, depth: int = 0) -> Any:
    """A type with its short forms and schema names expanded (see the module docstring)."""
    if depth > 30:
        raise CwlError(f"{file}: a type refers to itself")
    if isinstance(t, str):
        if t.endswith("?"):
            return ["null", expand_type(t[:-1], schemas, file, depth + 1)]
        if t.endswith("[]"):
            return {"type": "array", "items": expand_type(t[:-2], schemas, file, depth + 1)}
        name = short(t)
        if name in schemas and name not in BASIC:
            return schemas[name] if depth else expand_type(schemas[name], schemas, file, depth + 1)
        return name if t.startswith("#") or "/" not in t else t
    if isinstance(t, list):
        return [expand_type(x, schemas, file, depth + 1) for x in t]
    if isinstance(t, dict):
        out = dict(t)
        kind = t.get("type")
        if kind == "array":
            out["items"] = expand_type(t.get("items"), schemas, file, depth + 1)
        elif kind == "record":
            fields = _listed(t.get("fields"), file, "fields") if isinstance(t.get("fields"), dict) \
                else [dict(f, id=f.get("name", f.get("id"))) for f in t.get("fields") or []]
            out["fields"] = [dict(f, name=short(str(f["id"])),
                                  type=expand_type(f.get("type"), schemas, file, depth + 1))
                             for f in fields]
        elif kind == "enum":
            out["symbols"] = [short(str(s)) for s in t.get("symbols") or []]
        elif kind is not None and kind not in BASIC:
            return expand_type(kind, schemas, file, depth + 1)
        return out
    return t


BASIC = ("null", "boolean", "int", "long", "float", "double", "string", "File", "Directory",
         "Any", "stdout", "stderr", "stdin", "array", "record", "enum")


def _param(p: dict[str, Any], file: Path, schemas: dict[str, Any], what: str) -> dict[str, Any]:
    out = dict(p)
    out["id"] = short(str(p["id"]))
    if "type" not in p and what == "inputs":
        raise CwlError(f"{file}: input {out['id']!r} has no 'type'")
    out["type"] = expand_type(p.get("type", "Any"), schemas, file)
    return out


def _sources(value: Any, owner: str) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [_source(str(v), owner) for v in values]


def _source(text: str, owner: str) -> str:
    """``#main/step/out``, ``step/out``, ``#main/inp``, ``#inp`` -> ``step/out`` or
    ``inp`` (``owner``: the workflow's id, dropped in front)."""
    parts = text.lstrip("#").split("/")
    if len(parts) > 1 and parts[0] == owner:
        parts = parts[1:]
    return "/".join(parts[-2:])


def _step(s: dict[str, Any], file: Path, ctx: dict[str, Any], owner: str) -> dict[str, Any]:
    out = dict(s)
    out["id"] = short(str(s["id"]))
    ins = []
    raw = s.get("in") or []
    items = ([{"id": k, **(v if isinstance(v, dict) else {"source": v})} for k, v in raw.items()]
             if isinstance(raw, dict) else raw)
    for i in items:
        if not isinstance(i, dict) or "id" not in i:
            raise CwlError(f"{file}: step {out['id']!r}: each of 'in' needs an 'id'")
        ins.append(dict(i, id=short(str(i["id"])), source=_sources(i.get("source"), owner)))
    out["in"] = ins
    out["out"] = [short(str(o["id"] if isinstance(o, dict) else o)) for o in s.get("out") or []]
    out["requirements"] = _classes(s.get("requirements"), file, "requirements")
    out["hints"] = _classes(s.get("hints"), file, "hints")
    out["run"] = _run_of(s.get("run"), file, ctx, out["id"])
    scatter = s.get("scatter")
    out["scatter"] = [short(str(x)) for x in (scatter if isinstance(scatter, list) else
                                              [scatter] if scatter else [])]
    return out


def _run_of(run: Any, file: Path, ctx: dict[str, Any], step: str) -> dict[str, Any]:
    if isinstance(run, dict):
        return normalise(dict(run, cwlVersion=run.get("cwlVersion")), file, ctx)
    if not isinstance(run, str):
        raise CwlError(f"{file}: step {step!r} has no 'run' (a file or a process)")
    if run.startswith("#"):
        target = ctx["graph"].get(run.lstrip("#"))
        if target is None:
            raise CwlError(f"{file}: step {step!r}: no process {run!r} in '$graph'")
        return normalise(dict(target), file, ctx)
    where, _, fragment = run.partition("#")
    path = file_path(where, file.parent).resolve()
    doc = _resolve_imports(read_yaml(path), path.parent)
    return _process_in(doc, path, fragment)


def job_object(path: str | Path | None) -> tuple[dict[str, Any], Path]:
    """The input object of a job file (YAML or JSON), and the directory its relative
    locations are read from (the current one without a file)."""
    if path is None:
        return {}, Path.cwd()
    file = Path(path).resolve()
    data = read_yaml(file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CwlError(f"{file}: an input object is a mapping of input name -> value")
    return data, file.parent


def requirement(process: dict[str, Any], cls: str, *, hints: bool = True
                ) -> dict[str, Any] | None:
    """The last requirement (or, with ``hints``, hint) of class ``cls``."""
    levels = ["requirements", "hints"] if hints else ["requirements"]
    for level in levels:
        for r in reversed(process.get(level) or []):
            if isinstance(r, dict) and r.get("class") == cls:
                return dict(r)
    return None


def inherit(parents: list[list[dict[str, Any]]], process: dict[str, Any]) -> dict[str, Any]:
    """The process as it runs in its step: the requirements and hints of the workflows and
    steps above it (``parents``: requirements, hints, requirements, hints... outermost
    first) before its own (the most specific wins: :func:`requirement` reads the last)."""
    reqs = [r for level in parents[0::2] for r in level]
    hints = [h for level in parents[1::2] for h in level]
    return dict(process, requirements=reqs + list(process.get("requirements") or []),
                hints=hints + list(process.get("hints") or []))
