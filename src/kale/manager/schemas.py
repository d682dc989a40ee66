"""Response bodies of the manager API: what each route answers, so that ``/openapi.json``
is the contract (request bodies are in :mod:`kale.manager.models`). Routes declare them
with ``response_model=``; FastAPI validates each answer with pydantic on its way out.

Invariants:

- The documents are the dicts the routes have always built (``RunRecord.to_json``,
  ``TaskRecord.to_json``, ``Worker.to_json``, store rows...): these describe them and do
  not reshape them. Hence pydantic-validated typed dicts (``TypedDict``), not models: the
  answer stays a dict (a 10,000-sample page is checked and serialized in less time than
  an untyped ``dict[str, Any]`` took, where models would take about three times as long).
- A key that some answers leave out (``problems``, ``tasks``, a queue job's ``kale``) is
  ``NotRequired``: absent stays absent, never ``null``.
- The published schemas are closed (``additionalProperties: false``): a key a route sends
  must be named here, and ``tests/test_openapi.py`` fails on one that is not. At run time
  such a key is passed on, not dropped and not an error: a client never loses what the
  manager knows for want of a line here.
- What is open-ended by nature (a task's result, a workflow, parameters, a kernel's
  connection file) is ``Any`` or ``dict[str, Any]`` inside a typed envelope.

No ``from __future__ import annotations``: pydantic and FastAPI read these annotations."""

from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic's choice before Python 3.12

from kale.model.states import RunState, TaskState

#: closed in the published schema, passed on at run time (see the module's docstring)
DOCUMENT = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})


# -- errors --------------------------------------------------------------------------------
@with_config(DOCUMENT)
class ProblemDoc(TypedDict):
    """One thing wrong with a workflow (:class:`kale.errors.Problem`)."""

    message: str
    path: list[str | int]


@with_config(DOCUMENT)
class Error(TypedDict):
    """Every 4xx answer: ``detail`` says what is wrong (for a request FastAPI could not
    parse, a list of its findings); a workflow that does not validate also lists its
    ``problems``."""

    detail: str | list[dict[str, Any]]
    problems: NotRequired[list[ProblemDoc]]


_ERROR = {"model": Error}
#: the errors any route of the API may answer (``app._kale_error``, ``HTTPException``,
#: the token check, FastAPI's request validation, the body limit)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "A request Kale cannot carry out (a usage error)"},
    401: {**_ERROR, "description": "No valid user token"},
    404: {**_ERROR, "description": "No such run, task, worker or job (of this user's)"},
    409: {**_ERROR, "description": "Not possible in the current state"},
    413: {**_ERROR, "description": "Request body over the limit"},
    422: {**_ERROR, "description": "Invalid parameters, body or workflow"},
}
#: the same, for a route whose own answer is not JSON (FastAPI would give a ``model``
#: the route's media type; its errors are JSON all the same)
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": doc["description"], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    for code, doc in ERRORS.items()}


# -- runs ----------------------------------------------------------------------------------
@with_config(DOCUMENT)
class Health(TypedDict):
    """`GET /health`: the manager answers, its version and process id."""

    status: str
    version: str
    pid: int


@with_config(DOCUMENT)
class Submitted(TypedDict):
    """A new run (``POST /api/runs``, a rerun)."""

    id: str


@with_config(DOCUMENT)
class RunDoc(TypedDict):
    """A run (``RunRecord.to_json``)."""

    id: str
    workflow: str
    state: RunState
    created_at: float
    ended_at: float | None
    run_dir: str
    params: dict[str, Any]
    #: how it was submitted: selection, force, jobs, executor, rerun_of
    options: dict[str, Any]
    #: the process driving it, while alive
    driven_by_pid: int | None
    message: str | None
    #: the manager user who submitted it (None: made without a manager)
    submitted_by: str | None


@with_config(DOCUMENT)
class TaskDoc(TypedDict):
    """A task of a run (``TaskRecord.to_json``)."""

    name: str
    state: TaskState
    kind: str
    attempts: int
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    duration: float | None
    reason: str | None
    error: str | None
    details: dict[str, Any]
    artifacts: dict[str, str]
    reused_from: str | None
    stdout: str | None
    stderr: str | None
    #: the result when it is JSON (else in ``result_file``, a pickle)
    result: Any
    result_file: str | None
    #: a member of a map (a task the run added as it ran): the map, and its place there
    member_of: NotRequired[str]
    index: NotRequired[int]


@with_config(DOCUMENT)
class RunStatus(TypedDict):
    """A run, how many of its tasks are in each state, and with ``tasks=true`` (the
    default) every task and the id of the run's latest event."""

    run: RunDoc
    #: tasks per state (states with none left out)
    counts: dict[str, int]
    #: what keeps the run from going on that the states do not say (absent: nothing)
    problems: NotRequired[list[str]]
    tasks: NotRequired[list[TaskDoc]]
    #: the events after it are news to ``tasks``
    last_event: NotRequired[int]
    #: with ``states=`` or ``limit=``: each map's (or adding task's) members per state
    maps: NotRequired[dict[str, dict[str, int]]]


@with_config(DOCUMENT)
class RunStates(TypedDict):
    """A run, every task's state by name, and the reason of each task a condition
    skipped: a whole graph's view, without the rest of each task."""

    run: RunDoc
    #: the events after it are news to ``states``
    last_event: int
    #: task name -> its state
    states: dict[str, TaskState]
    #: task name -> why a condition skipped it (tasks SKIPPED by a condition only)
    conditions: dict[str, str]


