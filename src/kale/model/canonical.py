"""The JSON text of what a task computes from, for hashing (reuse keys, definitions,
result hashes): every mapping in its own order, since a task that iterates a dict sees
that order; only mappings of *names* (a definition's fields, parameters given by name, an
environment) have their keys sorted, since their order changes nothing a task sees."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any


def by_name(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """``mapping`` with its keys sorted (its values, mappings included, as they are)."""
    return dict(sorted(mapping.items(), key=lambda kv: str(kv[0])))


def canonical_json(value: Any, *, names: Collection[str] = (),
                   default: Callable[[Any], Any] | None = None) -> str:
    """JSON text of ``value``, every mapping in its own order except, when ``value`` is a
    mapping, its own keys and the keys of its items in ``names`` (sorted: mappings of
    names)."""
    if isinstance(value, Mapping):
        value = by_name({k: by_name(v) if k in names and isinstance(v, Mapping) else v
                         for k, v in value.items()})
    return json.dumps(value, default=default)
