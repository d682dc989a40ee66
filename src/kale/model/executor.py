"""Where tasks run: the ``executor:`` of a workflow or a task.

``local`` runs tasks on this machine (in the engine's process, or in the manager's local
workers). The name of a batch scheduler (one of the ``kale.schedulers`` registry,
:func:`batch_kinds`: Kale's ``slurm``, ``pbs``, ``lsf``, ``flux``, ``cobalt`` and any
installed as a plug-in) runs them through that scheduler, in one of two modes:

- ``job`` (the default): one batch job per task, sized by the task's ``resources``;
- ``pilot``: batch jobs that each run a Kale worker, which runs many tasks. The manager
  sizes the pilots from the backlog within the limits given here and idle pilots end.

In YAML: ``executor: slurm``, or a mapping such as
``{kind: slurm, mode: pilot, nodes: 1, walltime: "00:30:00", queue: debug, max_jobs: 2}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kale import plugins
from kale.model.resources import walltime_seconds

#: the executor that is not a batch scheduler
LOCAL = "local"
MODES = ("job", "pilot")
#: pilot settings: the allocation of each pilot job, and the limits of the elastic pool
PILOT_KEYS = ("nodes", "walltime", "queue", "account", "options", "slots", "max_jobs",
              "max_nodes", "idle")
EXECUTOR_KEYS = ("kind", "mode", *PILOT_KEYS)
PILOT_DEFAULTS: dict[str, Any] = {"nodes": 1, "walltime": "01:00:00", "max_jobs": 4,
                                  "max_nodes": 4, "idle": 30}


def batch_kinds() -> tuple[str, ...]:
    """The batch schedulers: the ``kale.schedulers`` registry (:mod:`kale.plugins`)."""
    return tuple(n for n in plugins.names(plugins.SCHEDULERS) if n != LOCAL)


def executor_kinds() -> tuple[str, ...]:
    """Every executor name: ``local``, then the batch schedulers."""
    return (LOCAL, *batch_kinds())


@dataclass(slots=True)
class ExecutorSpec:
    """Where tasks run: ``kind`` is :data:`LOCAL` or a batch scheduler's name."""

    kind: str = LOCAL
    mode: str = "job"
    #: pilot settings (:data:`PILOT_KEYS`); ignored in job mode, where the task's own
    #: ``resources`` size its job
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> bool:
        return self.kind in batch_kinds()

    @property
    def pilot(self) -> bool:
        return self.batch and self.mode == "pilot"

    def setting(self, key: str) -> Any:
        """A pilot setting, or its default."""
        return self.options.get(key, PILOT_DEFAULTS.get(key))

    def to_value(self) -> str | dict[str, Any]:
        """The YAML form: just the name when nothing else is set."""
        if self.mode == "job" and not self.options:
            return self.kind
        out: dict[str, Any] = {"kind": self.kind}
        if self.mode != "job":
            out["mode"] = self.mode
        out.update(self.options)
        return out

    @classmethod
    def parse(cls, value: Any) -> tuple[ExecutorSpec, list[tuple[tuple[str, ...], str]]]:
        """From ``"slurm"`` or a mapping; returns the spec and ``(path, message)``
        problems (the path below ``executor``)."""
        if isinstance(value, ExecutorSpec):
            return value, value.problems()
        if isinstance(value, str):
            spec = cls(value)
            return spec, spec.problems()
        if not isinstance(value, dict):
            return cls(), [((), "must be an executor name or a mapping with 'kind'")]
        problems: list[tuple[tuple[str, ...], str]] = []
        for k in value:
            if k not in EXECUTOR_KEYS:
                problems.append(((str(k),), f"unknown key {k!r}; allowed: "
                                 + ", ".join(EXECUTOR_KEYS)))
        options = {k: v for k, v in value.items() if k in PILOT_KEYS}
        spec = cls(value.get("kind", LOCAL), value.get("mode") or "job", options)
        return spec, problems + spec.problems()

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        out: list[tuple[tuple[str, ...], str]] = []
        if self.kind not in executor_kinds():
            out.append((("kind",), f"unknown executor {self.kind!r}; known: "
                        + ", ".join(executor_kinds())))
        if self.mode not in MODES:
            out.append((("mode",), f"must be 'job' or 'pilot', got {self.mode!r}"))
        elif self.mode == "pilot" and self.kind == LOCAL:
            out.append((("mode",), "pilot mode needs a batch scheduler as 'kind' "
                        f"({', '.join(batch_kinds())})"))
        for k in ("nodes", "slots", "max_jobs", "max_nodes"):
            v = self.options.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                out.append(((k,), f"must be an integer >= 1, got {v!r}"))
        idle = self.options.get("idle")
        if idle is not None and (not isinstance(idle, int | float) or isinstance(idle, bool)
                                 or idle < 0):
            out.append((("idle",), f"must be a number of seconds >= 0, got {idle!r}"))
        wt = self.options.get("walltime")
        if wt is not None:
            try:
                walltime_seconds(str(wt))
            except ValueError as e:
                out.append((("walltime",), str(e)))
        for k in ("queue", "account"):
            v = self.options.get(k)
            if v is not None and not isinstance(v, str):
                out.append(((k,), f"must be a string, got {v!r}"))
        opts = self.options.get("options")
        if opts is not None and (not isinstance(opts, list)
                                 or not all(isinstance(o, str) for o in opts)):
            out.append((("options",), "must be a list of strings"))
        return out
