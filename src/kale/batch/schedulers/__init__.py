"""Per-scheduler adapters for what PSI/J does not do: listing the batch queue and the
partitions. :func:`scheduler` gives one by name. Schedulers are plug-ins: the
``kale.schedulers`` entry point maps a name to its adapter (``name = "module:Class"``, a
subclass of :class:`~kale.batch.schedulers.base.Scheduler`); Kale's own are registered the
same way, in its pyproject.toml, and :mod:`kale.plugins` lists the names (the only list of
them)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from kale import plugins
from kale.errors import UsageError

if TYPE_CHECKING:
    from kale.batch.schedulers.base import Scheduler

GROUP = plugins.SCHEDULERS


def names() -> tuple[str, ...]:
    """The registered schedulers, Kale's own first."""
    return plugins.names(GROUP)


def __getattr__(name: str) -> tuple[str, ...]:
    """``SCHEDULERS``: :func:`names`, read when first asked for (for older callers)."""
    if name == "SCHEDULERS":
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scheduler(name: str) -> Scheduler:
    """The adapter for scheduler ``name``. A name the registry did not have when this
    process read it is looked for again among the entry points (a plug-in installed since,
    under a long-running manager). Raises :class:`UsageError`, naming the known
    schedulers, for any other name, and when the entry point does not give a Scheduler."""
    from kale.batch.schedulers.base import Scheduler

    entry = plugins.entries(GROUP).get(name)
    if entry is not None:
        what, loaded = str(entry), plugins.load(entry)
    else:
        found = {ep.name: ep for ep in entry_points(group=GROUP)}
        if name not in found:
            known = ", ".join([*names(), *sorted(set(found) - set(names()))])
            raise UsageError(f"unknown scheduler {name!r} (known: {known})")
        what, loaded = repr(name), found[name].load()
    made = loaded() if isinstance(loaded, type) else loaded
    if not isinstance(made, Scheduler):
        raise UsageError(f"scheduler {what} does not give a kale Scheduler "
                         f"(got {type(made).__name__})")
    return made
