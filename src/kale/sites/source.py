"""The run interface through a site (:class:`SiteSource`): the site's manager's API over
the forwarded socket, plus what only a site needs: staging the workflow's files before a
submit, and fetching outputs back over SSH."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kale.client.outputs import output_paths
from kale.client.remote import ManagerSource
from kale.model.options import RunOptions
from kale.model.workflow import Workflow
from kale.sites.site import Site


class SiteSource(ManagerSource):
    """A site's manager (:class:`~kale.client.source.RunSource`). Submitting stages the
    workflow's directory first (only what changed) and runs it there; every read goes
    through the site's SSH connection, re-established when it drops (the runs go on at
    the site meanwhile). Closing it leaves the connection up for a while (the next
    command is quick) and the site's manager running."""

    def __init__(self, site: Site) -> None:
        super().__init__(site.client(), owns_client=True)
        self.site = site
        self.where = f"site {site.name}"

    def kernel(self, run_id: str, task: str, *, timeout: float = 10.0) -> Any:
        """The task's kernel, through the site's SSH connection (never directly)."""
        from kale.sites.kernels import site_kernel

        return site_kernel(self.site, self.client, run_id, task, timeout)

    def reconnect(self) -> None:
        """Make the SSH connection (and the forwarded socket) again."""
        self.site.reconnect()

    def submit(self, wf: Workflow, options: RunOptions) -> str:
        staged = self.site.stage(wf.base_dir)
        return self.client.submit_id(wf, options, base_dir=staged.path)

    def fetch(self, run_id: str, task: str, dest: Path) -> list[Path]:
        task_dir, patterns = output_paths(self, run_id, task)
        self.site.fetch([f"{task_dir}/{p.rstrip('/')}" for p in patterns], dest)
        return sorted(dest / Path(p.rstrip("/")).name for p in patterns
                      if not any(c in p for c in "*?["))

    def step_notebook(self, run_id: str, task: str, home: Path) -> Path:
        """Bring the step notebook of a waiting interactive step here, into
        ``home/sites/SITE/runs/RUN/TASK/`` (opened there, its ``kale-task`` kernel attaches
        to the step's kernel at the site, through SSH); its path."""
        run = self.status(run_id, tasks=False)["run"]
        remote = f"{str(run['run_dir']).rstrip('/')}/{task}/step.ipynb"
        local = home / "sites" / self.site.name / "runs" / run["id"] / task
        local.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.site.fetch([remote], local)
        return Path(local, "step.ipynb")

    def __repr__(self) -> str:
        return f"<SiteSource {self.site.name}>"


def open_site(name: str, home: str | Path | None = None) -> SiteSource:
    """The run interface of the site ``name`` (of this home's sites), over
    :func:`shared_site`."""
    return SiteSource(shared_site(name, home))


def shared_site(name: str, home: str | Path | None = None) -> Site:
    """The site ``name`` of this home's sites, as this process uses it: a process connects
    to a site once (its probe starts a Python there); later users share that
    :class:`Site`, whose clients re-attach by themselves when the connection drops or its
    manager restarts. A site redefined meanwhile (``kale site add``) is connected anew."""
    from kale.config import kale_home
    from kale.sites import registry

    config = registry.get(name, home)
    key = (str(kale_home(home)), name)
    with _LOCK:
        site = _CONNECTED.get(key)
        if site is None or site.config != config:
            site = _CONNECTED[key] = Site(config)
    return site


#: the sites this process connected to, by (Kale home, name)
_CONNECTED: dict[tuple[str, str], Site] = {}
_LOCK = threading.Lock()
