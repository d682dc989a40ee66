"""The YAML side of workflows: read (with line numbers in every error), write, and the
JSON Schema of the format.

The names below are imported when first used (PEP 562): a command that never reads a
workflow (``kale status``) does not pay for the readers and the model (~50 ms)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kale._lazy import lazy_getattr

if TYPE_CHECKING:
    from kale.spec.dumper import dump_yaml
    from kale.spec.loader import load_workflow, load_yaml_text
    from kale.spec.schema import schema

__all__ = ["dump_yaml", "load_workflow", "load_yaml_text", "schema"]

_WHERE = {"dump_yaml": "kale.spec.dumper", "load_workflow": "kale.spec.loader",
          "load_yaml_text": "kale.spec.loader", "schema": "kale.spec.schema"}


__getattr__ = lazy_getattr(globals(), _WHERE)
