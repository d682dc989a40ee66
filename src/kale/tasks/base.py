"""The contract between the engine and a task runner (one runner per task kind).

The engine prepares a :class:`TaskContext` (the task's directory, log files, resolved
inputs), awaits :meth:`TaskRunner.run` and stores the :class:`Outcome`. Timeouts and
cancellation arrive as ``asyncio.CancelledError`` inside ``run``: a runner must then kill
whatever it started (the whole process group) before re-raising.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kale.model.workflow import Task
from kale.tasks import groups

RECORDS_FILE = ".kale-records.pkl"


class Requeue(Exception):
    """Raised by :meth:`TaskRunner.run` for an attempt that never started and that the
    runner cannot place now: its executor has the engine requeue it (no retry counted)."""


class _Path:
    """A path field that takes a ``str`` or a ``Path`` and gives a ``Path``, made from the
    text the first time it is read: the engine prepares thousands of contexts a second,
    and most of their paths are only ever needed as text (:meth:`TaskContext.text`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: object, owner: type | None = None) -> Path:
        if obj is None:  # (the class's field: no default)
            raise AttributeError(self._name)
        value = obj.__dict__[self._name]
        if value.__class__ is str:
            value = obj.__dict__[self._name] = Path(value)
        return value  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: str | Path) -> None:
        obj.__dict__[self._name] = value


@dataclass
class TaskContext:
    """One attempt of a task, prepared by the engine for its runner: where it runs, its log
    files, its resolved inputs and environment. It travels pickled to a worker, which sets
    the callbacks there. Owned by the attempt: the runner appends the pids it starts to
    :attr:`pids` and calls the callbacks on its event loop; the worker reads :attr:`pids`
    and calls :attr:`decide` on that same loop."""

    run_id: str
    task: Task
    attempt: int
    base_dir: Path         # the workflow's folder: relative notebook/module paths resolve here
    inputs: dict[str, Any]  # the task's parameters with references resolved
    # Required (the descriptor gives the class no default), each a str or a Path.
    workdir: _Path = _Path()      # the task's own directory, its cwd
    stdout_path: _Path = _Path()
    stderr_path: _Path = _Path()
    upstream: dict[str, Any] = field(default_factory=dict)  # results of upstream tasks, by name
    params: dict[str, Any] = field(default_factory=dict)    # workflow parameters
    env: dict[str, str] = field(default_factory=dict)       # task.env plus KALE_* variables
    #: processes running the task, filled in by its runner as it starts them: what a
    #: worker samples (CPU, memory, I/O) and suspends or resumes
    pids: list[int] = field(default_factory=list)
    #: set where the task runs under a worker: a runner that runs the task in a Jupyter
    #: kernel calls it with the kernel's connection info (and None when the task is over),
    #: so the manager can let the task's owner attach to the kernel
    on_kernel: Callable[[dict[str, Any] | None], None] | None = field(
        default=None, repr=False, compare=False)
    #: set where the task runs under a worker: an interactive step calls it once it waits
    #: for a person (with its step notebook's path), so the task shows WAITING
    on_waiting: Callable[[dict[str, Any]], None] | None = field(
        default=None, repr=False, compare=False)
    #: set by the runner of a waiting step: the worker calls it with ``"continue"`` or
    #: ``"reject"`` and a reason when the person decides
    decide: Callable[[str, str], None] | None = field(default=None, repr=False, compare=False)

    @property
    def records_path(self) -> Path:
        return self.workdir / RECORDS_FILE

    def text(self, name: str) -> str:
        """The path field ``name`` (``workdir``, ``stdout_path``, ``stderr_path``) as text,
        without making a ``Path`` of it."""
        value = self.__dict__[name]
        return value if value.__class__ is str else str(value)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled with its paths as strings: a context travels to a worker for every
        attempt, and a ``Path`` pickles as its parts (one string each, rebuilt by a parse
        on arrival): 13-16 -> 9-11 us to encode for the worker link, 34 -> 22 us to decode
        (a no-op task's whole engine costs ~300 us of CPU)."""
        text = self.text
        return (_context, (self.run_id, self.task, self.attempt, text("workdir"),
                           text("stdout_path"), text("stderr_path"), str(self.base_dir),
                           self.inputs, self.upstream, self.params, self.env, self.pids,
                           self.on_kernel, self.on_waiting, self.decide))

    def make_workdir(self) -> None:
        """Create the task's directory (done where the task runs), or make it ready for
        another attempt: whatever an earlier attempt whose worker died left running there
        on this host is killed first (:func:`kale.tasks.groups.stop_earlier`: two attempts
        never run in one directory at once), and its records are cleared."""
        workdir = self.text("workdir")
        groups.prepare_workdir(workdir, f"{workdir}/{RECORDS_FILE}")


def _context(run_id: str, task: Task, attempt: int, workdir: str, stdout: str, stderr: str,
             base_dir: str, *rest: Any) -> TaskContext:
    """A :class:`TaskContext` from what its ``__reduce__`` gave (paths as strings)."""
    inputs, upstream, params, env, pids, on_kernel, on_waiting, decide = rest
    return TaskContext(run_id, task, attempt, Path(base_dir), inputs, workdir, stdout,
                       stderr, upstream, params, env, pids, on_kernel, on_waiting, decide)


@dataclass
class Outcome:
    """How one attempt ended, as its runner (or a worker's report) tells it; the engine makes
    the task's state and its stored result from it. ``ok`` means the task succeeded; the
    rest is what the views show. :attr:`receipt`, when set, is called once, after the
    engine's record of this outcome is committed."""

    ok: bool
    result: Any = None              # a Python task's return value
    exit_code: int | None = None
    error: str | None = None        # one line for tables and `kale status`
    traceback: str | None = None    # full text for `kale status RUN TASK` and logs
    details: dict[str, Any] = field(default_factory=dict)  # e.g. {"cell_index": 3}
    artifacts: dict[str, str] = field(default_factory=dict)  # e.g. {"notebook": path}
    #: set by executors whose outcomes arrive as reports: called once the engine's record
    #: of this outcome is committed (the report is then acknowledged to its sender)
    receipt: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: values recorded with ``kale.record``, when the executor read them where the task
    #: ran (None: the engine reads them from the task's directory)
    records: dict[str, Any] | None = None
    #: the user code the task ran (:func:`kale.tasks.usercode.loaded`: file -> content
    #: hash), stored with its result; a result is reused only while those files are unchanged
    code: dict[str, str] | None = None
    #: the attempt ran where this engine cannot see its directory (at another site): its
    #: declared outputs were checked there, and ``result`` is complete as given
    elsewhere: bool = False


class TaskRunner(abc.ABC):
    """Runs tasks of one kind. One instance serves a whole run; it may keep warm resources
    (worker processes, kernels) between tasks."""

    kind: str
    #: it makes each task's directory where it runs the task, as
    #: :meth:`TaskContext.make_workdir` would (else the engine or worker makes it first)
    makes_workdir: bool = False

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        #: its caller may send it tasks beyond its free slots, up to :meth:`room`, and
        #: handles :class:`Requeue` (set by the local executor)
        self.ahead = False

    def room(self) -> int:
        """How many tasks it could take now beyond its free slots, queued where they will
        run (0: it runs each task it is given at once, or not at all)."""
        return 0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Warm up (start worker processes, kernels). Called once before the first task."""

    @abc.abstractmethod
    async def run(self, ctx: TaskContext) -> Outcome:
        """Run one attempt of a task to completion."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything started."""
