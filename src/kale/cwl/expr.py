"""CWL parameter references, without JavaScript.

``$(inputs.name)``, ``$(inputs['name'])``, ``$(self[0].contents)``, ``$(runtime.outdir)``,
``$(inputs.list.length)``: a symbol (``inputs``, ``self``, ``runtime``) and segments (``.x``,
``['x']``, ``["x"]``, ``[0]``). A string that is one reference evaluates to the value
itself; references inside longer text are interpolated (strings as they are, other values
as JSON). ``\\$(`` is a literal ``$(``.

Anything else inside ``$(...)``, and every ``${...}`` body, is JavaScript: Kale does not run
it, and :func:`check` refuses it by name (InlineJavascriptRequirement) when the document
is read, so nothing fails half-way through a run.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from kale.cwl.document import CwlError, Unsupported

_SEGMENT = re.compile(r"""\.([A-Za-z_][\w]*)|\[\s*(\d+)\s*\]"""
                      r"""|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]""")
_UNESCAPE = re.compile(r"\\(.)")
_SYMBOL = re.compile(r"\s*(inputs|self|runtime|null)\b")


class _Js(Exception):
    """Text inside ``$( )`` or ``${ }`` that is not a parameter reference."""


def _parts(text: str) -> Iterator[tuple[str, str]]:
    """``("text", literal)`` and ``("ref", inner)`` pieces of ``text``; ``("js", inner)``
    for a ``${...}`` body."""
    i, n, buf = 0, len(text), []
    while i < n:
        c = text[i]
        if c == "\\" and text.startswith(("$(", "${"), i + 1):
            buf.append(text[i + 1:i + 3])
            i += 3
            continue
        if c == "$" and i + 1 < n and text[i + 1] in "({":
            close = ")" if text[i + 1] == "(" else "}"
            end = _matching(text, i + 1, text[i + 1], close)
            if end < 0:
                buf.append(c)
                i += 1
                continue
            if buf:
                yield "text", "".join(buf)
                buf = []
            yield ("ref" if close == ")" else "js"), text[i + 2:end]
            i = end + 1
            continue
        buf.append(c)
        i += 1
    if buf:
        yield "text", "".join(buf)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    depth, quote, i = 0, "", start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _path(inner: str) -> tuple[str, list[str | int]]:
    m = _SYMBOL.match(inner)
    if not m:
        raise _Js(inner)
    pos, segs = m.end(), []
    rest = inner.rstrip()
    while pos < len(rest):
        s = _SEGMENT.match(rest, pos)
        if not s:
            raise _Js(inner)
        name, index, q1, q2 = s.groups()
        quoted = q1 if q1 is not None else q2
        segs.append(int(index) if index is not None else name if name is not None
                    else _UNESCAPE.sub(r"\1", quoted))
        pos = s.end()
    return m.group(1), segs


def is_expression(text: Any) -> bool:
    return isinstance(text, str) and ("$(" in text or "${" in text)


def check(text: str, where: str) -> None:
    """Raise :class:`Unsupported` when ``text`` holds JavaScript."""
    for kind, inner in _parts(text):
        try:
            if kind == "js":
                raise _Js(inner)
            if kind == "ref":
                _path(inner)
        except _Js:
            raise Unsupported(
                f"{where}: the expression {text.strip()[:80]!r} is JavaScript "
                "(InlineJavascriptRequirement): Kale evaluates parameter references "
                "only, such as $(inputs.name.path) or $(runtime.outdir)") from None


def references(text: str) -> list[tuple[str, list[str | int]]]:
    """The parameter references in ``text`` (symbol, segments); JavaScript is left out."""
    out = []
    for kind, inner in _parts(text):
        if kind == "ref":
            with contextlib.suppress(_Js):
                out.append(_path(inner))
    return out


def _lookup(value: Any, segs: list[str | int], inner: str, symbol: str = "") -> Any:
    if symbol == "inputs" and segs and isinstance(value, dict) and segs[0] not in value:
        raise CwlError(f"$({inner}): the process has no input {segs[0]!r}")
    for s in segs:
        if isinstance(value, list):
            if s == "length":
                value = len(value)
            elif isinstance(s, int) and s < len(value):
                value = value[s]
            else:
                raise CwlError(f"$({inner}): no item {s!r} in a list of {len(value)}")
        elif isinstance(value, dict):
            value = value.get(str(s)) if not isinstance(s, int) else None
        elif value is None:
            raise CwlError(f"$({inner}): {s!r} of null")
        else:
            raise CwlError(f"$({inner}): {type(value).__name__} has no {s!r}")
    return value


def text_of(value: Any) -> str:
    """A value inside interpolated text, or on a command line."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def number(value: float) -> str:
    """A float in decimals, never in scientific notation (CWL: 0.00001, 1230000)."""
    if value == int(value) and abs(value) < 1e18:
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def evaluate(text: Any, context: Mapping[str, Any]) -> Any:
    """``text`` with its references replaced; a non-string or a string without
    references as it is. ``context`` has ``inputs``, ``self``, ``runtime``."""
    if not isinstance(text, str) or not is_expression(text):
        return text
    parts = list(_parts(text))
    try:
        if len(parts) == 1 and parts[0][0] == "ref":
            symbol, segs = _path(parts[0][1])
            return _lookup(context.get(symbol), segs, parts[0][1], symbol)
        out = []
        for kind, inner in parts:
            if kind == "text":
                out.append(inner)
            elif kind == "ref":
                symbol, segs = _path(inner)
                out.append(text_of(_lookup(context.get(symbol), segs, inner, symbol)))
            else:
                raise _Js(inner)
        return "".join(out)
    except _Js:
        raise Unsupported(f"the expression {text[:80]!r} is JavaScript "
                          "(InlineJavascriptRequirement), which Kale does not run") from None
