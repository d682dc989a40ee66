"""How to run a workflow: :class:`RunOptions`, the one object that carries a run's options
from where a person gives them (``wf.run(...)``, ``kale run``, the dashboard) to the
engine that honours them, through the manager's API when there is one (``to_json``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kale.model.selection import Selection


def task_names(value: Any) -> list[str]:
    """Task names from a name, a :class:`~kale.model.workflow.Task`, or a list of either."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable):
        value = [value]
    return [str(getattr(v, "name", v)) for v in value]


@dataclass(frozen=True)
class RunOptions:
    """A run's options. ``params`` override the workflow's parameters; ``selection`` says
    which tasks run; ``force`` re-runs tasks whose results could be reused; ``executor``
    is where tasks without an executor of their own run (a name or an executor mapping;
    None: the workflow's own, else local); ``jobs`` caps tasks at once; ``rerun_of``
    names a run whose unsucceeded tasks this run repeats; ``submitted_by`` is the manager
    user the run belongs to (set by the manager, never by a client)."""

    params: Mapping[str, Any] = field(default_factory=dict)
    selection: Selection = field(default_factory=Selection)
    force: bool = False
    executor: str | dict[str, Any] | None = None
    jobs: int | None = None
    rerun_of: str | None = None
    submitted_by: str | None = None

    @classmethod
    def of(cls, *, params: Mapping[str, Any] | None = None, only: Any = None,
           from_: Any = None, until: Any = None, tags: Any = None, force: bool = False,
           executor: str | dict[str, Any] | None = None, jobs: int | None = None,
           rerun_of: str | None = None) -> RunOptions:
        """The options as ``wf.run()`` and ``kale run`` spell them: selections may name
        tasks or give :class:`~kale.model.workflow.Task` objects."""
        return cls(params=dict(params or {}), force=force, executor=executor, jobs=jobs,
                   rerun_of=rerun_of, selection=Selection(
                       task_names(only), task_names(from_), task_names(until),
                       task_names(tags)))

    def but(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (e.g. ``rerun_of`` resolved to a full run id)."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The manager API's fields for these options (``POST /api/runs``); a field left
        at its default is left out."""
        doc: dict[str, Any] = {"params": dict(self.params), **self.selection.to_dict(),
                               "force": self.force, "executor": self.executor,
                               "jobs": self.jobs, "rerun_of": self.rerun_of}
        return {k: v for k, v in doc.items() if v not in (None, [], {}, False)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, submitted_by: str | None = None
                  ) -> RunOptions:
        """The options :meth:`to_json` wrote (as the manager receives them)."""
        return cls(params=dict(doc.get("params") or {}), force=bool(doc.get("force")),
                   executor=doc.get("executor"), jobs=doc.get("jobs"),
                   rerun_of=doc.get("rerun_of"), submitted_by=submitted_by,
                   selection=Selection(list(doc.get("only") or []),
                                       list(doc.get("from") or []),
                                       list(doc.get("until") or []),
                                       list(doc.get("tags") or [])))
