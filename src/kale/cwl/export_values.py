"""Values in an exported CWL document: types of workflow parameters, literal text that
CWL must not read as a parameter reference, and the parameter references (never
JavaScript) that stand for a Kale reference's value.

Invariants: every literal string this module returns for a place CWL interpolates
(``arguments``, ``envDef``, ``glob``) reads back as exactly the text it was given; no
expression it writes needs ``InlineJavascriptRequirement``.
"""

from __future__ import annotations

import re
from typing import Any

#: CWL types of the three shapes a task output may take
FILE_OR_DIR: list[str] = ["File", "Directory"]
FILES_OR_DIRS: dict[str, Any] = {"type": "array", "items": ["File", "Directory"]}
#: the tool input that holds "": appended to a lone reference to a number, a bool or a
#: list, it turns the reference into string interpolation (cwltool then writes the value
#: as JSON text, as Kale does), where a lone one would give the raw value
NIL = "kale_nil"
_ID = re.compile(r"[^A-Za-z0-9_]")
_INT32 = 2**31


def cwl_type(value: Any) -> Any:
    """The CWL type of a workflow parameter, from its value (its default)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int" if -_INT32 <= value < _INT32 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if value is None:
        return ["null", "string"]
    return "Any"


def is_text(cwl: Any) -> bool:
    """Whether values of this CWL type are strings (a lone reference to one is text)."""
    return bool(cwl == "string")


def is_glob(pattern: str) -> bool:
    """Whether a declared output is a glob (Kale then gives every match, comma-joined)."""
    return any(c in pattern for c in "*?[")


def output_type(pattern: str) -> Any:
    """The CWL type of a declared output: a file or directory, or a list of them."""
    return FILES_OR_DIRS if is_glob(pattern) else list(FILE_OR_DIR)


def literal(text: str) -> str:
    """``text`` for a place where CWL interpolates: as it is when CWL finds nothing to
    read in it, else with backslashes doubled and ``$(``/``${`` escaped."""
    if "$(" not in text and "${" not in text:
        return text
    return escape(text)


def escape(text: str) -> str:
    """``text`` escaped for CWL v1.2 interpolation, unconditionally (for text that is
    part of a string holding references, which CWL always reads)."""
    return text.replace("\\", "\\\\").replace("$(", "\\$(").replace("${", "\\${")


def ident(text: str, taken: set[str]) -> str:
    """A CWL identifier made from ``text`` (other characters become ``_``), unique among
    ``taken``, which it joins."""
    base = _ID.sub("_", text) or "x"
    if not (base[0].isalpha() or base[0] == "_"):
        base = "_" + base
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name
