"""The registries of names: which task kinds (``kale.task_kinds``), which batch
schedulers (``kale.schedulers``) and which file transfers (``kale.transfers``) exist.
They are the only lists of those names: Kale's own kinds, schedulers and transfers are
entry points of Kale's distribution (``pyproject.toml``), listed
exactly as a plug-in package's are, so a kind or a scheduler installed as a plug-in is
known everywhere a built-in is (validation, the JSON Schema, ``kale queue``, the
dashboard).

This module gives names and the ``module:attribute`` each points to; importing that
(:func:`load`) is for :mod:`kale.tasks.registry`, :mod:`kale.batch.schedulers` and
:mod:`kale.transfers.registry`, so the model and the spec layer check names without
importing the layers below them.

Invariants: a group is read once per process (installing a plug-in takes a new process).
Kale's own names come first, then the plug-ins' in name order. A built-in name wins a
clash (a plug-in entry of the same name is ignored, and logged). A name is a lower-case
identifier of at most :data:`MAX_NAME` characters (it is stored with every task, and names
directories); entries that are not are ignored, and logged. Standard library only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any

from kale.errors import KaleError

#: the entry-point group of task kinds: ``name = "module:TaskRunnerSubclass"``
TASK_KINDS = "kale.task_kinds"
#: the entry-point group of batch schedulers: ``name = "module:SchedulerSubclass"``
SCHEDULERS = "kale.schedulers"
#: the entry-point group of file transfers between sites: ``name = "module:TransferSubclass"``
TRANSFERS = "kale.transfers"
#: the entry-point group of workflow engines tasks may run on: ``name = "module:Executor"``
ENGINES = "kale.engines"
MAX_NAME = 16
NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: How messages list Kale's own names (the most used first). Only an order: the names
#: themselves come from the entry points, and one missing here still works, listed after.
_ORDER = ("shell", "python", "notebook", "slurm", "pbs", "lsf", "flux", "cobalt", "dask",
          "parsl")
#: a module inside Kale's package is Kale's own (built in), whoever installed it
_OWN = "kale."

log = logging.getLogger("kale.plugins")


@dataclass(frozen=True, slots=True)
class Entry:
    """One registered name: what it points to, and which distribution registered it."""

    name: str
    value: str          # "module:attribute"
    source: str         # the distribution's name
    builtin: bool       # registered by Kale itself

    def __str__(self) -> str:
        return f"{self.name} = {self.value} (from {self.source})"


@cache
def _installed() -> Any:
    """Every installed distribution's entry points, read once (one pass over them all
    serves both groups)."""
    from importlib.metadata import entry_points

    return entry_points()


@cache
def entries(group: str) -> dict[str, Entry]:
    """The group's names, in listing order (built-ins first), each with its entry.
    Raises :class:`KaleError` when Kale's own entries are missing (Kale is not installed
    as a package, or its metadata predates the group)."""
    found: list[Entry] = []
    for ep in _installed().select(group=group):
        dist = getattr(ep, "dist", None)
        source = str(getattr(dist, "name", None) or "unknown distribution")
        entry = Entry(ep.name, ep.value, source, ep.value.startswith(_OWN))
        if not NAME.fullmatch(entry.name) or len(entry.name) > MAX_NAME:
            log.warning("ignored %s: a name is a lower-case identifier of at most %d "
                        "characters", entry, MAX_NAME)
            continue
        found.append(entry)
    if not any(e.builtin for e in found):
        raise KaleError(f"Kale's own {group!r} entry points are missing: Kale is not "
                        "installed as a package, or its metadata is out of date; install "
                        "it (pip install -e . in a source tree)")
    rank = {n: i for i, n in enumerate(_ORDER)}
    found.sort(key=lambda e: (not e.builtin, rank.get(e.name, len(rank)), e.name))
    out: dict[str, Entry] = {}
    for e in found:
        if e.name in out:
            log.warning("ignored %s: %r is already %s", e, e.name, out[e.name])
            continue
        out[e.name] = e
    return out


def names(group: str) -> tuple[str, ...]:
    """The group's names, built-ins first."""
    return tuple(entries(group))


def builtins(group: str) -> tuple[str, ...]:
    """The names Kale itself registers in the group."""
    return tuple(n for n, e in entries(group).items() if e.builtin)


def load(entry: Entry) -> Any:
    """Import what ``entry`` points to. Raises :class:`KaleError` naming the plug-in and
    its distribution when it cannot be imported."""
    module, _, attr = entry.value.partition(":")
    try:
        obj: Any = import_module(module.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
    except Exception as e:  # a broken plug-in: say which, not a traceback
        raise KaleError(f"cannot load {entry}: {type(e).__name__}: {e}") from e
    return obj
