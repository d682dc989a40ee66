"""The engine layer: drives a run through the store's state machine."""

from kale.engine.engine import Engine

__all__ = ["Engine"]
