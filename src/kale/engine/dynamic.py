"""The driver's side of maps and conditions (:mod:`kale.model.dynamic` says what they
mean): the values a map goes over, read from upstream results and the files upstream
tasks left; each member's task, cache key and stored row; a map's result.

A member's cache key is its map's key without the tasks it maps over, plus its own
element: so when one file is added to what a map goes over, only that file's member runs
again; the others find their earlier results (by element, whatever their index now).
An element that is a path inside the run's directory counts by its path there and its
content, never by the run it was made in.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kale import serial
from kale.model.dynamic import member_name, zip_elements
from kale.model.refs import MissingResult, Ref, iter_refs, resolve
from kale.model.workflow import Task
from kale.store import results


class Files:
    """``${task.files('glob')}``: the sorted files matching the glob in that task's
    directory: in this run, or in the run whose result it reused (``reused``: task ->
    that run's directory)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.reused: dict[str, Path] = {}

    def __call__(self, ref: Ref) -> list[str]:
        pattern = ref.files
        assert pattern is not None
        root = self.reused.get(ref.task, self.run_dir) / ref.task
        if not root.is_dir():
            raise MissingResult(f"task {ref.task!r} left no directory to look for "
                                f"{pattern!r} in")
        return [str(p) for p in sorted(root.glob(pattern)) if p.is_file()]


def bindings(task: Task, value: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """One binding (parameter -> element) per member of a map. Raises MissingResult or
    ValueError saying what is missing or wrong."""
    assert task.map is not None
    return zip_elements(task.name, {k: value(v) for k, v in task.map.items()})


def map_sources(task: Task) -> set[str]:
    """The tasks a map reaches only through what it maps over (not through its
    parameters, command or ``after``): their results are not part of a member's key."""
    assert task.map is not None
    through_map = {r.task for v in task.map.values() for r in iter_refs(v) if not r.is_param}
    other = {r.task for r in Task.refs(dataclasses.replace(task, map=None))} | set(task.after)
    return through_map - other


def map_only_params(task: Task) -> set[str]:
    """The workflow parameters a map reaches only through what it maps over: not part of
    a member's key, and not given to it (a Python function cannot take them by name)."""
    assert task.map is not None
    through_map = {r.key for v in task.map.values() for r in iter_refs(v)
                   if r.is_param and r.key is not None}
    other = {r.key for r in Task.refs(dataclasses.replace(task, map=None)) if r.is_param}
    return {k for k in through_map - other if k is not None}


def member_key(base: str, binding: Mapping[str, Any], run_dir: Path) -> str:
    """A member's cache key: its map's (``base``) and its element."""
    h = hashlib.sha256(base.encode())
    for name in sorted(binding):
        h.update(json.dumps([name, element_digest(binding[name], run_dir)]).encode())
    return h.hexdigest()[:32]


def nth_key(key: str, occurrence: int) -> str:
    """The key of the ``occurrence``-th member (from 0) whose element equals others' (of
    :func:`member_key` ``key``): replicas of a random draw each reuse their own result,
    never one another's; the first keeps ``key``."""
    if not occurrence:
        return key
    return hashlib.sha256(f"{key}#{occurrence}".encode()).hexdigest()[:32]


def element_digest(value: Any, run_dir: Path) -> str:
    """What an element is, for reuse: a path inside a run's directory (this run's, or
    one beside it whose result was reused) by where it is in that run and its content;
    any other value by its JSON (else its pickle)."""
    runs = run_dir.parent
    if isinstance(value, str) and value.startswith(f"{runs}/"):
        path = Path(value)
        if path.is_file():
            inside = Path(*path.relative_to(runs).parts[1:])
            return f"file:{inside}:{results.content_hash(value)}"
    text = results.as_json(value)
    if text is not None:
        return "json:" + hashlib.sha256(text.encode()).hexdigest()
    return "pickle:" + hashlib.sha256(serial.dumps(value)).hexdigest()


def member(task: Task, index: int, binding: Mapping[str, Any]) -> Task:
    """The task a map runs for one element."""
    return dataclasses.replace(task, name=member_name(task.name, index),
                               parameters={**task.parameters, **binding}, map=None, when=None)


def encode_binding(binding: Mapping[str, Any]) -> dict[str, Any]:
    """A member's binding as its stored row keeps it (JSON, else pickled)."""
    text = results.as_json(dict(binding))
    if text is not None:
        return {"json": dict(binding)}
    return {"pickle": base64.b64encode(serial.dumps(dict(binding))).decode()}


def decode_binding(stored: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    if "json" in stored:
        return dict(stored["json"])
    value = serial.loads(base64.b64decode(stored["pickle"]), base_dir)
    assert isinstance(value, dict)
    return value


def gathered_hash(ids: Sequence[str]) -> str:
    """A map's result hash: its members' (their content, not where they are)."""
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()[:32]


def resolver(results_: Mapping[str, Any], params: Mapping[str, Any],
             files: Files) -> Callable[[Any], Any]:
    """A value of ``map`` or a reference of ``when``, resolved."""
    return lambda value: resolve(value, results_, params, files)
