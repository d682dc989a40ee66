"""Choosing which tasks of a workflow a run executes: ``only``, ``from``, ``until``, ``tags``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kale.errors import SelectionError
from kale.model import dag
from kale.model.workflow import Workflow


@dataclass
class Selection:
    """Which tasks of a workflow a run executes: ``only``, ``from``, ``until`` and ``tags``,
    each a list, combined by intersection (empty lists select everything). :meth:`apply`
    raises :class:`~kale.errors.SelectionError` for a name or tag the workflow does not
    have, and for a selection that matches no task."""

    only: list[str] = field(default_factory=list)
    from_: list[str] = field(default_factory=list)
    until: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"only": self.only, "from": self.from_, "until": self.until, "tags": self.tags}

    def apply(self, wf: Workflow) -> set[str]:
        """The selected task names. Criteria combine by intersection:
        ``--from a --until b`` is the tasks on paths from a to b."""
        names = set(wf.tasks)
        for given in (self.only, self.from_, self.until):
            _check_known(wf, given)
        upstream = {n: t.upstream for n, t in wf.tasks.items()} \
            if self.from_ or self.until else {}  # the graph, only when a path is asked for
        if self.only:
            names &= set(self.only)
        if self.from_:
            names &= set(self.from_) | dag.descendants(upstream, self.from_)
        if self.until:
            names &= set(self.until) | dag.ancestors(upstream, self.until)
        if self.tags:
            known = {tag for t in wf.tasks.values() for tag in t.tags}
            missing = [tag for tag in self.tags if tag not in known]
            if missing:
                raise SelectionError(f"no task has tag {missing[0]!r}"
                                     + (f" (tags: {', '.join(sorted(known))})" if known else ""))
            names &= {n for n, t in wf.tasks.items() if set(t.tags) & set(self.tags)}
        if not names:
            raise SelectionError("the selection matches no task")
        return names


def _check_known(wf: Workflow, given: Sequence[str] | Iterable[str]) -> None:
    for name in given:
        if name not in wf.tasks:
            import difflib

            close = difflib.get_close_matches(name, list(wf.tasks), n=1)
            raise SelectionError(f"no task named {name!r} in workflow {wf.name!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else ""))
