"""The JSON Schema (draft 2020-12) of the workflow YAML format."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any


def schema() -> dict[str, Any]:
    """The schema, read from the packaged ``workflow.schema.json`` (a fresh copy each call)."""
    text = files("kale.spec").joinpath("workflow.schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
