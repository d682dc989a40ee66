"""Group commit: the engine hands over checked batches and goes on; one writer thread
commits whatever has queued up in a single transaction. A fast workflow then costs one
commit per few milliseconds instead of one per task, and the engine never waits on disk.

What the engine loses if its process is killed is at most the last few milliseconds of
changes; the tasks they concern are still non-terminal in the store and run again on
resume, so no task recorded SUCCEEDED ever runs twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from kale.errors import StoreWriteError
from kale.store.store import Batch, Change, Store

Listener = Callable[[list[Change]], None]


class GroupCommitter:
    """One run's writer: changes are checked at once by the caller and committed in the
    background, one transaction per burst (everything queued within :attr:`LINGER`).

    Promises: :meth:`submit` checks the changes against the state machine
    (:meth:`Store.check`) before it returns, so an illegal transition raises in the caller
    and is never queued; batches commit in the order submitted; ``on_commit`` hears of each
    batch's changes (in order) only once they are durable (the engine calls their receipts
    there, which is how a worker's report is acknowledged only once recorded); after a
    failed write nothing more is committed, ``on_error`` is told once, and every later
    :meth:`submit` and :meth:`sync` raises the :class:`StoreWriteError`.

    Threads: :meth:`submit` from one thread at a time (the engine's loop: the checked states
    the store keeps are not locked); :meth:`sync` and :meth:`close` from any thread; the
    writes, ``on_commit`` and ``on_error`` in its own thread (``kale-commit``)."""

    #: after a commit, changes gather this long before the next one (unless someone waits)
    LINGER = 0.005

    def __init__(self, store: Store, on_commit: Listener | None = None,
                 on_error: Callable[[StoreWriteError], None] | None = None) -> None:
        self.store = store
        self.on_commit = on_commit
        #: told (in the commit thread) when a write fails: the engine stops dispatching
        #: at once rather than at its next change
        self.on_error = on_error
        self._queue: list[tuple[Batch, list[Change]]] = []
        self._cond = threading.Condition()
        self._submitted = 0
        self._committed = 0
        self._error: BaseException | None = None
        self._closed = False
        self._waiting = 0
        self._urgent = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kale-commit", daemon=True)
        self._thread.start()

    def submit(self, changes: Sequence[Change]) -> None:
        """Check ``changes`` now (illegal transitions raise here) and queue them."""
        self._raise()
        batch = self.store.check(changes)
        with self._cond:
            self._queue.append((batch, list(changes)))
            self._submitted += 1
            self._cond.notify()

    def sync(self) -> None:
        """Wait until everything submitted so far is committed."""
        with self._cond:
            target = self._submitted
            self._waiting += 1
            self._urgent.set()
            self._cond.notify_all()
            while self._committed < target and self._error is None:
                self._cond.wait()
            self._waiting -= 1
            if not self._waiting:
                self._urgent.clear()
        self._raise()

    def close(self) -> None:
        self.sync()
        with self._cond:
            self._closed = True
            self._urgent.set()
            self._cond.notify()
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
            if self.LINGER:
                # Let a burst of changes gather into one transaction; submit() does not cut
                # this short, sync() and close() do.
                self._urgent.wait(self.LINGER)
            with self._cond:
                items, self._queue = self._queue, []
            try:
                self.store.write([b for b, _ in items])
            except BaseException as e:  # also raised to the engine at its next call
                error = StoreWriteError(self.store.where, e) if isinstance(e, Exception) \
                    else e
                with self._cond:
                    self._error = error
                    self._cond.notify_all()
                if self.on_error is not None and isinstance(error, StoreWriteError):
                    self.on_error(error)
                return
            if self.on_commit is not None:
                for _, changes in items:
                    self.on_commit(changes)
            with self._cond:
                self._committed += len(items)
                self._cond.notify_all()
