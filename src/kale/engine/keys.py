"""Result reuse: what a task's cache key covers, and what a downstream task sees of an
upstream result.

A task reuses an earlier result only when all of these hold (see "Reuse" in the README):

* it is the *same task* (same name, in a run of the same workflow, of the same user): two
  replicas with identical definitions never share a result;
* same definition (:meth:`Task.definition_hash`: command, notebook file, the module of its
  function), same workflow parameters used, same upstream results (:func:`upstream_id`);
* the user code the earlier attempt actually ran (the modules it imported from outside the
  standard library and site-packages, recorded with the result) is unchanged on disk
  (checked by the engine with :mod:`kale.tasks.usercode`);
* the stored result, and the output files it names, still exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from kale.model.canonical import canonical_json
from kale.model.workflow import Task
from kale.store.results import NULL_HASH


def cache_key(task: Task, definition: str, upstream: Sequence[str],
              result_ids: Mapping[str, str], params: Mapping[str, Any],
              without: Collection[str] = (), *, seen: str | None = None) -> str:
    """Same key <=> same task, same definition, same upstream results, same workflow
    parameters used.

    ``result_ids`` holds, per upstream task, its :func:`upstream_id`. ``definition`` is
    :meth:`Task.definition_hash`, computed once when the run is created. ``seen`` is
    :func:`seen_params` of the task, if the caller has it (a run's Python tasks all see
    the same parameters: computed once per run, not per task)."""
    if seen is None:
        seen = seen_params(task, params, without)
    above = json.dumps([[d, result_ids.get(d, "")] for d in sorted(upstream)]) \
        if upstream else "[]"
    text = json.dumps([task.name, definition]) + above + seen
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def seen_params(task: Task, params: Mapping[str, Any], without: Collection[str] = ()) -> str:
    """The canonical text of the workflow parameters ``task`` sees, as its key covers
    them. Python tasks may take any workflow parameter by argument name, so all of them
    count; shell and notebook tasks see only the parameters they reference; ``without``:
    parameters the task never sees (a map's, see engine.dynamic)."""
    if task.kind == "python":
        used = dict(params)
    else:
        refs = [r for r in task.refs() if r.is_param]
        used = (dict(params) if any(r.key is None for r in refs)  # ${params}: all of them
                else {r.key: params.get(r.key) for r in refs if r.key is not None})
    for name in without:
        used.pop(name, None)
    return canonical_json(used, default=repr)  # a dict's order is an input


def upstream_id(key: str | None, result_hash: str | None,
                code: Mapping[str, str] | None = None) -> str:
    """What a downstream task's key sees of an upstream result: the result itself (its
    content hash; declared output files by their content), so an upstream that ran again
    and produced the same result leaves everything below it reusable. A task whose result
    says nothing (None: a command without declared outputs or records) may have worked
    through side effects, so then its own key counts, with the user ``code`` it ran (its
    manifest: the script a command names, the modules a function imported): when either
    changed, what is below runs again."""
    if result_hash is None or result_hash == NULL_HASH:
        if code:
            ran = hashlib.sha256(json.dumps(sorted(code.items())).encode()).hexdigest()[:16]
            return f"key:{key or ''}:{ran}"
        return f"key:{key or ''}"
    return f"result:{result_hash}"
