"""The manager's coalesced reads (kale.manager.coalesce): identical reads asked at once
share one read, and nobody gets a read that started before they asked."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kale.errors import RunNotFound
from kale.manager.coalesce import Coalescer


def test_reads_asked_during_a_read_share_the_next_one_and_see_what_changed() -> None:
    store = {"counts": 1}
    started, release = threading.Event(), threading.Event()
    reads: list[int] = []

    def count() -> int:
        seen = store["counts"]
        reads.append(seen)
        started.set()
        release.wait(30)
        return seen

    async def main() -> list[int]:
        c = Coalescer()
        first = asyncio.ensure_future(c.read("run", count))
        await asyncio.to_thread(started.wait, 30)  # the first read is under way
        store["counts"] = 2  # a change, then three clients ask
        started.clear()
        later = [asyncio.ensure_future(c.read("run", count)) for _ in range(3)]
        other = asyncio.ensure_future(c.read("other run", lambda: -1))
        release.set()
        return [await first, *[await f for f in later], await other]

    assert asyncio.run(main()) == [1, 2, 2, 2, -1]
    assert reads == [1, 2]  # three callers after the change: one more read, not three


def test_a_failed_read_fails_each_caller_that_shared_it() -> None:
    def missing() -> int:
        raise RunNotFound("no run 'x'")

    async def main() -> list[BaseException | int]:
        c = Coalescer()
        return await asyncio.gather(*[c.read("x", missing) for _ in range(3)],
                                    return_exceptions=True)

    got = asyncio.run(main())
    assert len(got) == 3 and all(isinstance(e, RunNotFound) for e in got)
    with pytest.raises(RunNotFound):
        asyncio.run(Coalescer().read("x", missing))
