"""References from one task's parameters to another task's result (or a workflow parameter).

Textual form, the same in Python and YAML::

    ${analyse}          the whole result of task ``analyse``
    ${analyse.mean}     key ``mean`` of that result (everything after the first dot)
    ${params.n}         workflow parameter ``n``

In Python, ``analyse["mean"]`` and ``analyse.result`` build the same references.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

PARAMS = "params"
_REF = re.compile(r"^\$\{\s*([A-Za-z_][\w-]*)(?:\.([^}]+?))?\s*\}$")


@dataclass(frozen=True)
class Ref:
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


class MissingResult(LookupError):
    pass


def resolve(value: Any, results: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    """Replace references by the values they point to."""
    if isinstance(value, Ref):
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
        try:
            return result[value.key]
        except (KeyError, TypeError, IndexError):
            raise MissingResult(
                f"result of task {value.task!r} has no key {value.key!r}"
                + (f" (it has: {', '.join(map(str, result))})" if isinstance(result, dict) else "")
            ) from None
    if isinstance(value, list | tuple):
        return [resolve(v, results, params) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, results, params) for k, v in value.items()}
    return value
