"""The ``kale-task`` kernel: opening a notebook on it attaches to the kernel of a running
Kale task instead of starting a new one (a jupyter_client kernel provisioner).

JupyterLab starts a notebook's kernel in the notebook's folder. A step notebook lives in
its task's directory, ``$KALE_HOME/runs/RUN/TASK/``, so that folder says which task's
kernel to attach to (a kernelspec's ``metadata.kernel_provisioner.config`` may name
``run``, ``task`` and ``home`` instead). The connection info comes from the manager with
the user's token; nothing is launched, and stopping this "kernel" only lets go of it: the
kernel belongs to the task (it answers shutdown requests without obeying them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase


def locate(cwd: str | None, config: dict[str, Any]) -> tuple[Path, str, str]:
    """``(Kale home, run id, task)`` from the provisioner's config or the notebook's folder.
    A step notebook brought here from a site (``kale step RUN TASK --site NAME``) is in
    ``$KALE_HOME/sites/NAME/runs/RUN/TASK/``: its "home" is ``$KALE_HOME/sites/NAME``."""
    if config.get("run") and config.get("task"):
        home = Path(config.get("home") or os.environ.get("KALE_HOME") or "~/.kale")
        return home.expanduser(), str(config["run"]), str(config["task"])
    if not cwd:
        raise RuntimeError("the kale-task kernel attaches to the task whose directory the "
                           "notebook is in; open a step notebook (runs/RUN/TASK/step.ipynb)")
    path = Path(cwd).resolve()
    if path.parent.parent.name != "runs":
        raise RuntimeError(f"{path} is not a task directory ($KALE_HOME/runs/RUN/TASK): the "
                           "kale-task kernel only attaches to running Kale tasks")
    return path.parent.parent.parent, path.parent.name, path.name


class TaskKernelProvisioner(KernelProvisionerBase):
    """Attach to a running task's kernel (see the module's docstring)."""

    _info: dict[str, Any] | None = None
    _where: tuple[str, str, str] | None = None
    _tunnel: Any = None  # to a kernel on another host

    @property
    def has_process(self) -> bool:
        return self._info is not None

    async def poll(self) -> int | None:
        return None if self._info is not None else 0

    async def wait(self) -> int | None:
        return 0

    async def send_signal(self, signum: int) -> None:
        """Interrupts and signals are not passed on: the task is Kale's to stop."""

    async def kill(self, restart: bool = False) -> None:
        self._info = None

    async def terminate(self, restart: bool = False) -> None:
        self._info = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        from kale.client.remote import Client
        from kale.kernels.attach import reachable

        home, run, task = locate(kwargs.get("cwd"), dict(self.config or {}))
        self._where = (str(home), run, task)
        if home.parent.name == "sites" and (home.parent.parent / "sites.json").is_file():
            # a step of a run at a site (kale step --site): through the site's SSH
            self._info, self._tunnel = _at_site(home.parent.parent, home.name, run, task)
        else:
            with Client(home=home) as client:
                info = client.kernel_info(run, task)
            self._info, self._tunnel = reachable(info)
        kwargs = await super().pre_launch(**kwargs)
        kwargs.setdefault("cmd", list(self.kernel_spec.argv))
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert self._info is not None
        info = dict(self._info)
        info["key"] = str(info["key"]).encode()
        return info

    async def cleanup(self, restart: bool = False) -> None:
        if not restart:
            self._info = None
            if self._tunnel is not None:
                self._tunnel.close()
                self._tunnel = None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info["kale"] = list(self._where) if self._where else None
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        where = provisioner_info.get("kale")
        if where:
            self._where = (str(where[0]), str(where[1]), str(where[2]))


def _at_site(home: Path, site: str, run: str, task: str) -> tuple[dict[str, Any], Any]:
    """The connection info of a task's kernel at ``site`` (of the Kale home ``home``), and
    the tunnel through the site's SSH connection that reaches it."""
    from kale.sites.kernels import KernelForwards
    from kale.sites.site import Site

    where = Site.named(site, home)
    with where.client() as client:
        info = client.kernel_info(run, task)
    tunnel = KernelForwards(where, info)  # forwards held by the site's master
    return tunnel.info(info), tunnel
