"""Identical reads asked at once, read once: what twenty progress bars ask when the run
they watch ends (its summary, counted in the store: ~6 ms for 20,000 tasks) is counted
once or twice, not twenty times in a row.

A request never gets an answer read before it arrived: it waits for the read under way
(if any) to end, and is answered by the next one, which starts after it arrived and is
shared by every request that arrived meanwhile. So a client that changed something and
then asks sees its change, as it would without this."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

from starlette.concurrency import run_in_threadpool


class Coalescer:
    """Reads by key (on the server's event loop): :meth:`read` returns ``compute()``'s
    result (or raises its error) from a call that started after it was asked."""

    def __init__(self) -> None:
        self._next: dict[Hashable, asyncio.Future[Any]] = {}   # the read still to start
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._rounds: set[asyncio.Task[None]] = set()  # held while they run

    async def read(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute`` runs in a worker thread; callers of one key share one call."""
        future = self._next.get(key)
        if future is None:
            future = self._next[key] = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self._round(key, future, compute))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
        return await asyncio.shield(future)

    async def _round(self, key: Hashable, future: asyncio.Future[Any],
                     compute: Callable[[], Any]) -> None:
        try:
            before = self._running.get(key)
            if before is not None:  # a read that may have started before some of ours came
                await asyncio.wait([before])
            del self._next[key]  # from here on, who comes waits for the next read
            self._running[key] = future
            future.set_result(await run_in_threadpool(compute))
        except asyncio.CancelledError:  # the server stops
            future.cancel()
            raise
        except Exception as e:  # the callers' error (a run not found...): each raises it
            future.set_exception(RuntimeError(repr(e)) if isinstance(e, StopIteration)
                                 else e)
        finally:  # whatever happened, nobody is left waiting on this round
            if self._next.get(key) is future:
                del self._next[key]
            if self._running.get(key) is future:
                del self._running[key]
            if not future.done():
                future.cancel()
