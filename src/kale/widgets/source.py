"""Where the widgets read runs from and send a person's actions to: the run interface
(:class:`kale.client.source.RunSource`), implemented by a manager's API
(:class:`~kale.client.remote.ManagerSource`; a site's manager, through SSH, is one too:
:class:`~kale.sites.source.SiteSource`) and by a Kale home's store
(:class:`~kale.client.local.EmbeddedSource`). All give the same documents, so a widget
does not care which; a connection that drops is the source's to re-establish, and a
broken event stream the :class:`~kale.widgets.feed.Feed`'s to resume."""

from __future__ import annotations

from typing import Any

from kale.client.local import EmbeddedSource
from kale.client.remote import Client, ManagerSource, open_source
from kale.client.run import Run
from kale.client.source import Event, RunSource

Source = RunSource
StoreSource = EmbeddedSource  # the name the widgets' API has used
TAIL_BYTES = 16_384  # of each log, shown in a task's details

__all__ = ["TAIL_BYTES", "Event", "ManagerSource", "Source", "StoreSource", "source_of", "tail"]


def source_of(obj: Any = None) -> tuple[Source, str | None, bool]:
    """The source behind a run handle, a client, a source, or nothing (this home's
    manager if one runs, else its store); the run's id if ``obj`` is a run; and whether
    the source was made here, for the caller to close (a run's source is the run's)."""
    if isinstance(obj, Run):
        return obj.source, obj.id, False
    if isinstance(obj, Client):
        return ManagerSource(obj), None, True  # (closing it leaves the client open)
    if isinstance(obj, ManagerSource | EmbeddedSource):
        return obj, None, False
    if obj is None:
        return open_source(), None, True
    raise TypeError(f"expected a run, a kale Client or nothing, not {type(obj).__name__}")


def tail(text: str, limit: int = TAIL_BYTES) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]
