"""Dashboard: the views of one run together, sharing one event stream."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from kale.model.dynamic import group_of
from kale.widgets.dag import DagView
from kale.widgets.feed import Feed
from kale.widgets.log import LogView
from kale.widgets.login import Login
from kale.widgets.queue import QueueView
from kale.widgets.resources import ResourceView
from kale.widgets.runs import RunsView
from kale.widgets.source import Event, Source, source_of
from kale.widgets.workers import WorkersView


class Dashboard(W.VBox):  # type: ignore[misc]
    """A run's graph on top; below it, tabs with the focused task's log, resource
    charts, the batch queue (when there is a scheduler), workers, runs, and a login.
    One event stream feeds the live views. Clicking a task shows its log; clicking a
    map's member shows its log and its own resource lines (a click elsewhere, the whole
    run's again); retrying or opening another run switches every view to it.

    ``Dashboard(run)`` or ``run.dashboard()``; ``Dashboard()`` for this home's manager
    (pick a run under "Runs"); ``Dashboard(client=c)`` for another manager."""

    def __init__(self, run: Any = None, *, client: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("kale-dashboard")
        self.login = Login()
        self.login.on_connect.append(self.connect)
        self._feed: Feed | None = None
        self.run_id: str | None = None
        source, run_id, owned = source_of(run if run is not None else client)
        self._build(source)
        self._source_owned = owned  # made here (not a run's own): closed here
        if run_id:
            self.show_run(run_id)

    def _build(self, source: Source) -> None:
        self.source = source
        self.dag = DagView(source=source)
        self.logs = LogView(source=source)
        self.resources = ResourceView(source=source)
        self.workers = WorkersView(source=source)
        self.runs = RunsView(source=source)
        self.queue = QueueView(source=source)
        self.dag.on_new_run.append(self.show_run)
        self.runs.on_open.append(self.show_run)
        self.dag.observe(self._focus, names="focus")
        pages: list[tuple[str, W.Widget]] = [("Log", self.logs), ("Resources", self.resources)]
        # The queue view answers later (a scheduler may be slow): its tab is there at once
        # when this machine has a scheduler, else added if the answer names one.
        if self.queue.scheduler and not self.queue.error:
            pages.append(("Queue", self.queue))
        else:
            self.queue.observe(self._queue_answered, names="updated")
        pages += [("Workers", self.workers), ("Runs", self.runs), ("Connect", self.login)]
        self.tabs = W.Tab(children=[w for _, w in pages], titles=[t for t, _ in pages])
        self.children = [self.dag, self.tabs]

    def _queue_answered(self, change: dict[str, Any]) -> None:
        """The manager's scheduler answered (one this machine does not have): the Queue tab
        goes in before Workers, the selected tab staying selected."""
        queue = change["owner"]
        if queue is not self.queue or queue in self.tabs.children or not queue.scheduler:
            return
        queue.unobserve(self._queue_answered, names="updated")
        children = list(self.tabs.children)
        titles = [self.tabs.get_title(i) for i in range(len(children))]
        at = children.index(self.workers)
        selected = self.tabs.selected_index
        children.insert(at, queue)
        titles.insert(at, "Queue")
        self.tabs.children, self.tabs.titles = children, titles
        if selected is not None and selected >= at:
            self.tabs.selected_index = selected + 1

    def _focus(self, change: dict[str, Any]) -> None:
        """A task clicked in the graph: its log (a member's too, one made after the Log tab
        loaded included); a member's own resource lines, not its map's."""
        name = change["new"]
        if not name:
            return
        with self.logs.reporting():
            self.logs.show(name)
        if group_of(name) is not None:
            self.resources.task = name
        elif group_of(self.resources.task) is not None:
            self.resources.task = ""  # (a member was chosen: the whole run again)

    def show_run(self, run_id: str) -> None:
        """Show run ``run_id`` in every view."""
        old = self._feed
        feed = Feed(self.source, run_id)
        for view in (self.dag, self.logs, self.resources):
            view.show_run(run_id, feed)
        feed.last_id = self.dag.after  # the views that need state events have it
        feed.subscribe(self._ended)
        self._feed, self.run_id = feed, self.dag.run_id
        feed.start()
        if old is not None:
            old.close()
        self.runs.opened = self.dag.run_id
        with self.runs.reporting():
            self.runs.refresh()

    def _ended(self, batch: list[Event]) -> None:
        """The run ended: the Runs tab says so at once (not at its next look)."""
        if any(event == "end" for event, _ in batch):
            with self.runs.reporting():
                self.runs.refresh()

    def connect(self, client: Any) -> None:
        """Use another manager (the Connect tab calls this)."""
        self._close_views()
        self._drop_source()
        source, _, self._source_owned = source_of(client)
        self._build(source)
        self.run_id = None
        self.tabs.selected_index = len(self.tabs.children) - 2  # Runs: pick one

    def _close_views(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        for view in (self.dag, self.logs, self.resources, self.queue, self.workers, self.runs):
            view.close()

    def _drop_source(self) -> None:
        if self._source_owned:
            self.source.close()
        self._source_owned = False

    def close(self) -> None:
        self._close_views()
        self._drop_source()
        self.login.close()
        super().close()
