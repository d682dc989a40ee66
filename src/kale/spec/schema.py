"""The JSON Schema (draft 2020-12) of the workflow YAML format.

``workflow.schema.json`` describes Kale's own task kinds and schedulers (a test checks it
against the registries). :func:`schema` adds those installed as plug-ins (the
``kale.task_kinds`` and ``kale.schedulers`` registries, :mod:`kale.plugins`), so the schema
an editor is given accepts what this installation runs; a plug-in kind's value is whatever
its runner takes."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from kale import plugins


def schema() -> dict[str, Any]:
    """The schema: the packaged ``workflow.schema.json`` with the plug-ins' kinds and
    schedulers added (a fresh copy each call)."""
    text = files("kale.spec").joinpath("workflow.schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    _add_plugins(data)
    return data


def _add_plugins(data: dict[str, Any]) -> None:
    defs = data["$defs"]
    task = defs["task"]
    for name, entry in plugins.entries(plugins.TASK_KINDS).items():
        if entry.builtin or name in task["properties"]:
            continue
        task["oneOf"].append({"required": [name]})
        task["properties"][name] = {
            "description": f"A task of kind {name!r} (a plug-in: {entry.value}, from "
                           f"{entry.source}); what it runs, as its runner takes it."}
    batch = [n for group in (plugins.SCHEDULERS, plugins.ENGINES)
             for n, e in plugins.entries(group).items() if not e.builtin]
    for option in defs["executor"]["oneOf"]:  # the name, and a mapping's kind
        enum = option.get("enum", option.get("properties", {}).get("kind", {}).get("enum"))
        if enum is not None:
            enum += [n for n in batch if n not in enum]
