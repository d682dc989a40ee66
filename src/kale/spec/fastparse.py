"""A fast reader for the subset of YAML that workflow files use: block mappings and
sequences, one-line flow collections and quoted strings, ``|`` literal blocks, comments.

libyaml through PyYAML builds a Python object per event, which takes seconds on a file of
10,000 tasks; this reader goes line by line and hands flow collections to the JSON decoder.
Anything outside the subset, or wrong, raises :class:`Unsupported`, and the caller falls
back to the complete reader (:mod:`kale.spec.composer`), which also words the errors.
Inside the subset both readers give the same data and lines (the tests check this).
"""

from __future__ import annotations

import re
from typing import Any

from kale.spec.document import Document, Positions
from kale.spec.flow import LEX, Unsupported, read_double_quoted, read_flows
from kale.spec.scalars import CONST, resolve_plain

_KEY = re.compile(r"""(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|"""
                  r"""([^ \-?:,\[\]{}#&*!|>'"%@`][^:#]*?))[ ]*:(?:[ ]+|$)""")
#: the common line, "name: rest" (the key a name: what _KEY matches on such a line, found
#: without backtracking), with its indentation
_ENTRY = re.compile(r"( *)([A-Za-z_][\w.-]*):(?:[ ]+|$)(.*)")
#: a flow list of names (``after: [a, b]``), the common flow: strings, read here
_NAMES = re.compile(r"\[([A-Za-z_][\w.-]*(?:, [A-Za-z_][\w.-]*)*)?\]")
_DQ = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SQ = re.compile(r"'((?:[^']|'')*)'")
_TAIL = re.compile(r"(?:[ ]+#.*)?[ ]*")
_LITERAL = re.compile(r"\|([+-]?)(?:[ ]+#.*)?[ ]*")
# Characters that YAML refuses, or that YAML 1.1 (libyaml) reads as line breaks (NEL
# \x85, and the line and paragraph separators U+2028 and U+2029).
AVOID = re.compile("[^\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                   "\U00010000-\U0010ffff]")


_MISS = object()
#: how a value that is not a plain scalar starts (an empty one is a block below)
_NOT_PLAIN = frozenset("[{\"'|#")


