"""One live event stream of a run, shared by all the views that show it. A reader thread
follows the stream (reconnecting after the last state event it saw if the manager goes
away and comes back); a delivery thread hands the views what arrived, in batches at most
every ``interval`` seconds, so a burst of thousands of changes costs each view a few
updates, not thousands."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kale.widgets.source import Event, Source

log = logging.getLogger("kale.widgets")

Listener = Callable[[list[Event]], None]


class Feed:
    """One run's event stream, followed once and shared by the views that show the run.

    Promises: listeners get every event in the order it arrived, in batches at most every
    ``interval`` seconds, one batch at a time and never two at once; a listener that raises
    is logged and stays subscribed; :attr:`last_id` only grows, and a broken stream resumes
    after it; :attr:`ended` is True once the run ended and every event was delivered (not
    after :meth:`close`).

    Threads: :meth:`subscribe`, :meth:`unsubscribe`, :meth:`start`, :meth:`close` and
    :meth:`wait` from any thread (the kernel's); reading in one thread (``kale-feed-RUN``),
    listeners called in another (``kale-feed-deliver-RUN``)."""

    def __init__(self, source: Source, run_id: str, *, interval: float = 0.1,
                 retry: float = 1.0) -> None:
        self.source, self.run_id = source, run_id
        self.interval, self.retry = interval, retry
        self.last_id = 0          # the last state event seen: where a reconnection resumes
        self.ended = False        # the run ended and every event was delivered
        self._listeners: list[Listener] = []
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
                    for event, data in self.source.events(self.run_id, self.last_id):
                        with self._lock:
                            self._buffer.append((event, data))
                        if event == "state":
                            self.last_id = max(self.last_id, int(data.get("id") or 0))
                        if event == "end" or self._stop.is_set():
                            return
                    return  # the stream ended without "end": the run is gone
                except Exception as e:  # the manager went away: try again
                    log.warning("event stream of run %s broke (%s); reconnecting",
                                self.run_id, e)
                    if self._stop.wait(self.retry):
                        return
        finally:
            self._read_done.set()

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
