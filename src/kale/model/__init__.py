"""The model layer: workflows, tasks, resources, references, selection, states. No I/O."""

from kale.model.refs import Ref
from kale.model.resources import Resources
from kale.model.selection import Selection
from kale.model.states import RunState, TaskState
from kale.model.workflow import Task, Workflow

__all__ = ["Ref", "Resources", "RunState", "Selection", "Task", "TaskState", "Workflow"]
