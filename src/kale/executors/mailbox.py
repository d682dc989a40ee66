"""Calls from other threads into one event loop, in order, where a burst of them costs
one wake-up of the loop (``call_soon_threadsafe`` writes to the loop's wake-up pipe each
time: at a thousand tasks a second, three per task add up)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Mailbox:
    """Calls posted from any thread, run on one event loop's thread in the order posted.

    Promises: :meth:`post` is thread-safe and never blocks on the loop; at most one wake-up
    of the loop is pending at a time, and it drains everything posted until then; once the
    loop is closed, what is posted is dropped (nobody is left to run it). A function posted
    runs with nothing held, so it may post again."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon in the loop's thread (dropped once the loop is closed)."""
        with self._lock:
            self._items.append((fn, args))
            if len(self._items) > 1:
                return  # a drain is on its way
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed
            with self._lock:
                self._items.clear()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for fn, args in items:
            fn(*args)
