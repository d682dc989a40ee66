"""Task and run states, and the one table of legal transitions.

The store is the only code that changes a state, and it checks every change against
:data:`TRANSITIONS`; everything that watches state (CLI, widgets, API) therefore sees the
same story.

Task states
-----------
========== ==================================================================
PENDING    waiting on upstream tasks
READY      upstream done; waiting for a free slot on its executor
SUBMITTED  handed to a batch queue, not started yet
RUNNING    started on a worker
SUSPENDED  stopped (SIGSTOP) by a person; RUNNING again when resumed
WAITING    an interactive step waiting for a person
RETRYING   failed or timed out; goes back to READY after its backoff
SUCCEEDED  finished with exit code 0 (terminal)
FAILED     finished with an error (terminal)
TIMEOUT    killed at its timeout or walltime (terminal unless retried)
CANCELLED  cancelled by a person or a signal (terminal)
SKIPPED    not run: an upstream task failed, or it was not selected (terminal)
========== ==================================================================
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """A task's state (the table above). A string enum: each value is its name, so a state is
    written and compared as that string. Only :data:`TRANSITIONS` says where a state may go,
    and the store checks every change against it; a :attr:`terminal` state only goes back
    to PENDING, when a resume or rerun reopens the task."""

    PENDING = "PENDING"
    READY = "READY"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    WAITING = "WAITING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def ok(self) -> bool:
        """True for the states whose result downstream tasks may use."""
        return self is TaskState.SUCCEEDED


_TERMINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.TIMEOUT,
        TaskState.CANCELLED,
        TaskState.SKIPPED,
    }
)

S = TaskState

#: Legal task transitions: ``state -> states it may move to``.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    S.PENDING: frozenset({S.READY, S.SKIPPED, S.CANCELLED, S.SUCCEEDED}),
    S.READY: frozenset({S.SUBMITTED, S.RUNNING, S.WAITING, S.SUCCEEDED, S.SKIPPED, S.CANCELLED,
                        S.FAILED, S.PENDING}),
    S.SUBMITTED: frozenset({S.RUNNING, S.FAILED, S.TIMEOUT, S.CANCELLED, S.RETRYING, S.READY}),
    # RUNNING -> READY: the process running it died (crash, lost worker) and the task is
    # requeued without counting against its retries.
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELLED, S.RETRYING, S.READY,
                          S.WAITING, S.SUSPENDED}),
    # A suspended task still ends: a timeout (walltime runs on), a cancel, a lost worker.
    S.SUSPENDED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELLED,
                            S.RETRYING, S.READY}),
    S.WAITING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.READY}),
    S.RETRYING: frozenset({S.READY, S.CANCELLED, S.FAILED}),
    # Terminal states may be re-opened only by an explicit re-run of the task.
    S.SUCCEEDED: frozenset({S.PENDING}),
    S.FAILED: frozenset({S.PENDING}),
    S.TIMEOUT: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.SKIPPED: frozenset({S.PENDING}),
}


def is_legal(old: TaskState, new: TaskState) -> bool:
    return new in TRANSITIONS[old]


class RunState(StrEnum):
    """State of a whole run."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not RunState.RUNNING
