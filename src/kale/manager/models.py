"""Request and response bodies of the manager API, shared by server and client."""

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


class Submitted(BaseModel):
    id: str


class Health(BaseModel):
    status: str
    version: str
    pid: int
