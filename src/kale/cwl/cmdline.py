"""A CommandLineTool's command line, from its resolved inputs (CWL v1.2, "Input binding").

Bindings come from ``arguments`` and from every input (and every record field, and every
array item whose type carries an ``inputBinding``) and are sorted by their sort key:
``position``, then arguments (by index) before inputs (by name); a record's fields and an
array's items sort right after the binding they belong to. Each binding gives words:
``prefix`` (joined to the value unless ``separate``), a boolean gives its prefix when
true, an array its items (joined by ``itemSeparator`` if given), a File or Directory its
path, a float its decimals. The words are argv items; under ShellCommandRequirement they
are joined into one ``/bin/sh -c`` line, each quoted unless ``shellQuote: false``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from kale.cwl.expr import evaluate, text_of
from kale.cwl.files import is_file_like
from kale.cwl.types import choose

#: one word of the command line, and whether a shell line quotes it
Word = tuple[str, bool]
Key = tuple[Any, ...]


def _position(binding: Mapping[str, Any], context: Mapping[str, Any]) -> int:
    pos = evaluate(binding.get("position", 0), context)
    try:
        return int(pos)
    except (TypeError, ValueError):
        return 0


def words(tool: Mapping[str, Any], inputs: Mapping[str, Any],
          runtime: Mapping[str, Any]) -> list[Word]:
    """The whole command line: ``baseCommand`` then the sorted bindings."""
    context = {"inputs": inputs, "runtime": runtime, "self": None}
    bound: list[tuple[Key, list[Word]]] = []
    for i, arg in enumerate(tool.get("arguments") or []):
        binding = {"valueFrom": arg} if isinstance(arg, str) else dict(arg)
        key = (_position(binding, context), (0, i))
        value = evaluate(binding.get("valueFrom"), context)
        bound.append((key, _plain(binding, value)))
    for p in tool.get("inputs") or []:
        key = (_position(p.get("inputBinding") or {}, context), (1, p["id"]))
        bound += _bind(key, (), p.get("inputBinding"), inputs.get(p["id"]), p["type"],
                       context)
    bound.sort(key=lambda kv: kv[0])
    base = tool.get("baseCommand") or []
    base = [base] if isinstance(base, str) else list(base)
    return [(str(b), True) for b in base] + [w for _, ws in bound for w in ws]


def _bind(key: Key, lead: Key, binding: Mapping[str, Any] | None, value: Any, type_: Any,
          context: Mapping[str, Any]) -> list[tuple[Key, list[Word]]]:
    """The words of one value: its own binding's at ``key``; a record's fields and an
    array's items sort right after it, or, when it has no binding of its own, among the
    bindings at the level it is in (``lead``: the key of the binding above)."""
    if value is None:
        return []
    if binding is not None and "valueFrom" in binding:
        value = evaluate(binding["valueFrom"], {**context, "self": value})
        return [(key, _plain(binding, value))]
    t = choose(type_, value)
    nested: list[tuple[Key, list[Word]]] = []
    handled = False
    if isinstance(value, list) and isinstance(t, dict) and t.get("type") == "array":
        item_binding = t.get("inputBinding")
        if item_binding is not None or _has_bindings(t.get("items")):
            handled = True
            for i, item in enumerate(value):
                sub = (_position(item_binding or {}, context), (0, i))
                nested += _bind(key + sub, key + sub, item_binding, item, t.get("items"),
                                context)
    elif isinstance(value, dict) and not is_file_like(value) and isinstance(t, dict) \
            and t.get("type") == "record":
        handled = True
        for f in t.get("fields") or []:
            fb = f.get("inputBinding")
            if fb is None and not _has_bindings(f.get("type")):
                continue
            sub = (_position(fb or {}, context), (1, f["name"]))
            base = key if binding is not None else lead
            nested += _bind(base + sub, base, fb, value.get(f["name"]), f.get("type"), context)
    if binding is None:
        return nested
    if handled:
        prefix = binding.get("prefix")
        own = [(str(prefix), _quote(binding))] if prefix and (value or value == 0) else []
        return [(key, own), *nested] if not (isinstance(value, list) and not value) else []
    return [(key, _plain(binding, value))]


def _has_bindings(type_: Any) -> bool:
    if isinstance(type_, list):
        return any(_has_bindings(t) for t in type_)
    if not isinstance(type_, dict):
        return False
    if type_.get("inputBinding") is not None:
        return True
    if type_.get("type") == "record":
        return any(f.get("inputBinding") is not None or _has_bindings(f.get("type"))
                   for f in type_.get("fields") or [])
    return type_.get("type") == "array" and _has_bindings(type_.get("items"))


def _quote(binding: Mapping[str, Any]) -> bool:
    return binding.get("shellQuote", True) is not False


def _flat(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [value]


def _word(value: Any) -> str:
    if is_file_like(value):
        return str(value.get("path") or value.get("location"))
    return text_of(value)


def _plain(binding: Mapping[str, Any], value: Any) -> list[Word]:
    """The words of one binding of a value (no nested bindings)."""
    prefix, q = binding.get("prefix"), _quote(binding)
    separate = binding.get("separate", True) is not False
    if value is None:
        return []
    if isinstance(value, bool):
        return [(str(prefix), q)] if value and prefix else []
    if isinstance(value, list):
        items = [v for v in _flat(value) if v is not None]
        if not items:
            return []
        sep = binding.get("itemSeparator")
        if sep is not None:
            return _prefixed(prefix, separate, str(sep).join(_word(v) for v in items), q)
        return ([(str(prefix), q)] if prefix else []) + [(_word(v), q) for v in items]
    if isinstance(value, dict) and not is_file_like(value):
        return [(str(prefix), q)] if prefix else []
    return _prefixed(prefix, separate, _word(value), q)


def _prefixed(prefix: Any, separate: bool, text: str, q: bool) -> list[Word]:
    if not prefix:
        return [(text, q)]
    return [(str(prefix), q), (text, q)] if separate else [(str(prefix) + text, q)]


def shell_line(ws: list[Word]) -> str:
    """The words as one shell command line (ShellCommandRequirement)."""
    return " ".join(shlex.quote(w) if q else w for w, q in ws)
