"""Per-scheduler adapters for what PSI/J does not do: listing the batch queue and the
partitions. :func:`scheduler` gives one by name; other packages add schedulers through
the ``kale.schedulers`` entry point (name = ``module:Class``)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from kale.errors import UsageError

if TYPE_CHECKING:
    from kale.batch.schedulers.base import Scheduler

GROUP = "kale.schedulers"
SCHEDULERS = ("slurm", "pbs", "lsf", "flux", "cobalt")

# name -> (module, class); imported only when asked for
_BUILTIN = {
    "slurm": ("kale.batch.schedulers.slurm", "SlurmScheduler"),
    "pbs": ("kale.batch.schedulers.pbs", "PbsScheduler"),
    "lsf": ("kale.batch.schedulers.lsf", "LsfScheduler"),
    "flux": ("kale.batch.schedulers.flux", "FluxScheduler"),
    "cobalt": ("kale.batch.schedulers.cobalt", "CobaltScheduler"),
}


def scheduler(name: str) -> Scheduler:
    """The adapter for scheduler ``name``: a built-in, else a ``kale.schedulers`` entry
    point. Raises :class:`UsageError`, naming the known schedulers, for any other name."""
    from kale.batch.schedulers.base import Scheduler

    if name in _BUILTIN:
        module, cls = _BUILTIN[name]
        made = getattr(importlib.import_module(module), cls)()
    else:
        found = {ep.name: ep for ep in entry_points(group=GROUP)}
        if name not in found:
            known = ", ".join([*SCHEDULERS, *sorted(set(found) - set(SCHEDULERS))])
            raise UsageError(f"unknown scheduler {name!r} (known: {known})")
        loaded = found[name].load()
        made = loaded() if isinstance(loaded, type) else loaded
    if not isinstance(made, Scheduler):
        raise UsageError(f"scheduler {name!r} does not give a kale Scheduler "
                         f"(got {type(made).__name__})")
    return made
