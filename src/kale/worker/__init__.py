"""The Kale worker: one per job, runs and monitors tasks for a manager (``kale worker``)."""

from __future__ import annotations

from kale.worker.agent import WorkerAgent

__all__ = ["WorkerAgent"]
