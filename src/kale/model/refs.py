"""References from one task's parameters to another task's result (or a workflow parameter).

Textual form, the same in Python and YAML::

    ${analyse}          the whole result of task ``analyse``
    ${analyse.mean}     key ``mean`` of that result (everything after the first dot)
    ${params.n}         workflow parameter ``n``

In Python, ``analyse["mean"]`` and ``analyse.result`` build the same references.

A parameter value is a reference when it is one whole ``${...}`` string. In a shell
command (a command line, or an argument of an argv list), ``${task.key}`` and
``${params.name}`` anywhere in the text are references: the dot tells them from the
shell's own ``${VAR}``, and a shell variable name never has one. (``${task}`` and
``${params}`` there are shell variables.) See :mod:`kale.tasks.shell` for how their values
reach the command without being pasted into shell text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kale.model.sealed import Sealed

PARAMS = "params"
_FILES = re.compile(r"^files\((['\"])(.*)\1\)$", re.S)
#: a task's name in a reference: a declared task's, or one a run added as it ran (a map's
#: member ``analyse[3]``, a task another added ``plan[refine]``)
_NAME = r"[A-Za-z_][\w-]*(?:\[[\w-]+\])*"
_REF = re.compile(r"^\$\{\s*(" + _NAME + r")(?:\.([^}]+?))?\s*\}$")
#: a reference inside command text: always ``${name.key}``
_TEXT_REF = re.compile(r"\$\{\s*(" + _NAME + r")\.([^}\s]+)\s*\}")


@dataclass(frozen=True)
class Ref:
    """A reference to a task's result (``key`` None: all of it; else what follows the first
    dot), or to a workflow parameter (``task == "params"``). Immutable and hashable;
    ``str(ref)`` is its ``${...}`` text, and :meth:`parse` reads that text back to an equal
    ``Ref``."""

    task: str
    key: str | None = None

    def __str__(self) -> str:
        return "${" + self.task + ("." + self.key if self.key is not None else "") + "}"

    @classmethod
    def parse(cls, text: str) -> Ref | None:
        m = _REF.match(text)
        return cls(m.group(1), m.group(2)) if m else None

    @property
    def is_param(self) -> bool:
        return self.task == PARAMS

    @property
    def files(self) -> str | None:
        """The glob of a files reference (``${task.files('runs/*.h5')}``: the files that
        task left, relative to its directory), else None."""
        if self.key is None or self.task == PARAMS:
            return None
        m = _FILES.match(self.key)
        return m.group(2) if m else None


def to_refs(value: Any) -> Any:
    """Turn ``${...}`` strings anywhere inside ``value`` into :class:`Ref` objects."""
    if isinstance(value, str):
        return Ref.parse(value) or value
    if isinstance(value, list):
        return [to_refs(v) for v in value]
    if isinstance(value, dict):
        return {k: to_refs(v) for k, v in value.items()}
    return value


def to_text(value: Any) -> Any:
    """Inverse of :func:`to_refs`: references back to their ``${...}`` strings."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, list | tuple):
        return [to_text(v) for v in value]
    if isinstance(value, dict):
        return {k: to_text(v) for k, v in value.items()}
    return value


def iter_refs(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_refs(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_refs(v)


# -- references in shell commands ---------------------------------------------------------


def text_refs(text: str) -> list[tuple[int, int, Ref]]:
    """The references in a command's text, with where each starts and ends."""
    if "${" not in text:
        return []
    return [(m.start(), m.end(), Ref(m.group(1), m.group(2))) for m in _TEXT_REF.finditer(text)]


def command_refs(command: object) -> Iterator[tuple[int | None, Ref]]:
    """The references in a shell task's command (a string, or an argv list), each with
    the index of the argument it is in (None for a command line)."""
    if isinstance(command, str):
        for _, _, ref in text_refs(command):
            yield None, ref
    elif isinstance(command, list | tuple):
        for i, arg in enumerate(command):
            if isinstance(arg, str):
                for _, _, ref in text_refs(arg):
                    yield i, ref


def substitute(text: str, value: Callable[[Ref], str]) -> str:
    """``text`` with every reference replaced by ``value(ref)``."""
    if "${" not in text:
        return text
    return _TEXT_REF.sub(lambda m: value(Ref(m.group(1), m.group(2))), text)


def single_quoted(text: str) -> list[tuple[int, int]] | None:
    """The spans of a command line that are inside single quotes, where the shell expands
    nothing; None when that cannot be told without a full shell parser (here-documents,
    command substitution, backquotes, an unterminated quote)."""
    if "'" not in text:
        return []
    if "<<" in text or "`" in text or "$(" in text:
        return None
    spans: list[tuple[int, int]] = []
    i, n, in_double, word_start = 0, len(text), False, True
    while i < n:
        c = text[i]
        if c == "\\":
            i, word_start = i + 2, False
            continue
        if in_double:
            in_double = c != '"'
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return None
            spans.append((i + 1, end))
            i, word_start = end + 1, False
            continue
        elif c == '"':
            in_double = True
        elif c == "#" and word_start:  # a comment, to the end of the line
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        word_start = not in_double and c in " \t\n;&|()<>"
        i += 1
    return None if in_double else spans


class MissingResult(LookupError):
    """A reference cannot be resolved: the task has no result, the result has no such key, or
    the workflow parameter is not set. The task that needs it fails with this message."""

    pass


def resolve(value: Any, results: Mapping[str, Any], params: Mapping[str, Any],
            files: Callable[[Ref], Any] | None = None) -> Any:
    """Replace references by the values they point to (``files`` gives a files
    reference's list of paths)."""
    if isinstance(value, Ref):
        if files is not None and value.files is not None:
            return files(value)
        if value.is_param:
            if value.key is None:
                return dict(params)
            if value.key not in params:
                raise MissingResult(f"workflow parameter {value.key!r} is not set")
            return params[value.key]
        if value.task not in results:
            raise MissingResult(f"task {value.task!r} has no result")
        result = results[value.task]
        if value.key is None:
            return result
        if isinstance(result, Sealed):  # a result only its owner's processes open
            return result.item(value.key, value.task)
        try:
            return result[value.key]
        except (KeyError, TypeError, IndexError):
            raise MissingResult(
                f"result of task {value.task!r} has no key {value.key!r}"
                + (f" (it has: {', '.join(map(str, result))})" if isinstance(result, dict) else "")
            ) from None
    if isinstance(value, list | tuple):
        return [resolve(v, results, params, files) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, results, params, files) for k, v in value.items()}
    return value
