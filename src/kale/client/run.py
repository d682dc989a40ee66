"""The :class:`Run` handle: what ``wf.run()`` returns and ``kale.get_run(id)`` re-attaches to."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kale.errors import KaleError, TaskError
from kale.model.states import RunState, TaskState
from kale.store import results
from kale.store.store import RunRecord, Store, TaskRecord

if TYPE_CHECKING:
    from kale.engine.engine import Engine


class TaskView:
    """One task of a run: ``run["fetch"].state``, ``.result()``, ``.logs()``."""

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name

    @property
    def record(self) -> TaskRecord:
        return self.run.store.task(self.run.id, self.name)

    @property
    def state(self) -> TaskState:
        return self.record.state

    def result(self) -> Any:
        return self.run.result(self.name)

    def logs(self, stream: str = "stdout") -> str:
        return self.run.logs(self.name, stream)

    def __repr__(self) -> str:
        r = self.record
        return f"<Task {self.name} {r.state.value} attempts={r.attempts}>"


class Run:
    """A run of a workflow, live or finished. Reads come from the store, so a handle made
    from a run id in another process sees the same story."""

    def __init__(self, store: Store, run_id: str, *, thread: threading.Thread | None = None,
                 engine: Engine | None = None) -> None:
        self.store = store
        self.id = run_id
        self._thread = thread
        self._engine = engine
        self._error: BaseException | None = None
        self.home: Path | None = None  # the Kale home it belongs to, when known

    # -- state ---------------------------------------------------------------------------
    @property
    def record(self) -> RunRecord:
        return self.store.get_run(self.id)

    @property
    def state(self) -> RunState:
        return self.record.state

    @property
    def workflow(self) -> str:
        return self.record.workflow

    @property
    def run_dir(self) -> Path:
        return Path(self.record.run_dir)

    @property
    def tasks(self) -> list[TaskRecord]:
        return self.store.tasks(self.id)

    def __getitem__(self, name: str) -> TaskView:
        self.store.task(self.id, name)  # raises for an unknown task
        return TaskView(self, name)

    def done(self) -> bool:
        if self._thread is not None:
            return not self._thread.is_alive()
        return self.state.terminal

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends (or ``timeout`` seconds pass); returns the run."""
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.state.terminal:
                if deadline is not None and time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        if self._error is not None:
            raise KaleError(f"run {self.id} stopped: {self._error}") from self._error
        return self

    def cancel(self) -> None:
        """Cancel the run: running tasks are killed and recorded CANCELLED. Works from any
        handle, in any process, like `kale cancel`."""
        if self._engine is not None and not self.done():
            self._engine.cancel("cancelled from Python")
            self.wait()
            return
        from kale.client.local import cancel_run

        cancel_run(self.store, self.id)

    # -- results and logs ----------------------------------------------------------------
    def result(self, task: str) -> Any:
        """The result of ``task``; raises :class:`kale.TaskError` if it did not succeed."""
        rec = self.store.task(self.id, task)
        if rec.state is not TaskState.SUCCEEDED:
            raise TaskError(task, f"{rec.state.value}" + (f": {rec.error}" if rec.error else
                                                          f" ({rec.reason})" if rec.reason else ""))
        return results.decode(rec, self.record.base_dir)

    def results(self) -> dict[str, Any]:
        base = self.record.base_dir
        return {t.name: results.decode(t, base) for t in self.tasks
                if t.state is TaskState.SUCCEEDED}

    def logs(self, task: str, stream: str = "stdout") -> str:
        rec = self.store.task(self.id, task)
        path = rec.stdout if stream == "stdout" else rec.stderr
        if not path or not Path(path).exists():
            return ""
        return Path(path).read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """The same document as ``kale status RUN --json``."""
        return {"run": self.record.to_json(), "tasks": [t.to_json() for t in self.tasks]}

    # -- display -------------------------------------------------------------------------
    def dashboard(self) -> Any:
        """A live :class:`kale.widgets.Dashboard` of this run (in Jupyter)."""
        from kale.widgets import Dashboard

        return Dashboard(self)

    def _repr_html_(self) -> str:
        from kale.display import run_html

        return run_html(self.record, self.tasks)

    def _repr_markdown_(self) -> str:
        from kale.display import run_markdown

        return run_markdown(self.record, self.tasks)

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.workflow!r} {self.state.value}>"
