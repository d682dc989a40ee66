"""Notebook tasks: a notebook executed as papermill executes it, on a fresh Jupyter
kernel started ahead of demand.

As papermill: the kernel is the task's ``kernel``, else the notebook's kernelspec (an
unknown one fails the task); parameters are injected in a cell tagged
``injected-parameters`` after the cell tagged ``parameters``, or at the top when there is
none (the task's log says so); ``sys.exit()``, ``sys.exit(0)`` and ``raise SystemExit``
stop the notebook cleanly (later cells do not run, the task succeeds), any other exit
code fails it. The kernel runs with the task's directory as cwd, the task's environment
(``$KALE_RECORD_FILE`` included, so ``kale.record`` works) and the workflow folder at the
head of ``sys.path``. Stream outputs are appended to the task's log files as they arrive,
and the executed notebook, outputs included, is saved in the task's directory, also when a
cell fails, the task times out or is cancelled (:func:`left_behind` finds it then).

Each task gets a kernel no other task used, from a :class:`~kale.tasks.kernels.KernelPool`
that starts them ahead of demand; a task that opted into reusing kernels
(:func:`~kale.tasks.kernels.kernel_reuse`) may get one that earlier such tasks used.
After a successful task, the manifest of the user code its kernel loaded goes with the
outcome (``Outcome.code``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode

from kale.errors import KaleError
from kale.model.kernels import UnknownKernel, choose_kernel
from kale.tasks._notebook_params import ParameterError, has_parameters_cell, inject
from kale.tasks.base import Outcome, TaskContext, TaskRunner
from kale.tasks.kernels import (
    REUSE_ENV,
    Kernel,
    KernelFailed,
    KernelPool,
    kernel_reuse,
)
from kale.tasks.usercode import content_hash

log = logging.getLogger("kale.notebook")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class _Logs:
    """The task's stdout/stderr log files, written as outputs arrive."""

    def __init__(self, ctx: TaskContext) -> None:
        self.out: IO[str] = open(ctx.stdout_path, "a", encoding="utf-8",  # noqa: SIM115
                                 errors="replace")
        try:
            self.err: IO[str] = open(ctx.stderr_path, "a", encoding="utf-8",  # noqa: SIM115
                                     errors="replace")
        except BaseException:
            self.out.close()
            raise

    def write(self, stream: IO[str], text: str) -> None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as e:  # a full disk must not stop the notebook
            log.debug("cannot write a task log: %s", e)

    def message(self, msg: dict[str, Any]) -> None:
        kind, content = msg.get("msg_type"), msg.get("content") or {}
        if kind == "stream":
            stream = self.err if content.get("name") == "stderr" else self.out
            self.write(stream, str(content.get("text", "")))
        elif kind == "error":
            tb = "\n".join(content.get("traceback") or []) or \
                f"{content.get('ename')}: {content.get('evalue')}"
            self.write(self.err, strip_ansi(tb).rstrip("\n") + "\n")

    def close(self) -> None:
        self.out.close()
        self.err.close()


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """nbclient's own log lines at DEBUG: what they report (a dead kernel, a timeout)
    reaches the user through the task's outcome instead."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


class _Client(NotebookClient):
    """nbclient's executor, with every output also sent to the task's logs as it arrives."""

    def __init__(self, nb: NotebookNode, km: Any, logs: _Logs, **kw: Any) -> None:
        super().__init__(nb, km=km, log=_Quiet(log, {}), **kw)
        self._logs = logs
        self._pollers: set[asyncio.Task[Any]] = set()

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        self._logs.message(msg)
        return super().output(outs, msg, display_id, cell_index)

    async def _async_poll_kernel_alive(self) -> None:
        # nbclient starts this poller per cell and leaves it running when the cell is
        # cancelled; keep hold of it so stop_polling() can end it.
        task = asyncio.current_task()
        if task is not None:
            self._pollers.add(task)
        try:
            await super()._async_poll_kernel_alive()
        finally:
            if task is not None:
                self._pollers.discard(task)

    def stop_polling(self) -> None:
        for task in list(self._pollers):
            task.cancel()


#: seconds a step's kernel stays after the decision (the deciding cell gets its reply)
STEP_GRACE = 3.0


class NotebookRunner(TaskRunner):
    """Runs notebook tasks (and Python tasks that name a kernel) on Jupyter kernels from a
    :class:`KernelPool` (see the module's text).

    Promises: a task gets a kernel no task used unless it opted into reuse, and a used
    kernel serves again only after a success, once reset, and while the user code it loaded
    is unchanged on disk; a kernel kept for debugging (``debug_for``) or by an interactive
    step is never reused; a task stopped by timeout or cancel has its kernel killed and its
    notebook saved as far as it ran.

    Threads: one event loop (the engine's, or the worker's) calls every method; up to
    ``slots`` tasks run at once on it."""

    kind = "notebook"

    def __init__(self, slots: int = 1, pool_size: int | None = None, *,
                 default_kernel: str = "python3", max_uses: int = 20,
                 ahead: int | None = None, reuse: bool | None = None) -> None:
        """``slots`` tasks at once; ``ahead`` fresh kernels kept started beyond those in
        use (default: ``pool_size`` or ``slots``, plus up to 4 more); ``reuse`` the
        default for tasks that do not set ``KALE_KERNEL_REUSE`` (None: that variable in
        this process's environment, else no reuse)."""
        super().__init__(slots)
        self.lingering: set[asyncio.Task[None]] = set()  # failed tasks' kernels, kept
        size = slots if pool_size is None else pool_size
        if ahead is None and pool_size is not None:
            ahead = pool_size
        self.pool = KernelPool(size, default=default_kernel, max_uses=max_uses, ahead=ahead)
        self.reuse_default = None if reuse is None else ("1" if reuse else "0")

    async def start(self) -> None:
        """Warm the pool. A kernel that cannot start does not stop the run: each notebook
        task then fails with the reason."""
        try:
            await self.pool.start()
        except KaleError as e:
            log.warning("notebook kernels could not be started: %s", e)

    async def close(self) -> None:
        for t in list(self.lingering):
            t.cancel()
        await asyncio.gather(*self.lingering, return_exceptions=True)
        await self.pool.close()

    async def run(self, ctx: TaskContext) -> Outcome:
        try:
            reuse = kernel_reuse(ctx.env, self.reuse_default
                                 if self.reuse_default is not None
                                 else os.environ.get(REUSE_ENV))
        except KaleError as e:
            return Outcome(ok=False, exit_code=1, error=str(e))
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        if ctx.task.kind == "python":  # a Python task run in a kernel: one cell calls it
            from kale.tasks.python_kernel import call_notebook, python_outcome

            kernel_name, source_of = choose_kernel(ctx.task.kernel, None, self.pool.default)
            try:
                self.pool.check(kernel_name, source_of)
            except UnknownKernel as e:
                return Outcome(ok=False, exit_code=1, error=str(e))
            call = ctx.workdir / ".kale-call.ipynb"
            outcome = await self._run_notebook(ctx, kernel_name, call_notebook(ctx), [None],
                                               call, call, reuse=reuse)
            return python_outcome(ctx, outcome)
        source = ctx.base_dir / str(ctx.task.target)
        if not source.is_file():
            return Outcome(ok=False, exit_code=1, error=f"notebook not found: {source}")
        try:
            data = source.read_bytes()  # what runs: its hash goes with the result
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nb = nbformat.reads(data.decode("utf-8"),  # type: ignore[no-untyped-call]
                                    as_version=4)
        except Exception as e:
            return Outcome(ok=False, exit_code=1,
                           error=f"cannot read notebook {source}: {type(e).__name__}: {e}")
        kernel_name, source_of = choose_kernel(ctx.task.kernel, nb.metadata, self.pool.default)
        try:
            self.pool.check(kernel_name, source_of)
        except UnknownKernel as e:
            return Outcome(ok=False, exit_code=1, error=f"{e}; name an installed kernel "
                           "with the task's kernel: setting")
        notes = []
        if ctx.inputs and not has_parameters_cell(nb):
            notes.append(f"kale: {source.name} has no cell tagged 'parameters': its "
                         f"parameters ({', '.join(map(str, ctx.inputs))}) were injected at "
                         "the top, as papermill does\n")
        try:
            origin = inject(nb, ctx.inputs, ctx.workdir)
        except ParameterError as e:
            return Outcome(ok=False, exit_code=1, error=str(e))
        saved = _output_path(ctx.workdir, source)
        outcome = await self._run_notebook(ctx, kernel_name, nb, origin, source, saved,
                                           reuse=reuse, notes=notes, clean_exit=True)
        if outcome.ok:  # the notebook as it ran (edited since the run was made, say)
            outcome.code = {**(outcome.code or {}), str(source): content_hash(data)}
        return outcome

    async def _run_notebook(self, ctx: TaskContext, kernel_name: str, nb: NotebookNode,
                            origin: list[int | None], source: Path, saved: Path, *,
                            reuse: bool = False, notes: Sequence[str] = (),
                            clean_exit: bool = False) -> Outcome:
        nb.metadata["kale"] = {"run_id": ctx.run_id, "task": ctx.task.name,
                               "attempt": ctx.attempt, "kernel": kernel_name,
                               "source": str(source)}
        artifacts = {"notebook": str(saved)}

        try:
            kernel = await self.pool.acquire(kernel_name, reuse=reuse)
        except UnknownKernel as e:
            return Outcome(ok=False, exit_code=1, error=str(e))
        except KernelFailed as e:
            return Outcome(ok=False, exit_code=1, error=str(e))
        reusable = keep = False
        linger = float(ctx.task.debug_for or 0)
        if kernel.pid is not None:
            ctx.pids.append(kernel.pid)
        try:
            if kernel.language_info:
                nb.metadata["language_info"] = kernel.language_info
            path = [str(ctx.base_dir)]
            if source.parent != ctx.base_dir:
                path.append(str(source.parent))
            await kernel.enter(ctx.workdir, ctx.env, path)
            if ctx.on_kernel is not None:  # a person may attach while the cells run
                ctx.on_kernel(kernel.connection())
            if ctx.task.interactive is not None:
                saved = ctx.workdir / "step.ipynb"
                artifacts = {"notebook": str(saved)}
                outcome, reusable = await self._wait_for_person(ctx, kernel, nb, saved)
                outcome.artifacts.update(artifacts)
                # Let the person's last cell (the one that continued it) get its reply,
                # then let the kernel go; it is not reused (someone may be attached).
                keep, linger = True, STEP_GRACE
                return outcome
            logs = _Logs(ctx)
            try:
                for note in notes:
                    logs.write(logs.err, note)
                outcome, reusable = await self._cells(kernel, nb, origin, logs, clean_exit)
            finally:
                logs.close()
            if outcome.ok:  # the user code it ran: stored with the result, checked on reuse
                kernel.manifest = outcome.code = await kernel.user_code()
            seconds = ctx.task.debug_for
            if seconds and not outcome.ok and "ename" in outcome.details \
                    and ctx.on_kernel is not None:
                keep = True  # a person may look at the failure in the kernel's namespace
                outcome.error = (f"{outcome.error} (its kernel stays up {seconds:g} s: "
                                 f"kale attach {ctx.run_id} {ctx.task.name})")
        except asyncio.CancelledError:
            # Timeout or Ctrl-C: the kernel dies now; what ran so far is saved.
            kernel.kill_now()
            with contextlib.suppress(Exception):
                _save(nb, saved)
            await self.pool.discard(kernel)
            raise
        except KernelFailed as e:
            outcome = Outcome(ok=False, exit_code=1, error=str(e))
        finally:
            if keep:
                self._linger(kernel, ctx, linger)
            else:
                if ctx.on_kernel is not None:
                    ctx.on_kernel(None)
                self.pool.release(kernel, reusable, reuse)  # no-op once discarded
        try:
            _save(nb, saved)
        except Exception as e:
            if outcome.ok:
                return Outcome(ok=False, exit_code=1, error=f"cannot save the executed "
                               f"notebook {saved}: {type(e).__name__}: {e}")
            log.warning("cannot save the executed notebook %s: %s", saved, e)
            return outcome
        outcome.artifacts.update(artifacts)
        return outcome

    def _linger(self, kernel: Kernel, ctx: TaskContext, seconds: float) -> None:
        """Keep a kernel (a failed task's, for ``debug_for``; a step's, briefly) for
        ``seconds``, still announced for attaching, then discard it."""

        async def linger() -> None:
            try:
                await asyncio.sleep(seconds)
            finally:
                if ctx.on_kernel is not None:
                    ctx.on_kernel(None)
                await self.pool.discard(kernel)

        task = asyncio.ensure_future(linger())
        self.lingering.add(task)
        task.add_done_callback(self.lingering.discard)

    async def _wait_for_person(self, ctx: TaskContext, kernel: Kernel, nb: NotebookNode,
                               path: Path) -> tuple[Outcome, bool]:
        """An interactive step: load its inputs into its kernel, write its step notebook,
        say it waits (WAITING), and wait for ``continue`` or ``reject`` (or the timeout's
        default action). Its kernel is not reused afterwards: a person (a JupyterLab
        session) may still be attached to it."""
        from kale.tasks.steps import load_code, step_notebook

        if ctx.on_waiting is None:
            return Outcome(ok=False, exit_code=1, error="interactive steps run on a manager's "
                           "workers (a person continues them through it)"), True
        await kernel.execute(load_code(ctx), 60)
        try:  # so that JupyterLab can open the step notebook on this kernel
            from kale.tasks.steps import install_kernelspec

            install_kernelspec()
        except Exception as e:
            log.warning("cannot install the kale-task kernelspec: %s", e)
        _save(step_notebook(ctx, nb), path)
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[tuple[str, str]] = loop.create_future()

        def decide(action: str, reason: str) -> None:
            if not decided.done():
                decided.set_result((action, reason))

        ctx.decide = decide
        ctx.on_waiting({"notebook": str(path)})
        settings = ctx.task.interactive or {}
        timeout = settings.get("timeout")
        try:
            action, reason = await asyncio.wait_for(decided, timeout)
        except TimeoutError:
            action = str(settings.get("on_timeout", "reject"))
            reason = f"nobody decided within {timeout:g} s"
        if action == "continue":
            return Outcome(ok=True, exit_code=0, details={"decision": "continue",
                                                           **({"reason": reason} if reason
                                                              else {})}), False
        return Outcome(ok=False, exit_code=1, error="rejected" + (f": {reason}" if reason
                                                                   else " by a person"),
                       details={"rejected": True, "decision": "reject"}), False

    async def _cells(self, kernel: Kernel, nb: NotebookNode, origin: list[int | None],
                     logs: _Logs, clean_exit: bool = False) -> tuple[Outcome, bool]:
        """Execute every cell; return the outcome and whether the kernel may be reused.
        With ``clean_exit``, a cell ending in ``SystemExit`` with no code or code 0 stops
        the notebook and the task succeeds (papermill's rule)."""
        client = _Client(nb, kernel.km, logs, timeout=None, kernel_name=kernel.name)
        client.kc = kernel.client
        where: list[int] = [0]

        async def cells() -> tuple[int, CellExecutionError] | None:
            for index, cell in enumerate(nb.cells):
                where[0] = index
                try:
                    await client.async_execute_cell(
                        cell, index, execution_count=client.code_cells_executed + 1)
                except CellExecutionError as e:
                    return index, e
            return None

        # nbclient turns a cancel into DeadKernelError; run the cells in a task of their
        # own so that a cancel of this one reaches the handler in run() untouched.
        inner = asyncio.ensure_future(cells())
        try:
            await asyncio.wait({inner})
        except asyncio.CancelledError:
            kernel.kill_now()
            inner.cancel()
            with contextlib.suppress(BaseException):
                await inner
            client.stop_polling()
            raise
        try:
            failed = inner.result()
        except DeadKernelError:
            user = _user_index(origin, where[0])
            at = f"cell {user}" if user is not None else "the parameters cell"
            logs.write(logs.err, f"the kernel died while running {at}\n")
            return Outcome(ok=False, exit_code=1, error=f"the kernel died while running {at}",
                           details={"cell_index": user}), False
        except Exception as e:  # nbclient could not talk to the kernel
            user = _user_index(origin, where[0])
            return Outcome(ok=False, exit_code=1,
                           error=f"running cell {user}: {type(e).__name__}: {e}",
                           traceback="".join(traceback.format_exception(e)),
                           details={"cell_index": user}), False
        if failed is None:
            return Outcome(ok=True, exit_code=0), True
        index, err = failed
        user = _user_index(origin, index)
        ename, evalue, tb = _error_of(nb.cells[index], err)
        at = f"cell {user}" if user is not None else "parameters cell"
        if clean_exit and ename == "SystemExit" and evalue in ("", "0"):
            logs.write(logs.err, f"kale: {at} exited (SystemExit{f'({evalue})' if evalue else ''}"
                                 "): the notebook stops there and succeeds; later cells do "
                                 "not run, as with papermill\n")
            return Outcome(ok=True, exit_code=0,
                           details={"exited_at": user, "exit_code": evalue or None}), True
        return Outcome(ok=False, exit_code=1, error=f"{at}: {ename}: {evalue}", traceback=tb,
                       details={"cell_index": user, "ename": ename, "evalue": evalue}), False


def _user_index(origin: list[int | None], index: int) -> int | None:
    return origin[index] if 0 <= index < len(origin) else None


def _error_of(cell: NotebookNode, err: CellExecutionError) -> tuple[str, str, str]:
    """ename, evalue and the plain-text traceback of a failed cell."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            tb = "\n".join(out.get("traceback") or [])
            return (str(out.get("ename", err.ename)), str(out.get("evalue", err.evalue)),
                    strip_ansi(tb) or f"{err.ename}: {err.evalue}")
    return err.ename, err.evalue, strip_ansi(err.traceback)


def left_behind(ctx: TaskContext) -> dict[str, str]:
    """The artifacts a task's attempt left in its directory, for the record of an attempt
    that ended without an outcome (a timeout, a cancel): the executed notebook as far as it
    ran, when this attempt saved one. Empty for tasks that are not notebooks, or when the
    directory is not visible from here."""
    if ctx.task.kind != "notebook":
        return {}
    if ctx.task.interactive is not None:
        path = ctx.workdir / "step.ipynb"
    else:
        path = _output_path(ctx.workdir, ctx.base_dir / str(ctx.task.target))
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f).get("metadata", {}).get("kale", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(meta, dict) or (meta.get("run_id"), meta.get("task"),
                                      meta.get("attempt")) != (ctx.run_id, ctx.task.name,
                                                               ctx.attempt):
        return {}  # an earlier attempt's notebook
    return {"notebook": str(path)}


def _output_path(workdir: Path, source: Path) -> Path:
    saved = workdir / source.name
    with contextlib.suppress(OSError):
        if saved.resolve() == source.resolve():  # never overwrite the user's notebook
            saved = workdir / f"{source.stem}.out{source.suffix}"
    return saved


def _save(nb: NotebookNode, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nbformat.write(nb, tmp)  # type: ignore[no-untyped-call]
    tmp.replace(path)
