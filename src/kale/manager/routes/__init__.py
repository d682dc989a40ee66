"""The manager's API, one router per resource: runs (``runs.py``), a run's tasks
(``tasks.py``), workers, batch jobs and the queue (``workers.py``), and the worker link
(``link.py``). Each route gets the manager's parts and the caller through dependencies
(:mod:`kale.manager.context`)."""

from kale.manager.routes import link, runs, tasks, workers

ROUTERS = (runs.router, tasks.router, workers.router, link.router)

__all__ = ["ROUTERS"]
