"""Python tasks with a ``kernel``: the function runs inside a Jupyter kernel (in its
subshell), so a person can attach while it runs, as to a notebook task. The task becomes
a one-cell notebook whose cell loads the function and its arguments from a file, calls
it, and writes the return value to a file the runner reads back.

A function defined in a notebook (pickled by value) runs with the kernel's namespace as
its globals: a person attached can read and change the module-level names it uses."""

from __future__ import annotations

import pickle
from typing import Any

import nbformat

from kale.tasks.base import Outcome, TaskContext

CALL_FILE = ".kale-call.pkl"
RESULT_FILE = ".kale-call-result.pkl"

_CELL = """\
def _kale_call(job_path, result_path):
    import pickle, types
    from kale.serial import dumps
    from kale.tasks._pyworker import bind, _load
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    fn = _load(job["func"])
    if not isinstance(job["func"], str):
        space = globals()
        space.update({k: v for k, v in fn.__globals__.items() if not k.startswith("__")})
        fn = types.FunctionType(fn.__code__, space, fn.__name__, fn.__defaults__,
                                fn.__closure__)
    result = fn(**bind(fn, job["inputs"], job["upstream"], job["params"]))
    blob = dumps(result)
    with open(result_path, "wb") as f:
        f.write(blob)
_kale_call(__JOB__, __RESULT__)
"""


def call_notebook(ctx: TaskContext) -> Any:
    """The one-cell notebook that runs the task's function (its call written to a file)."""
    import cloudpickle

    from kale.tasks import pickled

    target = ctx.task.target
    func: str | bytes = target if isinstance(target, str) else pickled.dumps(target)
    job = {"func": func, "inputs": ctx.inputs, "upstream": ctx.upstream,
           "params": ctx.params}
    (ctx.workdir / RESULT_FILE).unlink(missing_ok=True)
    with open(ctx.workdir / CALL_FILE, "wb") as f:
        cloudpickle.dump(job, f)
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    code = _CELL.replace("__JOB__", repr(str(ctx.workdir / CALL_FILE))).replace(
        "__RESULT__", repr(str(ctx.workdir / RESULT_FILE)))
    nb.cells = [nbformat.v4.new_code_cell(code)]  # type: ignore[no-untyped-call]
    return nb


def python_outcome(ctx: TaskContext, out: Outcome) -> Outcome:
    """The notebook's outcome as a Python task's: its return value, and errors worded as
    a Python task words them (``IndexError: ...``, not ``cell 0: ...``)."""
    out.artifacts.pop("notebook", None)
    if not out.ok:
        ename, evalue = out.details.get("ename"), out.details.get("evalue")
        if ename:
            error = out.error or ""
            kept = error[error.index(" (its kernel"):] if " (its kernel" in error else ""
            out.error = f"{ename}: {evalue}{kept}"
        out.details.pop("cell_index", None)
        return out
    try:
        with open(ctx.workdir / RESULT_FILE, "rb") as f:
            out.result = pickle.load(f)
    except FileNotFoundError:
        out.result = None
    return out
