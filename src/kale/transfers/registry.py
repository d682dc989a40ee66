"""Transfers are plug-ins: the ``kale.transfers`` entry point maps a name to a
:class:`~kale.transfers.base.Transfer` subclass (``name = "module:TransferSubclass"``).
Kale's own ``rsync`` is registered the same way, in its pyproject.toml; :mod:`kale.plugins`
lists the names, and this module makes the transfer of one."""

from __future__ import annotations

from kale import plugins
from kale.errors import KaleError
from kale.transfers.base import Transfer

GROUP = plugins.TRANSFERS
DEFAULT = "rsync"


def names() -> tuple[str, ...]:
    """The registered transfers' names, Kale's own first."""
    return plugins.names(GROUP)


def get(name: str = DEFAULT) -> Transfer:
    """A new transfer of the one registered as ``name`` (made with no arguments).
    Raises :class:`KaleError` for a name not registered, or one whose entry point does
    not give a :class:`Transfer` subclass."""
    entry = plugins.entries(GROUP).get(name)
    if entry is None:
        raise KaleError(f"no transfer {name!r} (known: {', '.join(names())}; a transfer "
                        "from a plug-in needs its package installed)")
    cls = plugins.load(entry)
    if not (isinstance(cls, type) and issubclass(cls, Transfer)):
        raise KaleError(f"transfer {entry} does not give a subclass of "
                        f"kale.transfers.base.Transfer (got {cls!r})")
    return cls()
