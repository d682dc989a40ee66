"""The run handle: what ``wf.run()`` returns, ``kale.get_run(id)`` and ``Client.run(id)``
re-attach to. One type whichever source the run lives in (a home's store, a manager):
every read and action goes through the run interface (:mod:`kale.client.source`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kale.client.source import Event, RunSource
from kale.model.states import RunState, TaskState


@dataclass(frozen=True)
class TaskInfo:
    """One task of a run as its status document gives it (``run.tasks``)."""

    name: str
    state: TaskState
    kind: str
    attempts: int = 0
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    duration: float | None = None
    reason: str | None = None
    error: str | None = None
    reused_from: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    traceback: str | None = None  # (in a task's detail; None in a run's status)
    artifacts: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: a task the run added as it ran: the map (or task) it belongs to
    member_of: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TaskInfo:
        return cls(name=doc["name"], state=TaskState(doc["state"]), kind=doc["kind"],
                   attempts=doc.get("attempts") or 0, exit_code=doc.get("exit_code"),
                   started_at=doc.get("started_at"), ended_at=doc.get("ended_at"),
                   duration=doc.get("duration"), reason=doc.get("reason"),
                   error=doc.get("error"), reused_from=doc.get("reused_from"),
                   stdout=doc.get("stdout"), stderr=doc.get("stderr"),
                   traceback=doc.get("traceback"), artifacts=dict(doc.get("artifacts") or {}),
                   details=dict(doc.get("details") or {}), member_of=doc.get("member_of"))


class TaskView:
    """One task of a run: ``run["fetch"].state``, ``.result()``, ``.logs()``, and for a
    live run ``.cancel()``, ``.kernel()``, ``.continue_()``."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name

    def detail(self) -> dict[str, Any]:
        """The task's record, description, parameters, upstream tasks and attempts."""
        return self.run.source.task(self.run.id, self.name)

    @property
    def record(self) -> TaskInfo:
        """The task as recorded now: state, attempts, exit code, error, traceback..."""
        return TaskInfo.from_json(self.detail())

    @property
    def state(self) -> TaskState:
        return TaskState(self.detail()["state"])

    def result(self) -> Any:
        return self.run.result(self.name)

    def logs(self, stream: str = "stdout", offset: int = 0) -> str:
        return self.run.logs(self.name, stream, offset)

    def fetch(self, dest: str | Path = ".") -> list[Path]:
        return self.run.fetch(self.name, dest)

    def kernel(self, *, timeout: float = 10.0) -> Any:
        """A started ``jupyter_client`` client on the kernel the task runs in (a run
        driven by a manager): read its variables, steer it."""
        kernel = getattr(self.run.source, "kernel", None)
        if kernel is None:
            from kale.errors import KaleError

            raise KaleError("attaching to a task's kernel needs the manager (`kale manager "
                            "start`, then `wf.run(manager=True)`)")
        return kernel(self.run.id, self.name, timeout=timeout)

    def _act(self, action: str, reason: str | None = None) -> dict[str, Any]:
        return self.run.source.task_action(self.run.id, self.name, action, reason)

    def cancel(self) -> dict[str, Any]:
        """Cancel this task (the tasks below it are skipped)."""
        return self._act("cancel")

    def continue_(self) -> dict[str, Any]:
        """Mark this waiting step done: the workflow goes on with what it recorded."""
        return self._act("continue")

    def reject(self, reason: str = "") -> dict[str, Any]:
        """Reject this waiting step: it fails and the tasks below it are skipped."""
        return self._act("reject", reason or None)

    def __repr__(self) -> str:
        d = self.detail()
        return f"<Task {self.name} {d['state']} attempts={d['attempts']}>"


