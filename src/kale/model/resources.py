"""What a task asks of the machine it runs on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$|^(\d+)$")
_MEMORY = re.compile(r"\d+(?:\.\d+)?\s*[KMGTP]?i?B?", re.IGNORECASE)


def walltime_seconds(text: str) -> int:
    """``"01:30:00"`` -> 5400; ``"2-00:00:00"`` -> 172800; ``"90"`` -> 90 minutes, as Slurm."""
    m = _WALLTIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"walltime {text!r} is not [D-]HH:MM:SS or minutes")
    if m.group(5):
        return int(m.group(5)) * 60
    days = int(m.group(1) or 0)
    return ((days * 24 + int(m.group(2))) * 60 + int(m.group(3))) * 60 + int(m.group(4))


@dataclass(slots=True)
class Resources:
    """What a task asks of the machine: ``nodes``, ``ranks`` per node, ``cpus`` and ``gpus`` per
    rank, memory, walltime, and the batch queue, account and extra scheduler options.
    Plain values as written in the workflow: they are not checked when made;
    :meth:`problems` says what is wrong, and :meth:`to_dict` writes only what differs from
    the defaults."""

    nodes: int = 1
    #: processes (MPI ranks) per node; ``cpus`` and ``gpus`` are per rank
    ranks: int = 1
    cpus: int = 1
    gpus: int = 0
    memory: str | None = None
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    options: list[str] = field(default_factory=list)

    FIELDS = ("nodes", "ranks", "cpus", "gpus", "memory", "walltime", "queue", "account", "options")

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults, in a fixed order."""
        if self.nodes == self.ranks == self.cpus == 1 and self.gpus == 0 \
                and self.memory is self.walltime is self.queue is self.account is None \
                and self.options == []:  # most tasks' (a workflow may have 100,000)
            return {}
        out: dict[str, Any] = {}
        for name, default in zip(self.FIELDS, _DEFAULTS, strict=True):
            value = getattr(self, name)
            if value != default:
                out[name] = list(value) if isinstance(value, list) else value
        return out

    def copy(self) -> Resources:
        """A copy with its own ``options`` list."""
        return Resources(self.nodes, self.ranks, self.cpus, self.gpus, self.memory,
                         self.walltime, self.queue, self.account,
                         list(self.options) if isinstance(self.options, list)
                         else self.options)

    def problems(self) -> list[tuple[str, str]]:
        """``(field, message)`` for each bad value."""
        out = []
        for name in ("nodes", "ranks", "cpus", "gpus"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "gpus" else 1):
                out.append((name, f"must be an integer >= {0 if name == 'gpus' else 1}, got {v!r}"))
        if self.memory is not None and not (
            isinstance(self.memory, str) and _MEMORY.fullmatch(self.memory)
        ):
            out.append(("memory", f"must look like 512M, 4G or 1.5GB, got {self.memory!r}"))
        if self.walltime is not None:
            try:
                walltime_seconds(str(self.walltime))
            except ValueError as e:
                out.append(("walltime", str(e)))
        for name in ("queue", "account"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                out.append((name, f"must be a string, got {v!r}"))
        if not isinstance(self.options, list) or not all(isinstance(o, str) for o in self.options):
            out.append(("options", "must be a list of strings"))
        return out


#: each field's default, in :attr:`Resources.FIELDS`' order (what ``to_dict`` leaves out:
#: a default made per call and ``dataclasses.fields`` took ~5 us a task)
_DEFAULTS = tuple(getattr(Resources(), name) for name in Resources.FIELDS)
