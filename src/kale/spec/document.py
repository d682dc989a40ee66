"""A parsed YAML document: plain data plus the line of every mapping key and list item."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kale.errors import Problem

#: ``id(container) -> {key: line}`` for dicts, ``[line, ...]`` for lists (lines 1-based).
Positions = dict[int, dict[str, int] | list[int]]


@dataclass
class Document:
    """``data`` is built from plain dicts, lists and scalars. ``positions`` is keyed by the
    ``id`` of each container inside ``data``, so it stays valid while ``data`` is alive and
    its containers are not replaced."""

    data: Any
    positions: Positions = field(default_factory=dict)
    root_line: int = 1
    #: no less than how deeply collections nest in ``data`` (a bound the reader worked
    #: out as it read), or None: not known
    depth: int | None = None
    #: for a reader that keeps no lines: reads the text again into a Document that has
    #: them (called once, when a line is first asked for)
    lines_from: Callable[[], Document] | None = field(default=None, repr=False)
    _where: Document | None = field(default=None, repr=False)

    def line(self, path: tuple[str | int, ...]) -> int:
        """Line of the key (or list item) at ``path``, else of its nearest located parent."""
        if self.lines_from is not None:
            if self._where is None:
                self._where = self.lines_from()
            return self._where.line(path)
        line, node = self.root_line, self.data
        for part in path:
            found = _line_at(self.positions.get(id(node)), part)
            if found is None:
                break
            line, node = found, node[part]
        return line

    def locate(self, problems: list[Problem], file: str | None) -> list[Problem]:
        """The problems with ``file`` and ``line`` filled in."""
        return [replace(p, file=file, line=p.line or self.line(p.path)) for p in problems]


def _line_at(where: dict[str, int] | list[int] | None, part: str | int) -> int | None:
    if isinstance(where, dict):
        return where.get(part) if isinstance(part, str) else None
    if isinstance(where, list) and isinstance(part, int) and 0 <= part < len(where):
        return where[part]
    return None
