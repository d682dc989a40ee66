"""The engine's decisions, without I/O: which tasks are ready, what a finished attempt
leads to (success, a retry after its backoff, failure and the SKIPPED tasks below it, a
requeue), what a cancel stops, how a resumed run picks up, and when the run is over.

:class:`Planner` takes events (an attempt ended, a retry timer fired, a cancel was asked
for, an earlier result was found) and returns :data:`Step` lists: the transitions to record
(:class:`Move`) and the things to do (:class:`Start`, :class:`Kill`, :class:`StartTimer`,
:class:`StopTimer`, :class:`Adopt`, :class:`Resolve`). The driver (:class:`kale.engine.Engine`)
does them: store writes, executors, timers. Nothing here touches asyncio, the store, the
file system or the clock (times come in with the events).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kale.model.states import RunState, TaskState

S = TaskState
_FAILED = (S.FAILED, S.TIMEOUT, S.CANCELLED, S.SKIPPED)
_IN_FLIGHT = (S.RUNNING, S.SUBMITTED, S.SUSPENDED)


class Ending(Enum):
    """How an attempt ended."""

    SUCCEEDED = "SUCCEEDED"  # ran, and its result is stored
    FAILED = "FAILED"  # ran and failed (or what it left could not be read)
    TIMED_OUT = "TIMEOUT"  # killed at its timeout, or its batch job reached its walltime
    CANCELLED = "CANCELLED"  # its attempt was cancelled (the run, or this task)
    LOST_WORKER = "LOST"  # its worker stopped answering: a failure, retried per its policy
    REJECTED = "REJECTED"  # a person rejected an interactive step: failed, never retried
    INTERRUPTED = "INTERRUPTED"  # the process running it went away: requeued, not counted

    @property
    def row(self) -> str:
        """The state the attempt's row records."""
        return _ROW[self]


_ROW = {e: "FAILED" if e is Ending.REJECTED else e.value for e in Ending}


class Control(Enum):
    """A person's hand on a running attempt: (the state it needs, the state it leads to)."""

    SUSPEND = (S.RUNNING, S.SUSPENDED)
    RESUME = (S.SUSPENDED, S.RUNNING)

    @property
    def before(self) -> TaskState:
        return self.value[0]

    @property
    def after(self) -> TaskState:
        return self.value[1]

    @property
    def reason(self) -> str:
        return "suspended" if self is Control.SUSPEND else "resumed"


@dataclass(frozen=True, slots=True)
class Policy:
    """A task's retry policy: ``retries`` more attempts, the n-th after
    ``retry_delay * 2**(n-1)`` seconds."""

    retries: int = 0
    retry_delay: float = 0.0


NO_RETRY = Policy()


@dataclass(slots=True)
class Move:
    """A transition to record. ``values`` and ``attempt`` are the store's columns (task row,
    attempt row), plain data carried for the driver; the driver may add what it measured
    (log paths, a start time) before it records the move."""

    name: str
    new: TaskState
    reason: str = ""
    values: dict[str, Any] | None = None
    attempt: dict[str, Any] | None = None
    #: a task the run adds (a map's member): the columns of its new row
    added: dict[str, Any] | None = None


@dataclass(slots=True)
class Start:
    """Start attempt ``attempt`` of a task; ``move`` (to RUNNING, or SUBMITTED for a queued
    executor) is recorded with it."""

    name: str
    attempt: int
    move: Move


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop the running attempt of a task (its end comes back as an event)."""

    name: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Call :meth:`Planner.timer_fired` for this task after ``delay`` seconds."""

    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class StopTimer:
    """Drop the retry timer of this task (it was cancelled meanwhile)."""

    name: str


@dataclass(frozen=True, slots=True)
class Adopt:
    """After a restart: wait for the worker that runs this attempt (``started``: it had
    started) to report its end."""

    name: str
    attempt: int
    started: bool


