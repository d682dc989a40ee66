"""Reading workflow YAML: text -> plain data (with lines) -> validated :class:`Workflow`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kale.errors import Problem, ValidationError
from kale.model.workflow import Workflow, gc_paused
from kale.spec.composer import parse_full
from kale.spec.document import Document
from kale.spec.fastparse import AVOID, parse_fast
from kale.spec.flow import Unsupported
from kale.spec.jsonparse import parse_json

#: how deeply collections may nest in a workflow file (real ones stay far below)
MAX_DEPTH = 64


def read_document(text: str, file: str | None = None) -> Document:
    """Parse YAML text; syntax errors, duplicate keys, aliases that expand without bound
    and nesting deeper than :data:`MAX_DEPTH` raise ValidationError with lines."""
    too_deep = Problem(f"collections nested more than {MAX_DEPTH} levels deep", (), file, None)
    try:
        try:
            doc = parse_fast(text, lines=False)  # lines read again if a problem needs one
        except Unsupported:
            try:
                doc = parse_json(text, AVOID)
            except Unsupported:
                doc = parse_full(text, file)
    except RecursionError:
        raise ValidationError([too_deep]) from None
    if (doc.depth is None or doc.depth > MAX_DEPTH) and _depth(doc.data) > MAX_DEPTH:
        raise ValidationError([too_deep])
    return doc


def _depth(data: Any) -> int:
    """How deeply lists and mappings nest in ``data`` (level by level: no recursion
    limit), counted up to one more than :data:`MAX_DEPTH`."""
    depth, level = 0, [data] if isinstance(data, dict | list) else []
    while level and depth <= MAX_DEPTH:
        depth += 1
        below: list[Any] = []
        for c in level:
            below += [v for v in (c.values() if isinstance(c, dict) else c)
                      if isinstance(v, dict | list)]
        level = below
    return depth


def load_yaml_text(text: str, *, file: str | None = None) -> Any:
    """The plain data (dicts, lists, YAML 1.2 scalars) in YAML ``text``."""
    return read_document(text, file).data


def load_workflow(source: str | Path, *, params_override: dict[str, Any] | None = None,
                  check_files: bool = True, cls: type[Workflow] = Workflow) -> Workflow:
    """Load and validate a workflow from a YAML file path, or from YAML text (a ``str``
    containing a newline). Relative paths in it resolve against the file's folder (the
    current directory for text). ``params_override`` replaces workflow parameter values.
    With ``check_files``, what the tasks name outside the file is checked too (notebooks,
    modules and functions, kernels: :mod:`kale.model.checks`).
    Every problem raises one :class:`ValidationError` whose problems carry file and line.
    ``cls``: the class to make (``kale.Workflow`` gives the facade's)."""
    with gc_paused():
        return _load(source, params_override, check_files, cls)


def _load(source: str | Path, params_override: dict[str, Any] | None, check_files: bool,
          cls: type[Workflow]) -> Workflow:
    if isinstance(source, str) and "\n" in source:
        file, text, base_dir = None, source, Path.cwd()
    else:
        file, base_dir = str(source), Path(source).parent
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problem = Problem(f"cannot read the workflow file: {e}", (), file)
            raise ValidationError([problem]) from None
    doc = read_document(text, file)
    data = doc.data
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ValidationError(doc.locate(
            [Problem(f"a workflow must be a mapping with 'name' and 'tasks', got {got}")], file))
    if params_override:
        _override(data, params_override, doc, file)
    try:
        wf, problems = cls.parse(data, base_dir=base_dir,
                                 no_nul=_no_nul(text) and not params_override)
    except ValidationError as e:
        raise ValidationError(doc.locate(e.problems, file)) from None
    if check_files:
        from kale.model.checks import target_problems

        problems += target_problems(wf)  # the tasks that are valid on their own
    if problems:  # in the file's order
        located = doc.locate(problems, file)
        raise ValidationError(sorted(located, key=lambda p: p.line or 0))
    return wf


def _no_nul(text: str) -> bool:
    """Whether no value read from ``text`` can hold a NUL: it has none, and no escape
    (a backslash) that could make one."""
    return "\\" not in text and "\0" not in text


def _override(data: dict[str, Any], values: dict[str, Any], doc: Document,
              file: str | None) -> None:
    params = data.get("parameters")
    if params is not None and not isinstance(params, dict):
        return  # Workflow.from_dict reports the bad 'parameters'
    known = params or {}
    unknown = [k for k in values if k not in known]
    if unknown:
        names = ", ".join(known) or "none"
        raise ValidationError(doc.locate(
            [Problem(f"unknown workflow parameter {k!r} (parameters: {names})", ("parameters",))
             for k in unknown], file))
    known.update(values)
