"""Python's cyclic garbage collector while runs are driven in this process.

A fast run allocates container objects by the hundred thousand (task contexts, changes,
rows), and the collector's default first threshold (700 allocations) then sets off a
collection of the oldest generation about once a run: a pass over every object of the
process (the notebook's too) that took 30-40 ms of a 2,000-task run's ~500 ms, with the
engine's thread stopped. While at least one run is driven here, the first threshold is
raised to :data:`THRESHOLD` (young objects are then collected in fewer, larger passes, and
the oldest generation, whose passes follow the young ones' count, far less often); the
thresholds before go back once the last run ends. Garbage without cycles is freed at once
as always; only cycles wait longer, :data:`THRESHOLD` allocations at most."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLD = 20_000

_lock = threading.Lock()
_active = 0
_before: tuple[int, int, int] | None = None


@contextmanager
def relaxed() -> Iterator[None]:
    """The collector's first threshold at least :data:`THRESHOLD` while in this block (in
    any thread: nested and concurrent blocks share one setting)."""
    global _active, _before
    with _lock:
        if _active == 0:
            _before = gc.get_threshold()
            if _before[0] and _before[0] < THRESHOLD:
                gc.set_threshold(THRESHOLD, *_before[1:])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _before is not None:
                # only if nobody changed them meanwhile
                if gc.get_threshold()[0] == THRESHOLD and _before[0] < THRESHOLD:
                    gc.set_threshold(*_before)
                _before = None
