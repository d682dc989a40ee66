"""The YAML side of workflows: read (with line numbers in every error), write, and the
JSON Schema of the format."""

from kale.spec.dumper import dump_yaml
from kale.spec.loader import load_workflow, load_yaml_text
from kale.spec.schema import schema

__all__ = ["dump_yaml", "load_workflow", "load_yaml_text", "schema"]
