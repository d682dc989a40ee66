"""Executors decide how tasks reach compute. The engine hands an executor a prepared task
context and awaits its outcome; the local executor runs it here, batch executors (later)
send it through a queue."""

from __future__ import annotations

import abc
from collections.abc import Mapping

from kale.tasks.base import Outcome, TaskContext


class Executor(abc.ABC):
    name: str
    #: how many tasks may run at once
    slots: int

    async def start(self, kinds: Mapping[str, int]) -> None:  # noqa: B027 - optional hook
        """Prepare to run tasks of these kinds (``kind -> number of tasks``): warm pools."""

    @abc.abstractmethod
    async def execute(self, ctx: TaskContext) -> Outcome:
        """Run one attempt; cancellation must stop it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything started."""
