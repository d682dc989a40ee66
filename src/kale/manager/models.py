"""Request bodies of the manager API (what each route answers is in
:mod:`kale.manager.schemas`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Submit(BaseModel):
    """A workflow to run: its canonical dict (``Workflow.to_dict(for_store=True)``)."""

    model_config = ConfigDict(extra="forbid")

    workflow: dict[str, Any]
    base_dir: str
    params: dict[str, Any] = Field(default_factory=dict)
    only: list[str] = Field(default_factory=list)
    from_: list[str] = Field(default_factory=list, alias="from")
    until: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    force: bool = False
    rerun_of: str | None = None
    jobs: int | None = Field(default=None, ge=1, le=4096)
    #: where tasks without an executor of their own run: "slurm", or a mapping such as
    #: {"kind": "slurm", "mode": "pilot"} (None: the workflow's own choice)
    executor: str | dict[str, Any] | None = None


class Rerun(BaseModel):
    """Run a run's workflow again: its failed tasks (``failed``), a selection of its
    tasks (``only``), or everything from some tasks down (``from``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    failed: bool = False
    only: list[str] = Field(default_factory=list)
    from_: list[str] = Field(default_factory=list, alias="from")
    force: bool = False


class StartWorkers(BaseModel):
    """Start workers by hand: ``count`` local worker processes, or ``count`` pilot jobs
    of a batch scheduler (``kind``) sized by ``nodes``, ``walltime``, ``queue``..."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "local"
    count: int = Field(default=1, ge=1, le=64)
    slots: int | None = Field(default=None, ge=1, le=4096)
    nodes: int = Field(default=1, ge=1, le=10_000)
    walltime: str = "00:30:00"
    queue: str | None = None
    account: str | None = None
