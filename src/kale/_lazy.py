"""Names of a package imported when first used (PEP 562), for the packages whose
``__init__`` must stay cheap (``kale.model``, ``kale.spec``). Standard library only: this
module is imported by every process that touches those packages."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(namespace: dict[str, Any], where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the package whose globals are ``namespace``: a name of
    ``where`` (name -> module) is imported from its module on first use and kept in
    ``namespace``, so later lookups do not come back here; any other name is an
    :class:`AttributeError`, worded as Python words it."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        """The attribute ``name`` of the package, imported from its module."""
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module '{package}' has no attribute {name!r}")

    return __getattr__