@with_config(DOCUMENT)
class RunCancelled(TypedDict):
    """A cancelled run and the state it ended in (``RUNNING``: still stopping)."""

    id: str
    state: RunState


# -- a run's tasks -------------------------------------------------------------------------
@with_config(DOCUMENT)
class AttemptDoc(TypedDict):
    """One attempt of a task (a row of the ``attempts`` table)."""

    run_id: str
    task: str
    number: int
    state: str
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    error: str | None
    #: the worker that ran it (manager runs)
    worker: str | None


@with_config(DOCUMENT)
class TaskDetail(TaskDoc):
    """A task's record and what the workflow says of it."""

    description: str
    parameters: dict[str, Any]
    after: list[str]
    attempt_rows: list[AttemptDoc]
    #: the failure's traceback, when it has one
    traceback: NotRequired[str | None]
    #: a map's member: the element it got (parameter -> value)
    element: NotRequired[Any]


@with_config(DOCUMENT)
class TaskActed(TypedDict):
    """A task action taken (cancel, suspend, resume, continue, reject) and the task's state
    before it."""

    id: str
    task: str
    action: str
    #: the task's state before the action
    state: TaskState


@with_config(DOCUMENT)
class JsonResult(TypedDict):
    """A result that is JSON: its text (None for a task that returned nothing)."""

    json: str | None


@with_config(DOCUMENT)
class PickleResult(TypedDict):
    """A result that is not JSON: the pickle the worker made, base64 (the manager never
    opens it; the user's client does)."""

    pickle: str


@with_config(DOCUMENT)
class Sample(TypedDict):
    """A resource sample of a task's process tree (a row of the ``samples`` table)."""

    id: int
    run_id: str
    task: str
    attempt: int
    ts: float
    #: percent of one core, summed over the tree
    cpu: float | None
    rss: int | None
    read_bytes: int | None
    write_bytes: int | None
    procs: int | None
    #: per GPU: utilisation %, memory bytes (NVML)
    gpu: list[dict[str, int | float]] | None


# -- workers, batch jobs, the queue --------------------------------------------------------
@with_config(DOCUMENT)
class WorkerDoc(TypedDict):
    """A worker of this user's (``Worker.to_json``)."""

    id: str
    user: str
    host: str
    pid: int | None
    #: "local" when this manager started it
    provider: str | None
    slots: int
    state: Literal["ACTIVE", "LOST", "STOPPED"]
    #: the tasks it takes (None: any of its user's)
    pool: str | None
    #: the batch job it runs in (Kale's id)
    job: str | None
    connected: bool
    running: int
    started_at: float
    #: seconds since it was last heard of
    silent_for: float


@with_config(DOCUMENT)
class LocalWorkersStarted(TypedDict):
    """Local worker processes started by hand, by process id."""

    kind: Literal["local"]
    pids: list[int]


@with_config(DOCUMENT)
class PilotsStarted(TypedDict):
    """Pilot jobs submitted to a batch scheduler, each running a worker."""

    kind: str
    #: Kale's ids of the pilot jobs
    jobs: list[str]


@with_config(DOCUMENT)
class WorkerStopped(TypedDict):
    """A worker asked to stop; its running tasks are handed back and run elsewhere."""

    id: str
    stopped: bool
    #: the batch job cancelled to stop it (absent: a local worker, sent SIGTERM)
    job: NotRequired[str]


@with_config(DOCUMENT)
class BatchJob(TypedDict):
    """A batch job this manager submitted (a row of the ``batch_jobs`` table)."""

    id: str
    user: str
    scheduler: str
    mode: Literal["job", "pilot"]
    pool: str
    native_id: str | None
    state: str
    nodes: int
    submitted_at: float
    updated_at: float
    #: attempt key, message, exit code
    info: dict[str, Any]


@with_config(DOCUMENT)
class JobCancelled(TypedDict):
    """A batch job Kale submitted, cancelled at the scheduler."""

    id: str
    cancelled: bool


@with_config(DOCUMENT)
class KaleJobRef(TypedDict):
    """What Kale submitted a queued job for."""

    id: str
    mode: str
    pool: str
    #: the attempt (run, task, number) of a job per task; None for a pilot
    task: list[str | int] | None


@with_config(DOCUMENT)
class QueueJobDoc(TypedDict):
    """A job in the batch queue (``QueueJob``), how long it has waited, and what Kale
    submitted it for when it did."""

    id: str
    name: str
    state: str
    reason: str | None
    partition: str | None
    nodes: int | None
    user: str | None
    submitted: float | None
    start: float | None
    walltime: int | None
    native_state: str
    queued_for: float | None
    kale: NotRequired[KaleJobRef]


@with_config(DOCUMENT)
class PartitionDoc(TypedDict):
    """A partition or queue (``Partition``)."""

    name: str
    available: bool
    default: bool
    nodes: int | None
    idle_nodes: int | None
    cpus: int | None
    idle_cpus: int | None
    max_walltime: int | None


@with_config(DOCUMENT)
class QueueDoc(TypedDict):
    """The batch queue as `kale queue` shows it: the scheduler, its jobs (those Kale
    submitted carry ``kale``), partitions, and errors the scheduler's commands gave."""

    scheduler: str
    jobs: list[QueueJobDoc]
    partitions: list[PartitionDoc]
    errors: list[str]
