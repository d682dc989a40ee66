"""Kale's exceptions: one root, structured subclasses that carry what a caller needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class KaleError(Exception):
    """Root of every error Kale raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow definition.

    ``path`` locates it in the document (``("tasks", "fetch", "after")``); ``file`` and
    ``line`` are filled in when the workflow came from a file.
    """

    message: str
    path: tuple[str | int, ...] = ()
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        loc = ".".join(str(p) for p in self.path)
        return f"{where}{loc + ': ' if loc else ''}{self.message}"


class ValidationError(KaleError):
    """A workflow definition is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(KaleError):
    """An option or argument names something that does not exist (an executor, say)."""


class SelectionError(UsageError):
    """``--only/--from/--until/--tag`` named something that does not exist or cannot run."""


class IllegalTransition(KaleError):
    """The store refused a state change that the state machine does not allow."""

    def __init__(self, run_id: str, task: str, old: str, new: str) -> None:
        self.run_id, self.task, self.old, self.new = run_id, task, old, new
        super().__init__(f"run {run_id}: task {task!r} cannot go from {old} to {new}")


class StoreWriteError(KaleError):
    """The store refused a write (a full disk, a database gone away). The engine stops
    starting tasks at once (what it cannot record must not run) and stops those running;
    everything committed before stays, so ``kale resume`` finishes the run later."""

    def __init__(self, store: str, cause: BaseException) -> None:
        self.store, self.cause = store, cause
        why = str(getattr(cause, "orig", None) or cause).splitlines()[0]
        super().__init__(f"cannot record the run's progress in {store}: {why}. Kale "
                         "stopped starting tasks and stopped those running; what was "
                         "recorded is kept: once the store is writable again, "
                         "`kale resume` finishes the run")


class RunNotFound(KaleError):
    """No run with this id (or id prefix, or ``latest``) among the runs the caller may see: the
    store raises it, and the manager answers 404 with its message, also for another user's
    run, which it treats as absent."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in this Kale home (see `kale runs`)")


class RunBusy(KaleError):
    """A run is still being driven by a live process."""


class TaskError(KaleError):
    """A task failed. Raised by :meth:`kale.Run.result` for a failed task."""

    def __init__(self, task: str, message: str) -> None:
        self.task = task
        super().__init__(f"task {task!r}: {message}")


class NotebookCellError(KaleError):
    """A notebook cell raised. Carries the cell's index (0-based, in the user's notebook),
    the exception name and value, and the traceback text."""

    def __init__(self, cell_index: int, ename: str, evalue: str, traceback: str,
                 source: str = "") -> None:
        self.cell_index, self.ename, self.evalue = cell_index, ename, evalue
        self.traceback, self.source = traceback, source
        super().__init__(f"cell {cell_index}: {ename}: {evalue}")


class ExportError(KaleError):
    """The workflow holds something that cannot be written as YAML."""


class SchedulerError(KaleError):
    """A batch scheduler command failed. Carries the command, the scheduler's own message
    and whether trying again later may help (``transient``)."""

    def __init__(self, message: str, *, command: Sequence[str] = (), stderr: str = "",
                 transient: bool = False) -> None:
        self.command, self.stderr, self.transient = list(command), stderr, transient
        super().__init__(message)


class SubmitError(SchedulerError):
    """The scheduler refused a job (unknown partition, walltime over its limit...)."""

    def __init__(self, scheduler: str, message: str, *, transient: bool = False) -> None:
        self.scheduler = scheduler
        super().__init__(f"{scheduler} refused the job: {message}", stderr=message,
                         transient=transient)


class SiteError(KaleError):
    """A site (a remote system Kale reaches over SSH) cannot be used: it is unreachable,
    refuses the login, or its Kale does not answer. Carries the site's name, what the
    remote side said, and whether trying again later may help (``transient``: a dropped
    or refused connection; not a wrong host key, a missing key or a missing Kale)."""

    def __init__(self, site: str, message: str, *, transient: bool = False,
                 stderr: str = "") -> None:
        super().__init__(f"site {site}: {message}")
        self.site, self.transient, self.stderr = site, transient, stderr


class SiteConfigError(SiteError, UsageError):
    """A site's definition is wrong, or the site refuses who we say we are (an unknown or
    changed host key, no key it accepts): the user must fix something (exit code 2)."""
