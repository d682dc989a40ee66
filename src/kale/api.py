"""Kale's public face: the model's :class:`Workflow` with the conveniences a notebook
expects (``wf.run()``, ``wf.to_yaml()``, ``Workflow.from_yaml()``), the run handle with
its dashboard, the manager :class:`Client`, and ``get_run``/``runs``.

This module sits below every layer (docs/architecture.md): the model stays pure, and
these conveniences reach the spec, client, manager and widgets layers from here. A run,
wherever it lives, is one handle type (:class:`Run`) over the run interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kale.client import local, remote
from kale.client import run as handle
from kale.client.source import RunSource
from kale.model import workflow as model
from kale.model.options import RunOptions


class Run(handle.Run):
    """A run of a workflow (see :class:`kale.client.run.Run`), with its dashboard."""

    def dashboard(self) -> Any:
        """A live :class:`kale.widgets.Dashboard` of this run (in Jupyter)."""
        from kale.widgets import Dashboard

        return Dashboard(self)


class Client(remote.Client):
    """A Kale manager (see :class:`kale.client.remote.Client`); its runs are :class:`Run`
    handles."""

    handle = Run


class Workflow(model.Workflow):
    """A workflow of shell, Python and notebook tasks (see
    :class:`kale.model.workflow.Workflow`), which can run itself and read and write YAML."""

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The workflow as canonical YAML (written to ``path`` if given)."""
        from kale.spec import dump_yaml

        text = dump_yaml(self.to_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> Workflow:
        """Load a workflow from a YAML file path (or YAML text containing a newline)."""
        from kale.spec import load_workflow

        wf = load_workflow(source, cls=cls)
        assert isinstance(wf, cls)
        return wf

    def run(self, *, params: dict[str, Any] | None = None, only: Any = None,
            from_: Any = None, until: Any = None, tags: Any = None, force: bool = False,
            jobs: int | None = None, executor: str | dict[str, Any] | None = None,
            rerun_of: str | None = None, manager: bool = False,
            site: str | None = None, home: str | Path | None = None) -> Run:
        """Start a run and return its :class:`Run` handle at once.

        ``params`` override the workflow's parameters; ``only``, ``from_``, ``until``,
        ``tags`` select tasks (names or tasks); ``force`` re-runs what could be reused;
        ``jobs`` caps tasks at once; ``executor`` says where tasks without their own run;
        ``rerun_of`` repeats a run's unsucceeded tasks; ``home`` is the Kale home.

        The run is driven by a thread of this process, unless it uses a batch executor or
        has interactive steps, or ``manager=True``: then this home's manager (started if
        need be) runs it, and the run outlives the notebook.

        ``site``: run it at that site (``kale site add``) over SSH: the workflow's
        directory is copied there (only what changed) and the site's manager runs it;
        the handle is the same, and re-attaches when the connection drops. A workflow
        whose tasks name sites of their own (``site=`` on a task) is driven by this
        process: each such task runs at its site, the others here, and a transfer task
        moves declared outputs between places."""
        options = RunOptions.of(params=params, only=only, from_=from_, until=until,
                                tags=tags, force=force, jobs=jobs, executor=executor,
                                rerun_of=rerun_of)
        source: RunSource
        if site is not None:
            from kale.sites.source import open_site

            source = open_site(site, home)
        elif self.uses_sites():
            from kale.sites.across import CrossSiteSource

            source = CrossSiteSource(home)
        else:
            source = remote.open_source(home, manager=manager or self.needs_manager(executor))
        try:
            run_id = source.submit(self, options)
        except BaseException:
            source.close()
            raise
        return Run(source, run_id, owns_source=isinstance(source, remote.ManagerSource))


def get_run(run_id: str | None = None, *, home: str | Path | None = None) -> Run:
    """Re-attach to a run by id (a unique prefix, or ``latest``); the newest run if no id
    is given. The handle reads the home's store, whoever drives the run."""
    source = local.EmbeddedSource(home)
    return Run(source, source.status(run_id or "latest", tasks=False)["run"]["id"])


def runs(*, home: str | Path | None = None, limit: int = 50) -> list[Run]:
    """The home's runs, newest first."""
    source = local.EmbeddedSource(home)
    return [Run(source, doc["id"]) for doc in source.runs(limit)]
