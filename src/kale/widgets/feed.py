"""One live event stream of a run, shared by all the views that show it. A reader thread
follows the stream (reconnecting after the last state event it saw if the manager goes
away and comes back, or the SSH connection to a site's manager drops); a delivery thread
hands the views what arrived, in batches at most every ``interval`` seconds, so a burst
of thousands of changes costs each view a few updates, not thousands."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kale.errors import KaleError
from kale.widgets.source import Event, Source

log = logging.getLogger("kale.widgets")

Listener = Callable[[list[Event]], None]


class Feed:
    """One run's event stream, followed once and shared by the views that show the run.

    Promises: listeners get every event in the order it arrived, in batches at most every
    ``interval`` seconds, one batch at a time and never two at once; a listener that raises
    is logged and stays subscribed; :attr:`last_id` only grows, and a stream that breaks or
    ends before the run did (a manager restarted, a site's connection dropped) resumes
    after it once the source answers about the run again (only a run that is gone, or
    :meth:`close`, ends the reading); meanwhile :attr:`problem` says what is wrong and the
    watchers are told (and told "" when it is back); :attr:`ended` is True once the run
    ended and every event was delivered (not after :meth:`close`).

    Threads: :meth:`subscribe`, :meth:`unsubscribe`, :meth:`start`, :meth:`close` and
    :meth:`wait` from any thread (the kernel's); reading in one thread (``kale-feed-RUN``),
    listeners called in another (``kale-feed-deliver-RUN``)."""

    def __init__(self, source: Source, run_id: str, *, interval: float = 0.1,
                 retry: float = 1.0) -> None:
        self.source, self.run_id = source, run_id
        self.interval, self.retry = interval, retry
        self.last_id = 0          # the last state event seen: where a reconnection resumes
        self.ended = False        # the run ended and every event was delivered
        #: what is wrong with the stream now ("" while it flows), for the views to say
        self.problem = ""
        self._listeners: list[Listener] = []
        self._watchers: list[Callable[[str], None]] = []
        self._buffer: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._read_done = threading.Event()
        self._threads: list[threading.Thread] = []

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def watch(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher`` (in the reader thread) with what is wrong when the stream
        breaks, and with "" once it is back."""
        with self._lock:
            if watcher not in self._watchers:
                self._watchers.append(watcher)

    def unwatch(self, watcher: Callable[[str], None]) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def start(self) -> Feed:
        if not self._threads:
            self._threads = [threading.Thread(target=self._read, daemon=True,
                                              name=f"kale-feed-{self.run_id}"),
                             threading.Thread(target=self._deliver, daemon=True,
                                              name=f"kale-feed-deliver-{self.run_id}")]
            for t in self._threads:
                t.start()
        return self

    def close(self) -> None:
        """Stop delivering (the reader ends with the stream's next event)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until every event of an ended run was delivered; True if so."""
        if len(self._threads) < 2:
            return False
        self._threads[1].join(timeout)
        return self.ended

    # -- threads -------------------------------------------------------------------------
    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if self._follow():
                        return
                    why = "the stream ended before the run did"
                except Exception as e:  # the manager or the connection went away
                    why = str(e) or type(e).__name__
                log.info("event stream of run %s broke (%s); reconnecting", self.run_id, why)
                self._tell(f"lost the connection to {self._where()}: reconnecting...")
                if not self._back():
                    return
                self._tell("")
        finally:
            self._read_done.set()

    def _follow(self) -> bool:
        """Follow the stream from :attr:`last_id`; True once the run ended (or the feed
        was closed), False if the stream broke off before."""
        for event, data in self.source.events(self.run_id, self.last_id):
            with self._lock:
                self._buffer.append((event, data))
            if event == "state":
                self.last_id = max(self.last_id, int(data.get("id") or 0))
            if event == "end" or self._stop.is_set():
                return True
        return self._stop.is_set()

    def _back(self) -> bool:
        """Wait until the source answers about the run again (every ``retry`` seconds):
        True then, False if the feed was closed meanwhile or the run is gone."""
        while not self._stop.wait(self.retry):
            try:
                self.source.status(self.run_id, tasks=False)
                return True
            except KaleError as e:
                if "no run" in str(e):
                    return False
            except Exception as e:  # still away
                log.debug("run %s: no answer yet (%s)", self.run_id, e)
        return False

    def _where(self) -> str:
        return str(getattr(self.source, "where", "") or "the manager")

    def _tell(self, problem: str) -> None:
        """Say what is wrong with the stream ("" once it is back) to the watchers."""
        self.problem = problem
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            try:
                watcher(problem)
            except Exception:
                log.exception("a view failed to take the state of run %s's stream",
                              self.run_id)

    def _deliver(self) -> None:
        while True:
            reading = not self._read_done.is_set()
            self._stop.wait(self.interval)
            with self._lock:
                batch, self._buffer = self._buffer, []
                listeners = list(self._listeners)
            if batch and not self._stop.is_set():
                for listener in listeners:
                    try:
                        listener(batch)
                    except Exception:
                        log.exception("a view failed to take events of run %s", self.run_id)
            if self._stop.is_set() or not reading:
                self.ended = not self._stop.is_set()
                return