@dataclass(frozen=True, slots=True)
class Resolve:
    """A question for the driver, to answer at once (before the next event) with
    :meth:`Planner.reused`, :meth:`Planner.no_earlier` or :meth:`Planner.missing`: can this
    task reuse an earlier result? For a ``selected`` task, also: are its inputs there?
    The driver answers the steps of one list in order, each answer's steps before the
    next; a question an earlier answer made moot is dropped (see :meth:`Planner.asks`)."""

    name: str
    selected: bool


@dataclass(frozen=True, slots=True)
class Gather:
    """Every member of a map has ended: the driver answers at once with
    :meth:`Planner.gathered` (the group's result, the list of its members')."""

    name: str


Step = Move | Kill | StartTimer | StopTimer | Adopt | Resolve | Gather


@dataclass(slots=True)
class AttemptEnd:
    """An attempt's end: ``error`` says why it did not succeed; ``values`` and ``attempt``
    are the columns the driver measured (the planner sets the attempt row's state)."""

    name: str
    attempt: int
    ending: Ending
    error: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    #: a success that added tasks to the run (:meth:`Planner.join`'s ``members``): the
    #: task runs on until they have ended
    adds: list[Member] | None = None


#: a task joining the run: its name, its new row's columns, the tasks it waits for
Member = tuple[str, dict[str, Any], tuple[str, ...]]