class Run:
    """A run of a workflow, live or finished, wherever it lives. Reads go to its source
    each time, so a handle made from a run id in another process, or a notebook
    re-opened after the laptop slept, sees the same story.

    ``wait()`` returns when the run has ended, in whatever state; it raises
    :class:`kale.KaleError` only if the run can no longer end (the thread of this process
    that drove it crashed). ``result(task)`` raises :class:`kale.TaskError` for a task
    that did not succeed; ``cancel()`` returns the state the run ended in."""

    def __init__(self, source: RunSource, run_id: str, *, owns_source: bool = False) -> None:
        self.source, self.id = source, run_id
        self._owns_source = owns_source  # made for this handle: closed with it

    # -- state ---------------------------------------------------------------------------
    def status(self, tasks: bool = True) -> dict[str, Any]:
        """The same document as ``kale status RUN --json``."""
        return self.source.status(self.id, tasks)

    @property
    def state(self) -> RunState:
        return RunState(self.status(tasks=False)["run"]["state"])

    @property
    def workflow(self) -> str:
        """The workflow's name (:meth:`spec` gives the workflow itself)."""
        return str(self.status(tasks=False)["run"]["workflow"])

    def spec(self) -> dict[str, Any]:
        """The canonical dict of the workflow this run was made from."""
        return self.source.workflow(self.id)

    @property
    def run_dir(self) -> Path:
        return Path(self.status(tasks=False)["run"]["run_dir"])

    @property
    def tasks(self) -> list[TaskInfo]:
        return [TaskInfo.from_json(t) for t in self.status()["tasks"]]

    def __getitem__(self, name: str) -> TaskView:
        self.source.task(self.id, name)  # raises for an unknown task
        return TaskView(self, name)

    def done(self) -> bool:
        return self.state.terminal

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends (or ``timeout`` seconds pass); returns the run."""
        wait = getattr(self.source, "wait", None)
        if wait is not None:
            wait(self.id, timeout)
        else:  # a source without its own way: follow the run's events to their end
            for event, _ in self.events():
                if event == "end":
                    break
        return self

    def cancel(self) -> RunState:
        """Cancel the run: running tasks are killed and recorded CANCELLED. Works from any
        handle, in any process, like `kale cancel`."""
        return self.source.cancel(self.id)

    def events(self, after: int = 0) -> Iterator[Event]:
        """``(kind, data)`` as the run goes: ``state``, ``log``, ``resources``, ``end``."""
        return self.source.events(self.id, after)

    def rerun(self, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None, force: bool = False) -> Run:
        """This run's workflow again, as a new run: the tasks that did not succeed
        (``failed``), a selection (``only``), or everything below ``from_``."""
        new = self.source.rerun(self.id, failed=failed, only=only, from_=from_, force=force)
        return type(self)(self.source, new)

    # -- results and logs ----------------------------------------------------------------
    def result(self, task: str) -> Any:
        """The result of ``task``; raises :class:`kale.TaskError` if it did not succeed."""
        return self.source.result(self.id, task)

    def results(self) -> dict[str, Any]:
        """Every succeeded task's result, by task name."""
        return {t["name"]: self.source.result(self.id, t["name"])
                for t in self.status()["tasks"] if t["state"] == TaskState.SUCCEEDED.value}

    def logs(self, task: str, stream: str = "stdout", offset: int = 0) -> str:
        """A task's log (its latest attempt's) from byte ``offset`` on."""
        return self.source.logs(self.id, task, stream, offset)

    def fetch(self, task: str, dest: str | Path = ".") -> list[Path]:
        """Copy a succeeded task's declared outputs into the directory ``dest`` (over
        SSH when the run is at a site); the paths made here."""
        return self.source.fetch(self.id, task, Path(dest))

    # -- display -------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        from kale.model.display import run_html

        return run_html(self.status(), self.spec())

    def _repr_markdown_(self) -> str:
        from kale.model.display import run_markdown

        return run_markdown(self.status(), self.spec())

    def __repr__(self) -> str:
        run = self.status(tasks=False)["run"]
        return f"<Run {self.id} {run['workflow']!r} {run['state']}>"

    def close(self) -> None:
        """Let go of the source if it was made for this handle (a manager connection)."""
        if self._owns_source:
            self._owns_source = False
            self.source.close()

    def __del__(self) -> None:
        if getattr(self, "_owns_source", False):
            with contextlib.suppress(Exception):
                self.source.close()