def parse_fast(text: str, *, lines: bool = True) -> Document:
    """The document in ``text``. Without ``lines``, the keys' lines are not kept while
    reading (a big file reads faster): the Document reads the text again for them when
    one is asked for."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if AVOID.search(text):
        raise Unsupported
    doc = _Parser(text, lines).document()
    if not lines:
        doc.lines_from = lambda: parse_fast(text)
    return doc


class _Flow:
    """A flow collection waiting for :func:`read_flows`, and where its value goes."""

    __slots__ = ("key", "parent", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parent: Any = None
        self.key: Any = None


def _key(m: re.Match[str]) -> str:
    dq, sq, plain = m.groups()
    if plain is not None:
        return plain
    return read_double_quoted(dq) if dq is not None else sq.replace("''", "'")


def _is_entry(body: str) -> bool:
    return body == "-" or body.startswith("- ")


class _Parser:
    def __init__(self, text: str, keep_lines: bool = True) -> None:
        #: whether mappings record their keys' lines (sequences always do: they are rare)
        self.keep_lines = keep_lines
        self.lines = text.split("\n")
        self.newline_at_end = self.lines[-1] == ""
        if self.newline_at_end:
            self.lines.pop()
        self.tabs = "\t" in text
        self.i = 0
        self.positions: Positions = {}
        self.flows: list[_Flow] = []
        #: one string per key, and the value of each plain scalar seen (they repeat: a
        #: file of a million tasks names a few keys and functions a million times)
        self.keys: dict[str, str] = {}
        self.plain: dict[str, Any] = {}
        #: how deeply the block collections being read nest, and the most they did
        self.level = self.deepest = 0
        #: 1 when a flow list of names was read (without a _Flow)
        self.lists = 0

    def document(self) -> Document:
        indent = self.skip()
        if indent < 0 or self.lines[self.i].startswith(("---", "...", "%")):
            raise Unsupported
        root_line = self.i + 1
        data = self.block(indent)
        if self.skip() >= 0:
            raise Unsupported
        for flow, value in zip(self.flows, read_flows([f.text for f in self.flows]),
                               strict=True):
            flow.parent[flow.key] = value
        flows = max((f.text.count("[") + f.text.count("{") for f in self.flows), default=0)
        # At most: the deepest block, and in it the most brackets of any flow (or a list).
        depth = self.deepest + max(flows, self.lists)
        return Document(data, self.positions, root_line, depth)

    def skip(self) -> int:
        """Move to the next line with content; return its indentation, or -1 at the end."""
        lines, i, n = self.lines, self.i, len(self.lines)
        while i < n:
            line = lines[i]
            body = line.lstrip(" ")
            if body and body[0] != "#":
                if self.tabs and "\t" in line:
                    raise Unsupported
                self.i = i
                return len(line) - len(body)
            i += 1
        self.i = i
        return -1

    def block(self, indent: int) -> Any:
        if _is_entry(self.lines[self.i][indent:]):
            return self.sequence(indent)
        return self.mapping(indent)

    def mapping(self, indent: int) -> dict[str, Any]:
        self.level += 1
        self.deepest = max(self.deepest, self.level)
        out: dict[str, Any] = {}
        where: dict[str, int] | None = {} if self.keep_lines else None
        lines, n, tabs, keys, plain = self.lines, len(self.lines), self.tabs, self.keys, self.plain
        i = self.i
        while True:  # one key a turn; the loop in skip() and value()'s plain case inlined
            m = _ENTRY.match(lines[i]) if i < n else None
            if m and m.end(1) == indent and not (tabs and "\t" in lines[i]):
                key, rest = m.group(2, 3)  # "key: rest" where it belongs: most lines
                key = keys.setdefault(key, key)
            elif m and m.end(1) < indent:
                break  # the next key of a mapping this one is in
            else:
                while i < n:
                    line = lines[i]
                    body = line.lstrip(" ")
                    if body and body[0] != "#":
                        break
                    i += 1
                else:
                    break
                found = len(line) - len(body)
                if found < indent:
                    break
                if found > indent or (tabs and "\t" in line):
                    raise Unsupported
                m = _KEY.match(line, indent)
                if not m or (indent == 0 and line[:3] in ("---", "...")):
                    raise Unsupported
                key, rest = _key(m), line[m.end():]
            if key in out:
                raise Unsupported
            if where is not None:
                where[key] = i + 1
            i += 1
            value = plain.get(rest, _MISS)
            if value is _MISS and rest[:1] == "[" and (f := _NAMES.fullmatch(rest)):
                value = f.group(1).split(", ") if f.group(1) else []  # [a, b]: no JSON
                self.lists = 1
                if not CONST.keys().isdisjoint(value):
                    value = _MISS
            if not rest and i < n and (m := _ENTRY.match(lines[i])) and m.end(1) > indent:
                self.i = i  # a mapping below, its first line a "key: rest" (a task)
                value = out[key] = self.mapping(m.end(1))
                i = self.i
                continue
            if value is _MISS:
                self.i = i
                value = self.value(rest, indent, True)
                i = self.i
                if value.__class__ is _Flow:
                    value.parent, value.key = out, key
                elif rest and rest[0] not in _NOT_PLAIN:
                    plain[rest] = value
            out[key] = value
        self.i = i
        if where is not None:
            self.positions[id(out)] = where
        self.level -= 1
        return out

    def sequence(self, indent: int) -> list[Any]:
        self.level += 1
        self.deepest = max(self.deepest, self.level)
        out: list[Any] = []
        lines: list[int] = []
        while (found := self.skip()) >= indent:
            line = self.lines[self.i]
            if found > indent:
                raise Unsupported
            if not _is_entry(line[indent:]):
                break  # the next key of the mapping whose value this sequence is
            lines.append(self.i + 1)
            rest = line[indent + 1:].lstrip(" ")
            if rest and (_is_entry(rest) or _KEY.match(rest)):
                column = len(line) - len(rest)  # a compact nested collection: "- key: v"
                self.lines[self.i] = " " * column + rest
                out.append(self.block(column))
                continue
            self.i += 1
            if (not rest or rest[0] == "#") and self.skip() > indent:
                lines[-1] = self.i + 1  # the item is the block that starts there
            value = self.value(rest, indent, False)
            if value.__class__ is _Flow:
                value.parent, value.key = out, len(out)
            out.append(value)
        self.positions[id(out)] = lines
        self.level -= 1
        return out

    def value(self, rest: str, indent: int, in_mapping: bool) -> Any:
        """The value that starts with ``rest``, in a collection at ``indent``."""
        if not rest or rest[0] == "#":
            found = self.skip()
            if found > indent:
                return self.block(found)
            if found == indent and in_mapping and _is_entry(self.lines[self.i][indent:]):
                return self.sequence(indent)
            return None
        c = rest[0]
        if c in "[{":
            if "#" in rest:
                end = LEX.match(rest).end()  # type: ignore[union-attr]
                if not _TAIL.fullmatch(rest, end):
                    raise Unsupported
                rest = rest[:end]
            flow = _Flow(rest.rstrip(" "))
            self.flows.append(flow)
            return flow
        if c in "\"'":
            m = (_DQ if c == '"' else _SQ).match(rest)
            if not m or not _TAIL.fullmatch(rest, m.end()):
                raise Unsupported
            return read_double_quoted(m.group(1)) if c == '"' else m.group(1).replace("''", "'")
        if c == "|":
            m = _LITERAL.fullmatch(rest)
            if not m:
                raise Unsupported
            return self.literal(indent, m.group(1))
        if c in "?:,]}#&*!>%@`" or (c == "-" and rest[1:2] in ("", " ")):
            raise Unsupported
        cut = rest.find(" #")
        text = (rest if cut < 0 else rest[:cut]).rstrip(" ")
        if ": " in text or text.endswith(":"):
            raise Unsupported
        try:
            return resolve_plain(text)
        except ValueError:  # the complete reader says what is wrong, and where
            raise Unsupported from None

    def literal(self, indent: int, chomp: str) -> str:
        """A ``|`` block scalar whose header ended the previous line."""
        lines, n, i = self.lines, len(self.lines), self.i
        while i < n and not lines[i].strip(" "):
            i += 1
        column = len(lines[i]) - len(lines[i].lstrip(" ")) if i < n else 0
        if column <= indent:
            if chomp == "+":
                raise Unsupported
            return ""
        content: list[str] = []
        i = self.i
        while i < n:
            line = lines[i]
            if not line.strip(" "):
                if len(line) > column:
                    raise Unsupported
                content.append("")
            elif len(line) - len(line.lstrip(" ")) >= column:
                content.append(line[column:])
            else:
                break
            i += 1
        if i == n and not self.newline_at_end:
            raise Unsupported
        self.i = i
        body = len(content)
        while content[body - 1] == "":
            body -= 1
        text = "\n".join(content[:body])
        if chomp == "-":
            return text
        return text + "\n" * (len(content) - body + 1 if chomp == "+" else 1)
