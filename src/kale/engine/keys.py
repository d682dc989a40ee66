"""Result reuse: a task's cache key covers its definition and everything it receives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kale.model.refs import iter_refs
from kale.model.workflow import Task


def cache_key(task: Task, definition: str, upstream: Sequence[str],
              result_hashes: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """Same key <=> same definition, same upstream results, same workflow parameters used.

    ``result_hashes`` holds, per upstream task, its own cache key and its result's hash: a
    task whose upstream ran again with a changed definition runs again too, even when that
    upstream's result (say, None for a shell command) looks the same.

    ``definition`` is :meth:`Task.definition_hash`, computed once when the run is created.
    Python tasks may take any workflow parameter by argument name, so all of them count;
    shell and notebook tasks see only the parameters they reference."""
    if task.kind == "python":
        used = dict(params)
    else:
        refs = [r for r in iter_refs(task.parameters) if r.is_param]
        used = (dict(params) if any(r.key is None for r in refs)  # ${params}: all of them
                else {r.key: params.get(r.key) for r in refs if r.key is not None})
    h = hashlib.sha256(definition.encode())
    h.update(json.dumps([[d, result_hashes.get(d, "")] for d in sorted(upstream)]).encode())
    h.update(json.dumps(used, sort_keys=True, default=repr).encode())
    return h.hexdigest()[:32]
