"""What every Kale widget shares: its JavaScript and CSS come from files inside the
package (nothing is fetched at run time), it reads from a :mod:`~kale.widgets.source`,
and it shows a failed action as a message in the widget rather than a traceback."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import httpx
import traitlets as T

from kale.errors import KaleError
from kale.widgets.feed import Feed
from kale.widgets.source import Event, Source, source_of

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("kale.widgets")


def asset(*names: str) -> str:
    """The packaged files ``names`` (``common.js`` first when asked), joined: an anywidget
    module is one file, so shared helpers are prepended rather than imported."""
    return "\n".join((STATIC / n).read_text() for n in names)


class KaleWidget(anywidget.AnyWidget):
    """Base of the views: a source, and ``error`` / ``message`` lines the view shows."""

    _css = asset("kale.css")
    error = T.Unicode("").tag(sync=True)
    message = T.Unicode("").tag(sync=True)

    def __init__(self, source: Source | None, *, own_source: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source: Any = source  # None: a view of a workflow not yet run
        self._own_source = own_source  # made for this view: closed with it
        self.on_msg(self._on_custom)

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and "action" in content:
            with self.reporting():
                self.act(str(content["action"]), content)

    def close(self) -> None:
        if self._own_source and self.source is not None:
            self.source.close()
        super().close()

    def act(self, action: str, content: dict[str, Any]) -> None:
        """A button pressed in the browser (``content`` carries the form's values)."""
        raise KaleError(f"{type(self).__name__} has no action {action!r}")

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Show what went wrong in the widget (a manager's refusal, a bad form)."""
        self.error = ""
        try:
            yield
        except httpx.HTTPError as e:  # the manager went away, or the network
            self.error = f"cannot reach the manager: {e}"
        except (KaleError, OSError, ValueError) as e:
            self.error = str(e)


class RunView(KaleWidget):
    """A view of one run, kept live by a :class:`Feed` of its events."""

    run_id = T.Unicode("").tag(sync=True)

    def __init__(self, run: Any = None, *, client: Any = None, source: Source | None = None,
                 feed: Feed | None = None, **kwargs: Any) -> None:
        run_id = run if isinstance(run, str) else None
        own = False
        if source is None and (run is not None or client is not None):
            source, found, own = source_of(client if run_id or run is None else run)
            run_id = run_id or found
        kwargs.setdefault("own_source", own)
        self._feed: Feed | None = None
        self._own_feed = False
        self.after = 0  # the last state event the view's snapshot includes
        self._lock = threading.RLock()  # feed deliveries vs. the kernel's thread
        super().__init__(source, **kwargs)
        if run_id:
            self.show_run(run_id, feed)

    def show_run(self, run_id: str, feed: Feed | None = None) -> None:
        """Show run ``run_id`` (following ``feed``, else a feed of its own)."""
        self._drop_feed()
        own = feed is None
        feed = feed or Feed(self.source, run_id)
        with self._lock:
            self.after = 0
            self.reset(run_id)
        if own:  # (a shared feed starts where its owner says: the oldest snapshot)
            feed.last_id = max(feed.last_id, self.after)
        self._feed, self._own_feed = feed, own
        feed.subscribe(self._take)
        feed.watch(self._connection)
        if own:
            feed.start()

    def _take(self, batch: list[Event]) -> None:
        with self._lock, self.hold_sync():
            self.on_events(batch)

    def _connection(self, problem: str) -> None:
        with self._lock:
            self.on_connection(problem)

    def on_connection(self, problem: str) -> None:
        """The run's event stream broke (``problem`` says how; the feed reconnects by
        itself), or is back (``""``). Called in the feed's reader thread."""

    def reset(self, run_id: str) -> None:
        """Load what the run is now (before its events start to arrive), and set
        ``after`` to the last event that snapshot includes: the feed starts after it, and
        :meth:`on_events` can skip state events up to it (a shared feed may resend them)."""
        self.run_id = run_id

    def on_events(self, batch: list[Event]) -> None:
        """Take a batch of the run's events (in a delivery thread)."""

    def _drop_feed(self) -> None:
        if self._feed is not None:
            self._feed.unsubscribe(self._take)
            self._feed.unwatch(self._connection)
            if self._own_feed:
                self._feed.close()
        self._feed = None

    def close(self) -> None:
        self._drop_feed()
        super().close()


class Refreshing(KaleWidget):
    """A view of something without an event stream (the batch queue, the workers, the
    runs): read again every ``interval`` seconds while the widget lives (one thread),
    and when its Refresh button is pressed.

    A view whose source may be slow to answer (``background = True``: the batch queue,
    whose scheduler may hang) never reads in the caller's thread: it shows at once,
    ``waiting`` says what it waits for, and its thread fills it in; the Refresh button
    only wakes that thread, so the kernel stays free. (With ``interval=0`` there is no
    thread: it reads once when made, and on :meth:`refresh`.)"""

    interval = T.Float(10.0).tag(sync=True)
    updated = T.Float(0.0).tag(sync=True)
    #: what the view waits for before its first answer ("" once it has one)
    waiting = T.Unicode("").tag(sync=True)
    background: ClassVar[bool] = False

    def __init__(self, source: Source, *, interval: float = 10.0, start: bool = True,
                 **kwargs: Any) -> None:
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(source, interval=interval, **kwargs)
        threaded = start and interval > 0
        if self.background and threaded:
            self.waiting = self.waiting_for()
        else:
            with self.reporting():
                self.refresh()
        if threaded:
            self._thread = threading.Thread(target=self._loop, args=(self.background,),
                                            daemon=True, name=f"kale-{type(self).__name__}")
            self._thread.start()

    def waiting_for(self) -> str:
        """What the view says before its first answer (a background view)."""
        return "waiting for an answer..."

    def _loop(self, now: bool) -> None:
        while not self._closed.is_set():
            if not now:
                self._wake.wait(self.interval)
                self._wake.clear()
                if self._closed.is_set():
                    return
            now = False
            if self.comm is None:  # closed (as a notebook's widget) without close()
                return
            try:
                with self.reporting():
                    self.refresh()
            except Exception as e:  # the loop outlives any one failure, and says it
                log.exception("refreshing %s failed", type(self).__name__)
                self.error = f"{type(e).__name__}: {e}"
            finally:
                self.waiting = ""

    def refresh(self) -> None:
        raise NotImplementedError

    def act(self, action: str, content: dict[str, Any]) -> None:
        if action == "refresh":
            if self.background and self._thread is not None:
                self._wake.set()  # its thread reads; the kernel does not wait for it
            else:
                self.refresh()
        else:
            super().act(action, content)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        super().close()