class Planner:
    """The state of one run's tasks and what follows from each event.

    Invariants: ``state`` holds every task's current state, and every :class:`Move` returned
    is a legal transition of :mod:`kale.model.states` from it (the planner has applied it
    already; ``counts`` follows). A task is in ``active`` exactly while an attempt of it is
    started and not yet ended, in ``retrying`` exactly while a retry timer of it runs; at
    most ``slots`` tasks are active after :meth:`take` (adopted ones may exceed it). A task
    SUCCEEDED never starts again. A task is SKIPPED for a failure only when it was PENDING
    below a FAILED, TIMEOUT, CANCELLED or SKIPPED task, and then every PENDING task below it
    is too. Once :attr:`cancelled`, nothing starts and nothing retries.

    Not thread-safe: one thread (the engine's event loop) calls it; ``counts`` is the one
    thing other threads may read (a copy: every state is a key). Every :class:`Resolve`
    step must be answered before the next event.
    """

    def __init__(self, upstream: Mapping[str, tuple[str, ...]],
                 downstream: Mapping[str, tuple[str, ...]], *, selected: set[str],
                 needed: set[str] | None = None, policies: Mapping[str, Policy] | None = None,
                 rerun: bool = False, run_id: str = "",
                 counts: dict[TaskState, int] | None = None) -> None:
        self.upstream, self.downstream = upstream, downstream
        self.selected = selected
        #: tasks outside the selection whose results selected tasks need
        self.needed = needed or set()
        self.policies = policies or {}
        self.rerun = rerun  # a rerun of failed tasks shows the whole workflow
        self.run_id = run_id
        self.state: dict[str, TaskState] = {}
        #: tasks per state (every state is a key, so other threads may copy it); ``counts``,
        #: given, is such a dict, all zero (the manager's writes through to its status board)
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0) if counts is None \
            else counts
        self.attempts: dict[str, int] = {}
        self.interrupted: dict[str, int] = {}  # attempts cut short, not counted as retries
        self.waiting_on: dict[str, int] = {}
        self.ready: deque[str] = deque()
        self.active: set[str] = set()
        self.retrying: dict[str, None] = {}  # an ordered set
        self.cancelled = False
        self.cancel_reason = "cancelled"
        self._cancel_reasons: dict[str, str] = {}  # running tasks cancelled one by one
        self._why: dict[str, str] = {}  # why a task outside the selection runs after all
        #: maps: a group's members, in order; each member's group; members not yet ended
        self.members: dict[str, list[str]] = {}
        self.group_of: dict[str, str] = {}
        self._open: dict[str, int] = {}
        #: tasks SKIPPED because a condition was false (not a failure: the run can succeed)
        self.skipped_ok: set[str] = set()

    # -- queries -------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing runs, waits for a retry or is ready: the run is over."""
        return not (self.active or self.retrying or self.ready)

    def final_state(self) -> RunState:
        ok = self.skipped_ok
        if all(self.state[n] is S.SUCCEEDED or n in ok for n in self.selected):
            return RunState.SUCCEEDED
        if self.cancelled:
            return RunState.CANCELLED
        return RunState.FAILED

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for n in self.selected:
            counts[self.state[n].value] = counts.get(self.state[n].value, 0) + 1
        return ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))

    # -- a run starts or resumes ---------------------------------------------------------
    def restore(self, name: str, state: TaskState, attempts: int = 0,
                interrupted: int = 0, *, condition: bool = False) -> None:
        """A task as the store has it (before :meth:`resume`); ``condition``: it was
        skipped because its condition was false."""
        self.state[name] = state
        self.counts[state] += 1
        self.attempts[name] = attempts
        if interrupted:
            self.interrupted[name] = interrupted
        if condition and state is S.SKIPPED:
            self.skipped_ok.add(name)

    def restore_member(self, group: str, member: str) -> None:
        """A map's member as the store has it (after :meth:`restore` of both)."""
        self.members.setdefault(group, []).append(member)
        self.group_of[member] = group
        self._open[group] = self._open.get(group, 0) + (not self.state[member].terminal)
        if group in self.selected:
            self.selected.add(member)
        policy = self.policies.get(group)
        if policy is not None and isinstance(self.policies, dict):
            self.policies[member] = policy

    def resume(self, order: Iterable[str], now: float, *, adopt: bool = False) -> list[Step]:
        """Pick up from the restored states (``order``: every task, upstream first): what
        was in flight is requeued (or, with ``adopt``, waited for: its worker may still run
        it), then every PENDING task is skipped, resolved or left waiting on its upstream
        tasks."""
        out: list[Step] = []
        adopted: list[str] = []
        order = list(order)
        for name in order:
            st = self.state[name]
            if st.terminal:
                continue
            if name in self.members:  # a map whose members run: it waits for them
                if st is S.PENDING:  # reopened after a cancel: it runs on, not anew
                    self._move(out, name, S.READY, "resumed")
                    self._move(out, name, S.RUNNING, "its members go on")
                if self._open[name] == 0:
                    out.append(Gather(name))
                continue
            if st in _IN_FLIGHT and adopt:
                adopted.append(name)
                continue
            if st in _IN_FLIGHT:
                self.interrupted[name] = self.interrupted.get(name, 0) + 1
                self._move(out, name, S.READY, "requeued: the process running it stopped",
                           attempt={"number": self.attempts[name], "state": "INTERRUPTED",
                                    "ended_at": now})
            elif st is S.RETRYING:
                self._move(out, name, S.READY, "requeued after a restart")
            if self.state[name] is S.READY:
                self._move(out, name, S.PENDING, "resumed")
        ok = self.skipped_ok
        for name in order:
            self.waiting_on[name] = sum(
                1 for d in self.upstream[name] if self.state[d] is not S.SUCCEEDED
                and d not in ok)
        for name in order:
            if self.state[name] is S.PENDING:
                if name not in self.selected:
                    self._unselected(out, name)
                elif any(self.state[d] in _FAILED and d not in ok for d in self.upstream[name]):
                    bad = next(d for d in self.upstream[name]
                               if self.state[d] in _FAILED and d not in ok)
                    self._move(out, name, S.SKIPPED,
                               f"upstream {bad!r} {self.state[bad].value.lower()}")
                    self._skip_below(out, name)
                elif self.waiting_on[name] == 0:
                    self._unblocked(out, name)
        for name in adopted:
            self.active.add(name)
            out.append(Adopt(name, self.attempts[name], self.state[name] is not S.SUBMITTED))
        return out

    # -- answers to Resolve --------------------------------------------------------------
    def asks(self, step: Resolve) -> bool:
        """Whether the question still stands: an answer to an earlier one may have moved
        this task on already (its upstream task's result was reused, say)."""
        return self.state.get(step.name) is S.PENDING \
            and (step.name in self.selected) == step.selected

    def reused(self, name: str, run_id: str, values: dict[str, Any]) -> list[Step]:
        """An earlier result (of run ``run_id``) stands for this task's."""
        out: list[Step] = []
        self._why.pop(name, None)
        if name in self.selected:
            self._move(out, name, S.READY, "upstream done")
            why = f"unchanged; reused result of run {run_id}"
        else:
            why = f"not selected; reused result of run {run_id}"
        self._move(out, name, S.SUCCEEDED, why, values)
        self._upstream_done(out, name)
        return out

    def missing(self, name: str, error: str, now: float) -> list[Step]:
        """A selected task's inputs cannot be resolved: it fails without running."""
        out: list[Step] = []
        self._move(out, name, S.READY, "upstream done")
        self._move(out, name, S.FAILED, error, {"error": error, "ended_at": now})
        self._skip_below(out, name)
        return out

    def skip_condition(self, name: str, reason: str) -> list[Step]:
        """A selected task's condition is false (or it needs the result of a task whose
        condition was): SKIPPED, which is no failure; what is below it is then asked in
        its turn (see :class:`Resolve`)."""
        out: list[Step] = []
        self._move(out, name, S.SKIPPED, reason, {"details": '{"condition": true}'})
        self.skipped_ok.add(name)
        self._upstream_done(out, name)
        return out

    def expand(self, group: str, members: list[tuple[str, dict[str, Any]]],
               reason: str, upstream: tuple[str, ...] | None = None) -> list[Step]:
        """A map is due: its members (name, new row's columns), in order, join the run
        below what the map waits for (all done; ``upstream``: what of that a member sees,
        default all), with the map's retry policy; the map runs until they have all ended
        (then :class:`Gather`)."""
        out: list[Step] = []
        self._move(out, group, S.READY, "upstream done")
        self._move(out, group, S.RUNNING, reason)
        policy = self.policies.get(group)
        if policy is not None and isinstance(self.policies, dict):
            self.policies.update((m, policy) for m, _ in members)
        up = self.upstream[group] if upstream is None else upstream
        self.join(out, group, [(m, added, up) for m, added in members],
                  [f"element {i} of map {group!r}" for i in range(len(members))])
        return out

    def join(self, out: list[Step], group: str, members: list[Member],
             reasons: list[str]) -> None:
        """Tasks join the run as ``group``'s members (each PENDING, then asked about like
        any task once what it waits for is done: the tasks of the run it names, and the
        members before it). ``group`` ends when they all have (:class:`Gather`)."""
        names = [m for m, _, _ in members]
        self.members[group] = names
        self._open[group] = len(names)
        graph_up, graph_down = self.upstream, self.downstream
        assert isinstance(graph_up, dict) and isinstance(graph_down, dict)
        below: dict[str, list[str]] = {}
        for (name, added, ups), reason in zip(members, reasons, strict=True):
            self.group_of[name] = group
            graph_up[name] = ups
            for d in ups:
                if d in below:
                    below[d].append(name)
            below[name] = []
            if group in self.selected:
                self.selected.add(name)
            self.attempts[name] = 0
            move = Move(name, S.PENDING, reason, added=added)
            self._apply(move)
            out.append(move)
        ok = self.skipped_ok
        for name, _, ups in members:
            graph_down[name] = tuple(below[name])
            self.waiting_on[name] = sum(1 for d in ups if self.state[d] is not S.SUCCEEDED
                                        and d not in ok)
        for name in names:
            if self.waiting_on[name] == 0:
                self._unblocked(out, name)
        if not names:
            out.append(Gather(group))

    def gathered(self, group: str, values: dict[str, Any], now: float) -> list[Step]:
        """A map's members have all ended: it succeeds with ``values`` (its result's
        columns) when they all succeeded, else it fails (or is cancelled) saying which
        did not, and what is below it is skipped."""
        out: list[Step] = []
        members = self.members[group]
        bad = [m for m in members if self.state[m] is not S.SUCCEEDED]
        reason = self._cancel_reasons.pop(group, None)
        if reason is not None or (self.cancelled and bad):
            self._move(out, group, S.CANCELLED, reason or self.cancel_reason,
                       {"ended_at": now})
            self._skip_below(out, group)
        elif not bad:
            self._move(out, group, S.SUCCEEDED, f"{len(members)} "
                       f"{'elements' if values.get('map') else 'added tasks'} done",
                       {**{k: v for k, v in values.items() if k != "map"}, "ended_at": now})
            self._upstream_done(out, group)
        else:
            shown = ", ".join(f"{m} {self.state[m].value.lower()}" for m in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            what = "elements" if values.get("map") else "tasks it added"
            error = f"{len(bad)} of {len(members)} {what} did not succeed: {shown}{more}"
            self._move(out, group, S.FAILED, error, {"error": error, "ended_at": now})
            self._skip_below(out, group)
        return out

    def no_earlier(self, name: str) -> list[Step]:
        """No earlier result: a selected task is queued; one outside the selection runs if
        a selected task needs it, else it is skipped."""
        out: list[Step] = []
        if name in self.selected:
            why = self._why.pop(name, "") or (
                "upstream done" if self.upstream[name] else "no upstream")
            self._move(out, name, S.READY, why)
            self.ready.append(name)
        elif name in self.needed:
            below = sorted(d for d in self.downstream[name]
                           if d in self.selected or d in self.needed)
            self.selected.add(name)
            self._why[name] = (f"not selected, but {', '.join(below)} needs it and no "
                               "earlier result of it matches its current inputs and code")
            if self.waiting_on[name] == 0:
                self._unblocked(out, name)
            # else it waits for the tasks above it, like any selected task
        else:
            self._move(out, name, S.SKIPPED, "not selected")
        return out

    # -- attempts ------------------------------------------------------------------------
    def take(self, slots: int, queued: bool = False, limit: int | None = None,
             extra: int = 0, may_queue: Callable[[str], bool] | None = None
             ) -> list[Start]:
        """Start ready tasks while fewer than ``slots`` attempts are active (``queued``:
        the executor queues them, SUBMITTED until a worker has one), at most ``limit``;
        and ``extra`` more beyond the slots while the next ready task and every active
        one are tasks the executor queues where they run (``may_queue``), in order."""
        starts: list[Start] = []
        ready, state, active = self.ready, self.state, self.active
        most = len(ready) if limit is None else limit
        room = slots + extra if may_queue is not None else slots
        every: bool | None = None  # whether every active task may queue (asked once)
        while ready and len(active) < room and len(starts) < most:
            name = ready[0]
            if state[name] is not S.READY:
                ready.popleft()
                continue
            if len(active) >= slots:
                assert may_queue is not None
                if every is None:  # (from here on only tasks that may queue are added)
                    every = all(may_queue(a) for a in active)
                if not (every and may_queue(name)):
                    break
            ready.popleft()
            attempt = self.attempts.get(name, 0) + 1
            self.attempts[name] = attempt
            self.active.add(name)
            if queued:  # RUNNING once a worker has it (see started)
                move = Move(name, S.SUBMITTED, f"attempt {attempt} queued")
            else:
                move = Move(name, S.RUNNING, f"attempt {attempt}")
            self._apply(move)
            starts.append(Start(name, attempt, move))
        return starts

    def started(self, name: str, attempt: int, worker: str, now: float) -> list[Step]:
        """A queued attempt reached a worker."""
        if self.state.get(name) is not S.SUBMITTED or self.attempts.get(name) != attempt:
            return []
        out: list[Step] = []
        self._move(out, name, S.RUNNING, f"attempt {attempt} on worker {worker}",
                   {"started_at": now}, {"number": attempt, "state": "RUNNING",
                                         "started_at": now, "worker": worker})
        return out

    def waiting(self, name: str, attempt: int, where: str, worker: str,
                now: float) -> list[Step]:
        """An interactive step waits for a person."""
        st = self.state.get(name)
        if st not in (S.RUNNING, S.SUBMITTED) or self.attempts.get(name) != attempt:
            return []
        out = self.started(name, attempt, worker, now) if st is S.SUBMITTED else []
        self._move(out, name, S.WAITING, f"waiting for a person: open {where}; then "
                   f"`kale continue {self.run_id} {name}` or `kale reject ...`")
        return out

    def controlled(self, name: str, control: Control) -> list[Step]:
        """A person suspended or resumed the running attempt."""
        if self.state.get(name) is not control.before:
            return []
        out: list[Step] = []
        self._move(out, name, control.after, control.reason)
        return out

    def ended(self, end: AttemptEnd) -> list[Step]:
        """An attempt ended: record it, and what follows (downstream tasks, a retry, the
        tasks skipped below a failure)."""
        name = end.name
        out: list[Step] = []
        self.active.discard(name)
        end.row["state"] = _ROW[end.ending]
        if end.ending is Ending.CANCELLED:
            reason = self._cancel_reasons.pop(name, None)
            self._move(out, name, S.CANCELLED, reason or self.cancel_reason, end.values,
                       end.row)
            if reason is not None:  # this task alone was cancelled
                self._skip_below(out, name)
        elif end.ending is Ending.INTERRUPTED:
            self.interrupted[name] = self.interrupted.get(name, 0) + 1
            if self.cancelled:
                self._move(out, name, S.CANCELLED, self.cancel_reason, end.values, end.row)
            else:
                self._move(out, name, S.READY, f"requeued: {end.error}", {}, end.row)
                self.ready.append(name)
        elif end.ending is Ending.SUCCEEDED:
            if self.state[name] is S.SUBMITTED:  # its worker reported it after a restart
                self._move(out, name, S.RUNNING, "started (reported by its worker)")
            if end.adds:  # it runs on as long as the tasks it added do
                n = len(end.adds)
                self._move(out, name, S.RUNNING, f"added {n} task{'s' * (n != 1)}; it "
                           "ends when they have", end.values, end.row)
                self.join(out, name, end.adds, [f"added by {name!r}"] * n)
                return out
            self._move(out, name, S.SUCCEEDED, "", end.values, end.row)
            self._upstream_done(out, name)
        else:
            self._failed(out, end)
        return out

    def _failed(self, out: list[Step], end: AttemptEnd) -> None:
        name = end.name
        bad = S.TIMEOUT if end.ending is Ending.TIMED_OUT else S.FAILED
        policy = self.policies.get(name, NO_RETRY)
        if end.attempt - self.interrupted.get(name, 0) <= policy.retries \
                and not self.cancelled and end.ending is not Ending.REJECTED:
            delay = policy.retry_delay * (2 ** (end.attempt - 1))
            self._move(out, name, S.RETRYING, f"attempt {end.attempt} {end.error}; "
                       f"retry {end.attempt}/{policy.retries} in {delay:g} s", end.values,
                       end.row)
            self.retrying[name] = None
            out.append(StartTimer(name, delay))
            return
        self._move(out, name, bad, end.error, end.values, end.row)
        self._skip_below(out, name)

    def timer_fired(self, name: str) -> list[Step]:
        """A retry's backoff is over: the task is ready again."""
        out: list[Step] = []
        self.retrying.pop(name, None)
        if self.state[name] is S.RETRYING:
            self._move(out, name, S.READY, "retrying")
            self.ready.append(name)
        return out

    # -- cancel --------------------------------------------------------------------------
    def cancel(self, reason: str) -> list[Step]:
        """Cancel the run: running attempts are killed (their ends record CANCELLED), the
        rest of the selection is CANCELLED now."""
        if self.cancelled:
            return []
        out: list[Step] = []
        self.cancelled = True
        self.cancel_reason = reason
        for name in self.retrying:
            out.append(StopTimer(name))
            self._move(out, name, S.CANCELLED, reason)
        self.retrying.clear()
        while self.ready:
            name = self.ready.popleft()
            if self.state[name] is S.READY:  # not one cancelled on its own meanwhile
                self._move(out, name, S.CANCELLED, reason)
        for name, st in self.state.items():
            if st is S.PENDING and name in self.selected:
                self._move(out, name, S.CANCELLED, reason)
        out.extend(Kill(name) for name in self.active)
        return out

    def cancel_task(self, name: str, reason: str, now: float) -> list[Step]:
        """Cancel one task; the tasks below it are skipped."""
        st = self.state.get(name)
        if st is None or st.terminal:
            return []
        if name in self.active:
            self._cancel_reasons[name] = reason
            return [Kill(name)]
        out: list[Step] = []
        if name in self.members and st is S.RUNNING:  # a map: its members, then it
            self._cancel_reasons[name] = reason
            for m in self.members[name]:
                out += self.cancel_task(m, reason, now)
            return out
        if name in self.retrying:
            del self.retrying[name]
            out.append(StopTimer(name))
        self._move(out, name, S.CANCELLED, reason, {"ended_at": now})
        self._skip_below(out, name)
        return out

    def halt(self) -> None:
        """The store refused a write: nothing more starts."""
        self.ready.clear()

    # -- the DAG -------------------------------------------------------------------------
    def _move(self, out: list[Step], name: str, new: TaskState, reason: str = "",
              values: dict[str, Any] | None = None,
              attempt: dict[str, Any] | None = None) -> None:
        move = Move(name, new, reason, values, attempt)
        counts, state = self.counts, self.state
        old = state.get(name)
        if old is not None:
            counts[old] -= 1
        counts[new] += 1
        state[name] = new
        out.append(move)
        if new.terminal and name in self.group_of:
            group = self.group_of[name]
            self._open[group] -= 1
            if self._open[group] == 0:
                out.append(Gather(group))

    def _apply(self, move: Move) -> None:
        old = self.state.get(move.name)
        if old is not None:
            self.counts[old] -= 1
        self.counts[move.new] += 1
        self.state[move.name] = move.new

    def _unblocked(self, out: list[Step], name: str) -> None:
        """All upstream tasks succeeded (or, outside the selection, it is being looked at)."""
        if name not in self.selected:
            self._unselected(out, name)
        elif self.cancelled:
            self._move(out, name, S.CANCELLED, "run cancelled")
        else:
            out.append(Resolve(name, True))

    def _unselected(self, out: list[Step], name: str) -> None:
        """A task outside the selection: reused if a selected task needs it (or the run
        reruns failed tasks), run if needed and not reusable, else skipped."""
        if name not in self.needed and not self.rerun:
            self._move(out, name, S.SKIPPED, "not selected")
        else:
            out.append(Resolve(name, False))

    def _upstream_done(self, out: list[Step], name: str) -> None:
        for d in self.downstream[name]:
            if self.state[d] is S.PENDING:
                self.waiting_on[d] -= 1
                if self.waiting_on[d] == 0:
                    self._unblocked(out, d)

    def _skip_below(self, out: list[Step], name: str) -> None:
        """Skip every PENDING task below ``name`` (depth first, each naming its parent)."""
        stack = [(name, d) for d in reversed(self.downstream[name])]
        while stack:
            parent, d = stack.pop()
            if self.state[d] is S.PENDING:
                self._move(out, d, S.SKIPPED,
                           f"upstream {parent!r} {self.state[parent].value.lower()}")
                stack.extend((d, e) for e in reversed(self.downstream[d]))
