"""Jupyter widgets for watching and steering runs: each view stands alone, and
:class:`Dashboard` puts them together.

- :class:`DagView`: the workflow top-down, coloured by state, live; details of a task;
  run a selection, run from a task, retry what failed, cancel.
- :class:`LogView`: a task's stdout or stderr, followed.
- :class:`ResourceView`: CPU, memory (and GPU) per task or per worker.
- :class:`QueueView`: your batch jobs and the scheduler's partitions.
- :class:`WorkersView`: workers and pilot jobs; start and stop them.
- :class:`RunsView`: runs and their states; open one.
- :class:`Login`: connect to a manager with a token, or through SSH.

Live views are fed by the manager's event stream (one per run, shared); their JavaScript
and CSS are files inside this package, so nothing is fetched from the network."""

from kale.widgets.dag import DagView
from kale.widgets.dashboard import Dashboard
from kale.widgets.feed import Feed
from kale.widgets.layout import dag_svg, layout
from kale.widgets.log import LogView
from kale.widgets.login import Login
from kale.widgets.queue import QueueView
from kale.widgets.resources import ResourceView
from kale.widgets.runs import RunsView
from kale.widgets.source import ManagerSource, StoreSource
from kale.widgets.workers import WorkersView

__all__ = [
           "DagView",
           "Dashboard",
           "Feed",
           "LogView",
           "Login",
           "ManagerSource",
           "QueueView",
           "ResourceView",
           "RunsView",
           "StoreSource",
           "WorkersView",
           "dag_svg",
           "layout",
]
