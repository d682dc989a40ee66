"""The YAML side of workflows: read (with line numbers in every error), write, and the
JSON Schema of the format.

The names below are imported when first used (PEP 562): a command that never reads a
workflow (``kale status``) does not pay for the readers and the model (~50 ms)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kale.spec.dumper import dump_yaml
    from kale.spec.loader import load_workflow, load_yaml_text
    from kale.spec.schema import schema

__all__ = ["dump_yaml", "load_workflow", "load_yaml_text", "schema"]

_WHERE = {"dump_yaml": "kale.spec.dumper", "load_workflow": "kale.spec.loader",
          "load_yaml_text": "kale.spec.loader", "schema": "kale.spec.schema"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kale.spec' has no attribute {name!r}")
