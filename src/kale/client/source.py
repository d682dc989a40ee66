"""The one run interface: :class:`RunSource`, what every face of Kale (the run handle, the
CLI, the widgets) uses to submit, inspect, steer and follow runs.

Two implementations give the same documents: :class:`kale.client.local.EmbeddedSource`
(a Kale home's store; runs driven in this process) and
:class:`kale.client.remote.ManagerSource` (a manager's API). A remote site is a third.

The documents are JSON-shaped dicts:

- a **run** (``RunRecord.to_json``): ``id``, ``workflow``, ``state``, ``created_at``,
  ``ended_at``, ``run_dir``, ``params``, ``options``, ``message``, ``submitted_by``;
- a **status**: ``{"run", "counts"}`` (tasks per state) and, with ``tasks=True``,
  ``"tasks"`` (each ``TaskRecord.to_json``; only those in ``states``, the first ``limit``
  of them, when given) and
  ``"last_event"`` (the id of the newest event those tasks include); ``"problems"``
  when something the states do not say keeps the run from going on;
- a **task detail**: the task's document plus ``description``, ``parameters``, ``after``
  and ``attempt_rows``;
- **events**: ``(kind, data)`` pairs, ``state`` (a task's or the run's transition),
  ``log`` (new lines), ``resources`` (samples), and a final ``end``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kale.model.options import RunOptions
    from kale.model.states import RunState
    from kale.model.workflow import Workflow

Event = tuple[str, dict[str, Any]]

#: what ``task_action`` accepts
TASK_ACTIONS = ("cancel", "suspend", "resume", "continue", "reject")


class RunSource(Protocol):
    """Where runs live. A run id may be a unique prefix or ``latest`` wherever one is
    taken; documents always carry the full id."""

    #: a short name for messages: "the store in /home/a/.kale", "the manager at ..."
    where: str

    # -- runs ----------------------------------------------------------------------------
    def submit(self, wf: Workflow, options: RunOptions) -> str:
        """Record a new run of ``wf`` and start it; its id."""
        ...

    def runs(self, limit: int = 50) -> list[dict[str, Any]]: ...

    def status(self, run_id: str, tasks: bool = True,
               states: Collection[str] | None = None,
               limit: int | None = None) -> dict[str, Any]:
        """The run's status document; its ``tasks`` only those in ``states`` (task state
        names) when given, and the first ``limit`` of them; its ``counts`` always of
        every task."""
        ...

    def states(self, run_id: str) -> dict[str, Any]:
        """Every task's state by name (``states``), the reason of each task a condition
        skipped (``conditions``), the run (``run``) and the id of its latest event
        (``last_event``): a whole graph's view, without the rest of each task."""
        ...

    def workflow(self, run_id: str) -> dict[str, Any]:
        """The canonical dict of the workflow the run was made from."""
        ...

    def cancel(self, run_id: str) -> RunState:
        """Cancel a run; the state it ends in (``RUNNING`` if it is still stopping)."""
        ...

    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None, force: bool = False) -> str:
        """The run's workflow again, as a new run: its tasks that did not succeed
        (``failed``), a selection (``only``), or everything below ``from_``."""
        ...

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]: ...

    # -- tasks ---------------------------------------------------------------------------
    def task(self, run_id: str, task: str) -> dict[str, Any]: ...

    def result(self, run_id: str, task: str) -> Any:
        """The task's result; :class:`kale.TaskError` if it did not succeed."""
        ...

    def logs(self, run_id: str, task: str, stream: str = "stdout", offset: int = 0) -> str:
        """The task's log (its latest attempt's) from byte ``offset`` on."""
        ...

    def task_action(self, run_id: str, task: str, action: str,
                    reason: str | None = None) -> dict[str, Any]:
        """One of :data:`TASK_ACTIONS` on a task of a live run."""
        ...

    def fetch(self, run_id: str, task: str, dest: Path) -> list[Path]:
        """Copy a succeeded task's declared outputs into the local directory ``dest``;
        the paths made there."""
        ...

    # -- what only a manager has (an embedded source says so) ------------------------------
    def queue(self, scheduler: str | None = None) -> dict[str, Any]: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def jobs(self) -> list[dict[str, Any]]: ...
    def start_workers(self, kind: str, count: int, **options: Any) -> dict[str, Any]: ...
    def stop_worker(self, worker_id: str) -> None: ...
    def cancel_job(self, job_id: str) -> None: ...

    def close(self) -> None: ...
