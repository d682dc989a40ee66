"""The complete YAML reader: libyaml (through PyYAML) composes a node tree, which is walked
here into plain data with YAML 1.2 core-schema scalars, refusing duplicate keys. Every
error becomes a :class:`~kale.errors.Problem` with a line number."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kale.errors import Problem, ValidationError
from kale.spec.document import Document, Positions
from kale.spec.scalars import TAG, resolve_plain, resolve_tagged

_PLAIN = "kale:plain"  # an untagged plain scalar, resolved by :func:`resolve_plain`
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """Leaves scalar resolution to this module (YAML 1.2, not PyYAML's 1.1)."""

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else TAG + "str"
        return TAG + ("map" if kind is MappingNode else "seq")


def parse_full(text: str, file: str | None = None) -> Document:
    """Parse any YAML text; raise ValidationError (with lines) for what is not valid."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        raise ValidationError([_syntax_problem(e, file)]) from None
    except yaml.YAMLError as e:  # a ReaderError: a character YAML does not allow
        line = text.count("\n", 0, getattr(e, "position", 0)) + 1
        char = getattr(e, "character", None)
        what = f"character {_char(char)} is not allowed in YAML" if char is not None else str(e)
        raise ValidationError([Problem(f"YAML syntax error: {what}", (), file, line)]) from None
    if root is None:
        return Document(None)
    limit = _BUDGET + 10 * len(text)
    walker = _Walker(budget=limit)
    try:
        data = walker.walk(root, ())
    except RecursionError:
        walker.problem("nested too deeply", (), root)
    except _TooBig as e:
        walker.problem(f"aliases expand this document to more than {limit:,} values "
                       "(a 'billion laughs' file?); refused", (), e.node)
    if walker.problems:
        raise ValidationError([Problem(m, p, file, line) for m, p, line in walker.problems])
    return Document(data, walker.positions, root.start_mark.line + 1)


def _syntax_problem(e: yaml.MarkedYAMLError, file: str | None) -> Problem:
    mark, what = e.problem_mark or e.context_mark, e.problem or "invalid YAML"
    if e.context:
        started = e.context_mark
        if started is not None and mark is not None and started.line != mark.line:
            what += f" ({e.context} that starts on line {started.line + 1})"
        else:
            what += f" ({e.context})"
    return Problem(f"YAML syntax error: {what}", (), file, mark.line + 1 if mark else None)


def _char(char: Any) -> str:
    code = char if isinstance(char, int) else ord(char)
    return f"U+{code:04X}"


#: values a document may expand to (through aliases) beyond ten per character of its text
_BUDGET = 100_000


class _TooBig(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


class _Walker:
    def __init__(self, budget: int) -> None:
        self.budget = budget  # values left to walk: aliases are walked once per use
        self.positions: Positions = {}
        self.problems: list[tuple[str, tuple[str | int, ...], int]] = []
        self.active: set[int] = set()  # collections being walked, to catch recursive aliases

    def problem(self, message: str, path: tuple[str | int, ...], node: Node) -> None:
        self.problems.append((message, path, node.start_mark.line + 1))

    def walk(self, node: Node, path: tuple[str | int, ...]) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooBig(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            return self.problem("an alias refers to a collection that contains it", path, node)
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            assert isinstance(node, SequenceNode)
            if node.tag != TAG + "seq":
                self.problem(f"unsupported tag {node.tag!r}", path, node)
            lines = [item.start_mark.line + 1 for item in node.value]
            items = [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
            self.positions[id(items)] = lines
            return items
        finally:
            self.active.discard(id(node))

    def mapping(self, node: MappingNode, path: tuple[str | int, ...]) -> dict[str, Any]:
        if node.tag != TAG + "map":
            self.problem(f"unsupported tag {node.tag!r}", path, node)
        out: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for knode, vnode in node.value:
            line = knode.start_mark.line + 1
            if not isinstance(knode, ScalarNode):
                self.problem("mapping keys must be plain names, not collections", path, knode)
                continue
            key = knode.value
            if key in lines:
                self.problem(f"duplicate key {key!r} (first at line {lines[key]})",
                             (*path, key), knode)
                continue
            lines[key] = line
            out[key] = self.walk(vnode, (*path, key))
        self.positions[id(out)] = lines
        return out

    def scalar(self, node: ScalarNode, path: tuple[str | int, ...]) -> Any:
        try:
            if node.tag == _PLAIN:
                return resolve_plain(node.value)
            return resolve_tagged(node.tag, node.value)
        except ValueError as e:
            self.problem(str(e), path, node)
            return None
