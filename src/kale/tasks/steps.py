"""Interactive steps: the step notebook a person works through, made from the packaged
template ``templates/step.ipynb`` (its markdown description, parameters, the results of
the tasks above it, links to its inputs and outputs), what the step's kernel is given
before the person arrives, and the ``kale-task`` kernelspec the step notebook names (its
provisioner, :mod:`kale.kernels.provisioner`, attaches JupyterLab to the step's kernel)."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

import nbformat

from kale.tasks.base import TaskContext

INPUTS_FILE = ".kale-step-inputs.pkl"
#: the kernelspec (and provisioner) name step notebooks give
KERNEL_NAME = "kale-task"


def namespace(ctx: TaskContext) -> dict[str, Any]:
    """What the step's kernel holds when the person arrives: the workflow's parameters,
    the results of the tasks above it by their names, and the step's own parameters."""
    return {**ctx.params, **ctx.upstream, **ctx.inputs}


def load_code(ctx: TaskContext) -> str:
    """Code that loads :func:`namespace` into the kernel (written to a file first: values
    need not have a source form)."""
    from kale.serial import dumps  # pickle, else cloudpickle

    path = ctx.workdir / INPUTS_FILE
    path.write_bytes(dumps(namespace(ctx)))
    return (f"import pickle as _kale_p\nwith open({str(path)!r}, 'rb') as _kale_f:\n"
            "    globals().update(_kale_p.load(_kale_f))\ndel _kale_p, _kale_f\n")


def step_notebook(ctx: TaskContext, user: Any | None) -> Any:
    """The step notebook: the template's cells filled in, with the task's own notebook's
    cells (``user``) between the introduction and the decision."""
    text = files("kale.tasks").joinpath("templates/step.ipynb").read_text("utf-8")
    nb = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    task = ctx.task
    interactive = task.interactive or {}
    timeout = interactive.get("timeout")
    then = "continued" if interactive.get("on_timeout") == "continue" else "rejected"
    values = {
        "task": task.name, "run": ctx.run_id,
        "description": task.description or "_(no description)_",
        "timeout_note": (f"\n\nIf nobody decides within {timeout:g} s, the step is {then} "
                         "automatically." if timeout else ""),
        "parameters": _table(ctx.inputs) or "_(none)_",
        "upstream": _table(ctx.upstream) or "_(none)_",
        "outputs": "\n".join(f"- [`{o}`]({ctx.workdir / o})" for o in task.outputs)
        or "_(none declared)_",
        "workdir": str(ctx.workdir),
        "names_list": repr(sorted(namespace(ctx))),
    }
    for cell in nb.cells:
        cell.source = Template(cell.source).safe_substitute(values)
    if user is not None:
        head, tail = nb.cells[:4], nb.cells[4:]
        nb.cells = head + [copy.deepcopy(c) for c in user.cells] + tail
    # JupyterLab opens it on the ``kale-task`` kernel: the step's own, attached to.
    nb.metadata["kernelspec"] = {"name": "kale-task", "display_name": "Kale task (attach)",
                                 "language": "python"}
    nb.metadata["kale"] = {"run_id": ctx.run_id, "task": task.name, "attempt": ctx.attempt,
                           "step": True}
    return nb


def _table(values: dict[str, Any]) -> str:
    if not values:
        return ""
    rows = ["| name | value |", "|---|---|"]
    for k, v in values.items():
        try:
            shown = json.dumps(v, default=repr)
        except Exception:
            shown = repr(v)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        rows.append(f"| `{k}` | `{shown.replace('|', '¦')}` |")
    return "\n".join(rows)


def kernelspec() -> dict[str, Any]:
    """The ``kale-task`` kernelspec: its argv is never run (the provisioner attaches)."""
    return {"argv": ["python", "-c", "raise SystemExit('kale-task kernels attach to a "
                     "running task; they are never started')"],
            "display_name": "Kale task (attach)", "language": "python",
            "metadata": {"kernel_provisioner": {"provisioner_name": KERNEL_NAME, "config": {}}}}


def install_kernelspec(user: bool = True, prefix: str | None = None) -> str:
    """Install the ``kale-task`` kernelspec (for JupyterLab's launcher and for step
    notebooks, which name it); returns where it went. Idempotent."""
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kernel.json").write_text(json.dumps(kernelspec(), indent=1))
        return str(KernelSpecManager().install_kernel_spec(tmp, KERNEL_NAME, user=user,
                                                           prefix=prefix))
