"""Which kernel a notebook task runs on: papermill's rule (the task's ``kernel``, else the
notebook's kernelspec, else the default), and the error that names a kernel no kernelspec
provides. Pure: the notebook runner and ``kale validate`` both ask it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kale.errors import KaleError

DEFAULT_KERNEL = "python3"
#: what jupyter_client (and so papermill) calls ``python``
PYTHON3 = "python3"
#: kernelspecs that only attach to a running task's kernel (JupyterLab on a step
#: notebook): a notebook saved with one runs on the default kernel
ATTACH_ONLY = ("kale-task",)


class UnknownKernel(KaleError):
    """No installed kernelspec has this name: the notebook task fails, and ``kale validate``
    says so, naming where the name came from (``source``) and the kernels ``available``."""

    def __init__(self, name: str, available: Sequence[str], source: str = "") -> None:
        self.name, self.available, self.source = name, list(available), source
        said = f"{source}; " if source else ""
        super().__init__(f"no such kernel: {name} ({said}installed: "
                         f"{', '.join(available) or 'none'})")


def notebook_kernel(metadata: Mapping[str, Any]) -> str | None:
    """The kernelspec name a notebook's metadata asks for (None: it names none)."""
    spec = metadata.get("kernelspec")
    name = spec.get("name") if isinstance(spec, Mapping) else None
    if not isinstance(name, str) or not name.strip() or name in ATTACH_ONLY:
        return None
    return name


def choose_kernel(task_kernel: str | None, metadata: Mapping[str, Any] | None,
                  default: str = DEFAULT_KERNEL) -> tuple[str, str]:
    """``(kernel name, where it came from)``: the task's ``kernel``, else the notebook's
    kernelspec, else ``default``. ``python`` is ``python3``, as jupyter_client (and so
    papermill) takes it."""
    if task_kernel:
        return kernel_alias(task_kernel), "the task's kernel"
    named = notebook_kernel(metadata or {})
    if named:
        return kernel_alias(named), "the notebook's kernelspec"
    return default, "the default kernel"


def kernel_alias(name: str) -> str:
    """A kernel's name as jupyter_client looks it up (``python`` is ``python3``)."""
    return PYTHON3 if name == "python" else name
