"""Writing the canonical workflow dict as readable, deterministic YAML.

Block mappings; short lists and flat mappings of scalars in flow style (``after: [a]``);
multi-line strings as ``|`` blocks; strings that would read back as something else quoted
as JSON strings (valid YAML). Reading the text back gives the same data.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from yaml.resolver import Resolver

from kale.errors import ExportError
from kale.spec.scalars import resolve_plain

FLOW_WIDTH = 80  # longest flow collection written on one line
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_FIRST = r"""(?:[^\s\-?:,\[\]{}#&*!|>'"%@`]|-(?=[^\s,\[\]{}]))"""
_PLAIN_BLOCK = re.compile(_FIRST + r"[^\t{}]*")
_PLAIN_FLOW = re.compile(_FIRST + r"[^\t{}\[\],:#?]*")
# Not printable in YAML, or a line break in YAML 1.1: escaped inside double quotes.
_ESCAPE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
_NOT_IN_BLOCK = re.compile(  # the same, less the line feed, plus the tab
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
_YAML11 = Resolver.yaml_implicit_resolvers  # first char -> [(tag, regex)] of YAML 1.1


def dump_yaml(data: Mapping[str, Any]) -> str:
    """``data`` (a canonical workflow dict, or any mapping of YAML-able values) as YAML."""
    if not data:
        return "{}\n"
    lines: list[str] = []
    for key, value in data.items():
        if key == "tasks" and isinstance(value, Mapping) and value and all(
                isinstance(t, Mapping) and t for t in value.values()):
            lines.append("tasks:")
            gap = False
            for name, task in value.items():
                if gap:
                    lines.append("")  # a blank line between tasks
                lines += ["  " + _key(name) + ":", *_block(task, 4)]
                gap = not _ends_with_kept_lines(task)
        else:
            lines += _entry(key, value, 0)
    return "\n".join(lines) + "\n"


def _entry(key: Any, value: Any, indent: int) -> list[str]:
    head = " " * indent + _key(key) + ":"
    if isinstance(value, str) and (style := _block_style(value)):
        return [head + " " + style, *_block_lines(value, indent + 2)]
    text = _inline(value)
    if text is not None:
        return [head + " " + text]
    return [head, *_block(value, indent + 2)]


def _block(value: Any, indent: int) -> list[str]:
    """A non-empty collection, written in block style at ``indent``."""
    if isinstance(value, Mapping):
        return [line for k, v in value.items() for line in _entry(k, v, indent)]
    lines: list[str] = []
    pad = " " * indent
    for item in value:
        if isinstance(item, str) and (style := _block_style(item)):
            lines += [pad + "- " + style, *_block_lines(item, indent + 2)]
        elif (text := _inline(item)) is not None:
            lines.append(pad + "- " + text)
        else:  # a nested collection starts on the dash's line: "- key: value"
            sub = _block(item, indent + 2)
            lines += [pad + "- " + sub[0][indent + 2:], *sub[1:]]
    return lines


def _inline(value: Any) -> str | None:
    """``value`` on one line: a scalar, an empty or short flat collection; else None."""
    if isinstance(value, Mapping | list | tuple):
        if not value:
            return "{}" if isinstance(value, Mapping) else "[]"
        if isinstance(value, Mapping):
            items = [(k, v) for k, v in value.items()]
            if not all(_flat(v) for _, v in items):
                return None
            text = "{" + ", ".join(f"{_key(k, True)}: {_scalar(v, True)}" for k, v in items) + "}"
        else:
            if not all(_flat(v) for v in value):
                return None
            text = "[" + ", ".join(_scalar(v, True) for v in value) + "]"
        return text if len(text) <= FLOW_WIDTH else None
    return _scalar(value, False)


def _flat(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple) and not (
        isinstance(value, str) and "\n" in value)


def _scalar(value: Any, flow: bool) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return value if _is_plain(value, flow) else _quoted(value)
    raise ExportError(f"cannot write a {type(value).__name__} value as YAML: {value!r}")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "." not in text and "e" in text:  # 1e+16 -> 1.0e+16, a float in YAML 1.1 as well
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _key(key: Any, flow: bool = False) -> str:
    if not isinstance(key, str):
        raise ExportError(f"mapping keys must be strings, got {key!r}")
    return key if _KEY.fullmatch(key) and _reads_as_string(key) else _quoted(key)


def _is_plain(text: str, flow: bool) -> bool:
    """Whether ``text`` can be written unquoted and read back as the same string."""
    if not (_PLAIN_FLOW if flow else _PLAIN_BLOCK).fullmatch(text):
        return False
    if text[-1] in " :" or ": " in text or " #" in text or _ESCAPE.search(text):
        return False
    return _reads_as_string(text)


def _reads_as_string(text: str) -> bool:
    """True unless YAML 1.2 or 1.1 reads ``text`` unquoted as null, bool, number, date..."""
    if not isinstance(resolve_plain(text), str):
        return False
    return not any(regex.match(text) for _, regex in _YAML11.get(text[0], []))


def _quoted(text: str) -> str:
    """``text`` as a JSON string, which YAML reads as a double-quoted scalar."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _block_style(text: str) -> str | None:
    """``|``, ``|-`` or ``|+`` if ``text`` can be a literal block scalar exactly, else None."""
    if "\n" not in text or _NOT_IN_BLOCK.search(text):
        return None
    body = text.rstrip("\n")
    lines = body.split("\n")
    first = next((line for line in lines if line), " ")  # sets the indentation when read
    if first.startswith(" ") or any(line.endswith(" ") for line in lines):
        return None
    trailing = len(text) - len(body)
    return "|-" if trailing == 0 else "|" if trailing == 1 else "|+"


def _block_lines(text: str, indent: int) -> list[str]:
    body = text.rstrip("\n")
    lines = body.split("\n") + [""] * (len(text) - len(body) - 1)
    pad = " " * indent
    return [pad + line if line else "" for line in lines]


def _ends_with_kept_lines(value: Any) -> bool:
    """Whether the text for ``value`` ends with a ``|+`` block, whose trailing blank lines
    are part of the string (so no blank line may follow)."""
    while isinstance(value, Mapping | list | tuple) and value:
        value = list(value.values())[-1] if isinstance(value, Mapping) else value[-1]
    return isinstance(value, str) and _block_style(value) == "|+"
