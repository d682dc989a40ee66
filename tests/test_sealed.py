"""The manager never unpickles what a client or a worker sends (issue 13): functions and
results that are not plain JSON pass through it sealed, and only the owner's own processes
(the worker running the task, the user's client) open them. Each pickle here records which
process opened it, so the test sees for itself that the manager never did."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Kale, Manager
from kale import Workflow
from kale.model.sealed import SealedFunction


def _opened(where: Path, value: str) -> Any:
    """An object that pickles as code which, when unpickled, writes a file named after
    the opening process's pid into ``where`` and gives back ``value`` (evaluated)."""

    class Opened:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            code = (f"(__import__('pathlib').Path({str(where)!r}, "
                    f"str(__import__('os').getpid())).touch(), {value})[1]")
            return eval, (code,)

    return Opened()


def _openers(where: Path) -> set[int]:
    return {int(p.name) for p in where.iterdir()}


def _tasks(wf: Workflow, seen: Path, by_key: str) -> None:
    """``opened`` returns a non-JSON result that records who opens it; ``whole`` takes it
    whole, ``by_key`` takes ``${opened.<by_key>}``: the manager resolves neither."""
    where = str(seen)

    def opened() -> Any:  # all inline: cloudpickle takes it by value to the worker
        class Opened:
            """Every time it is unpickled it writes a file named after the process that
            opened it, and stays an Opened (so a copy sent on still tells)."""

            def __init__(self, data: dict[str, Any]) -> None:
                self.data = data

            def __getitem__(self, key: str) -> Any:
                return self.data[key]

            def __iter__(self) -> Any:
                return iter(self.data)

            def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
                return reopen, (self.data,)

        def reopen(data: dict[str, Any]) -> Opened:
            import os
            import pathlib

            pathlib.Path(where, str(os.getpid())).touch()
            return Opened(data)

        return Opened({"x": 7, "arr": (1, 2)})

    def whole(opened: dict[str, Any]) -> int:
        return int(opened["arr"][0])

    def plus_one(x: int) -> int:
        return x + 1

    wf.python(opened)
    wf.python(whole, after=["opened"])
    wf.python(plus_one, name="by_key", parameters={"x": f"${{opened.{by_key}}}"})


def test_the_manager_opens_no_function_and_no_result_it_carries(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    m = managers("--workers", "1")
    seen_fn, seen_result = tmp_path / "fn", tmp_path / "result"
    seen_fn.mkdir()
    seen_result.mkdir()
    wf = Workflow("sealed")
    # A function as a notebook would send it (pickled by value), whose pickle records
    # who opens it: only the worker that runs the task may.
    blob = pickle.dumps(_opened(seen_fn, "lambda: {'x': 7, 'arr': (1, 2)}"))
    wf.python(SealedFunction(base64.b64encode(blob).decode(), "make"), name="make")
    _tasks(wf, seen_result, "x")
    with m.client() as client:
        run = client.submit(wf)
        assert run.wait(120).state.value == "SUCCEEDED", [
            (t["name"], t["error"]) for t in client.status(run.id)["tasks"]]
        assert client.result(run.id, "make") == {"x": 7, "arr": (1, 2)}
        assert client.result(run.id, "whole") == 1
        assert client.result(run.id, "by_key") == 8
        assert client.result(run.id, "opened").data == {"x": 7, "arr": (1, 2)}
        workers = {w["pid"] for w in client.workers()}
    manager = int(m.doc["pid"])
    assert _openers(seen_fn) and manager not in _openers(seen_fn)
    assert _openers(seen_result) and manager not in _openers(seen_result)
    # the stored result is the worker's own bytes, opened by this process just now
    import os

    assert os.getpid() in _openers(seen_result)
    assert workers  # the task ran on a worker, not in the manager


def test_a_key_missing_from_a_sealed_result_fails_the_task_that_asks_for_it(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    m = managers("--workers", "1")
    seen = tmp_path / "seen"
    seen.mkdir()
    wf = Workflow("sealed-missing")
    _tasks(wf, seen, "nope")
    with m.client() as client:
        run = client.submit(wf)
        assert run.wait(120).state.value == "FAILED"
        task = client.task(run.id, "by_key")
        assert client.task(run.id, "whole")["state"] == "SUCCEEDED"
    assert task["state"] == "FAILED"
    assert "result of task 'opened' has no key 'nope'" in task["error"]
