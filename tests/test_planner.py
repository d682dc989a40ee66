"""The engine's planner on its own: no event loop, no store, no processes.

A small simulated driver (:class:`Sim`) does what the planner's steps say the way the
engine does (moves recorded and checked against the state machine, questions answered in
place, kills, timers) and picks the next event itself; a property test drives random DAGs
through random failures, retries, timeouts, lost workers and cancels to their end.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kale.engine.planner import (
    Adopt,
    AttemptEnd,
    Control,
    Ending,
    Gather,
    Kill,
    Move,
    Planner,
    Policy,
    Resolve,
    StartTimer,
    Step,
    StopTimer,
)
from kale.model import dag
from kale.model.states import RunState, TaskState, is_legal

S = TaskState
Answer = Callable[[Planner, Resolve], list[Step]]


def no_earlier(plan: Planner, q: Resolve) -> list[Step]:
    return plan.no_earlier(q.name)


def make(upstream: dict[str, tuple[str, ...]], *, selected: set[str] | None = None,
         needed: set[str] | None = None, policies: dict[str, Policy] | None = None,
         states: dict[str, TaskState] | None = None) -> Planner:
    down = {n: tuple(ds) for n, ds in dag.downstream_map(upstream).items()}
    plan = Planner(upstream, down, selected=set(upstream) if selected is None else selected,
                   needed=needed, policies=policies, run_id="r1")
    for n in upstream:
        plan.restore(n, (states or {}).get(n, S.PENDING))
    return plan


class Sim:
    """Does what the planner says, as the engine does, and keeps the store's view: every
    move must be a legal transition from the state the store has."""

    def __init__(self, plan: Planner, answer: Answer = no_earlier) -> None:
        self.plan, self.answer = plan, answer
        self.store: dict[str, TaskState] = dict(plan.state)
        self.moves: list[Move] = []
        self.running: dict[str, int] = {}  # task -> attempt
        self.killed: set[str] = set()
        self.timers: dict[str, float] = {}
        self.starts: dict[str, int] = {}
        self.adopted: list[Adopt] = []
        self.gathered: list[str] = []

    def apply(self, steps: list[Step]) -> None:
        todo = steps[::-1]
        while todo:
            step = todo.pop()
            if isinstance(step, Move):
                self.record(step)
            elif isinstance(step, Resolve):
                if self.plan.asks(step):
                    todo.extend(reversed(self.answer(self.plan, step)))
            elif isinstance(step, Kill):
                if step.name in self.running:
                    self.killed.add(step.name)
            elif isinstance(step, StartTimer):
                assert step.name not in self.timers
                self.timers[step.name] = step.delay
            elif isinstance(step, StopTimer):
                del self.timers[step.name]
            elif isinstance(step, Gather):
                self.gathered.append(step.name)
                todo.extend(reversed(self.plan.gathered(step.name, {"map": True}, 1.0)))
            else:
                self.adopted.append(step)
                self.running[step.name] = step.attempt

    def record(self, move: Move) -> None:
        if move.added is not None:  # a task the run adds: a new row, PENDING
            assert move.name not in self.store and move.new is S.PENDING
            self.store[move.name] = S.PENDING
            self.moves.append(move)
            return
        old = self.store[move.name]
        assert is_legal(old, move.new), f"{move.name}: {old} -> {move.new} ({move.reason})"
        self.store[move.name] = move.new
        self.moves.append(move)

    def start(self, slots: int = 2, queued: bool = False, limit: int | None = None,
              extra: int = 0, may_queue: Callable[[str], bool] | None = None) -> list[str]:
        started = []
        for s in self.plan.take(slots, queued, limit, extra, may_queue):
            assert self.store[s.name] is not S.SUCCEEDED
            self.record(s.move)
            self.running[s.name] = s.attempt
            self.starts[s.name] = self.starts.get(s.name, 0) + 1
            started.append(s.name)
        return started

    def end(self, name: str, ending: Ending, error: str = "boom") -> None:
        attempt = self.running.pop(name)
        self.killed.discard(name)
        self.apply(self.plan.ended(AttemptEnd(name, attempt, ending, error)))

    def fire(self, name: str) -> None:
        del self.timers[name]
        self.apply(self.plan.timer_fired(name))

    def reasons(self, name: str) -> list[tuple[TaskState, str]]:
        return [(m.new, m.reason) for m in self.moves if m.name == name]


CHAIN = {"a": (), "b": ("a",), "c": ("b",)}


def begin(upstream: dict[str, tuple[str, ...]], **kw: Any) -> Sim:
    plan = make(upstream, **kw)
    sim = Sim(plan)
    sim.apply(plan.resume(dag.topological(upstream), now=1.0))
    return sim


# -- one behaviour at a time -----------------------------------------------------------------
def test_a_chain_runs_task_by_task_and_ends() -> None:
    sim = begin(CHAIN)
    assert sim.plan.state == {"a": S.READY, "b": S.PENDING, "c": S.PENDING}
    for name in "abc":
        assert sim.start() == [name]
        sim.end(name, Ending.SUCCEEDED)
    assert sim.plan.idle and sim.plan.final_state() is RunState.SUCCEEDED
    assert sim.plan.summary() == "3 succeeded"
    assert sim.reasons("b") == [(S.READY, "upstream done"), (S.RUNNING, "attempt 1"),
                                (S.SUCCEEDED, "")]


def test_a_wide_fan_out_is_taken_chunk_by_chunk_in_order() -> None:
    """Unbounded slots (an engine) with a limit per take: the ready tasks come in order, a
    chunk at a time, until none is left."""
    sim = begin({f"t{i}": () for i in range(5)})
    assert sim.start(slots=100_000, queued=True, limit=2) == ["t0", "t1"]
    assert sim.start(slots=100_000, queued=True, limit=2) == ["t2", "t3"]
    assert sim.start(slots=100_000, queued=True, limit=2) == ["t4"]
    assert sim.start(slots=100_000, queued=True, limit=2) == []
    assert all(sim.store[f"t{i}"] is S.SUBMITTED for i in range(5))


def test_tasks_beyond_the_slots_are_taken_only_where_every_one_queues_in_its_worker(
        ) -> None:
    """``extra`` attempts beyond the slots (Python tasks queued in a busy warm worker),
    only while the next ready task and every active one may be queued so: a shell task
    is never held up behind them, and nothing jumps the order."""
    sim = begin({n: () for n in ("p1", "p2", "p3", "sh", "p4", "p5")})
    python = lambda name: name.startswith("p")  # noqa: E731
    assert sim.start(slots=1, extra=1, may_queue=python) == ["p1", "p2"]
    assert sim.start(slots=1, extra=1, may_queue=python) == []  # the room is used
    sim.end("p1", Ending.SUCCEEDED)
    assert sim.start(slots=1, extra=5, may_queue=python) == ["p3"]  # not "sh": it waits
    sim.end("p2", Ending.SUCCEEDED)
    sim.end("p3", Ending.SUCCEEDED)
    assert sim.start(slots=1, extra=5, may_queue=python) == ["sh"]  # in its own slot...
    assert sim.start(slots=1, extra=5, may_queue=python) == []  # ...and alone
    sim.end("sh", Ending.SUCCEEDED)
    assert sim.start(slots=1, extra=0, may_queue=python) == ["p4"]  # no room: the slots
    assert sim.start(slots=1, extra=3) == []  # and without may_queue, extra means nothing
    sim.end("p4", Ending.SUCCEEDED)
    assert sim.start(slots=1, extra=3, may_queue=python) == ["p5"]
    sim.end("p5", Ending.SUCCEEDED)
    assert sim.plan.final_state() is RunState.SUCCEEDED


def test_retries_back_off_doubling_then_the_failure_skips_everything_below() -> None:
    sim = begin(CHAIN, policies={"a": Policy(retries=2, retry_delay=0.5)})
    delays = []
    for _ in range(2):
        sim.start()
        sim.end("a", Ending.FAILED, "exit 1")
        (name, delay), = sim.timers.items()
        delays.append(delay)
        assert sim.plan.state["a"] is S.RETRYING and not sim.plan.idle
        sim.fire(name)
    assert delays == [0.5, 1.0]
    sim.start()
    sim.end("a", Ending.TIMED_OUT, "timed out after 3 s")
    assert sim.plan.state == {"a": S.TIMEOUT, "b": S.SKIPPED, "c": S.SKIPPED}
    assert sim.reasons("c") == [(S.SKIPPED, "upstream 'b' skipped")]
    assert sim.plan.idle and sim.plan.final_state() is RunState.FAILED
    assert sim.starts["a"] == 3


def test_an_interrupted_attempt_is_requeued_without_counting_as_a_retry() -> None:
    sim = begin({"a": ()}, policies={"a": Policy(retries=1)})
    sim.start()
    sim.end("a", Ending.INTERRUPTED, "worker w1 stopped")
    assert sim.reasons("a")[-1] == (S.READY, "requeued: worker w1 stopped")
    sim.start()
    sim.end("a", Ending.LOST_WORKER, "lost")
    assert sim.plan.state["a"] is S.RETRYING  # attempt 2, but only the first that counts
    sim.fire("a")
    sim.start()
    sim.end("a", Ending.FAILED)
    assert sim.plan.state["a"] is S.FAILED and sim.plan.attempts["a"] == 3


def test_a_rejected_step_is_never_retried() -> None:
    sim = begin({"a": ()}, policies={"a": Policy(retries=5)})
    sim.start()
    sim.end("a", Ending.REJECTED, "rejected")
    assert sim.plan.state["a"] is S.FAILED and not sim.timers


def test_cancel_stops_what_runs_and_cancels_the_rest() -> None:
    sim = begin({"a": (), "b": (), "c": (), "d": ("a",)}, policies={"b": Policy(retries=1)})
    sim.start(slots=2)  # a and b
    sim.end("b", Ending.FAILED)
    assert "b" in sim.timers
    sim.apply(sim.plan.cancel("cancelled (kale cancel)"))
    assert sim.killed == {"a"} and not sim.timers
    assert sim.start() == []
    sim.end("a", Ending.CANCELLED)
    assert {n: s for n, s in sim.plan.state.items()} == dict.fromkeys("abcd", S.CANCELLED)
    assert sim.reasons("a")[-1] == (S.CANCELLED, "cancelled (kale cancel)")
    assert sim.plan.idle and sim.plan.final_state() is RunState.CANCELLED


def test_a_failure_that_races_the_cancel_is_not_retried() -> None:
    sim = begin({"a": (), "b": ("a",)}, policies={"a": Policy(retries=3)})
    sim.start()
    sim.apply(sim.plan.cancel("cancelled"))
    sim.end("a", Ending.FAILED, "exit 1")  # it ended before the kill reached it
    assert sim.plan.state == {"a": S.FAILED, "b": S.CANCELLED} and not sim.timers
    assert sim.plan.idle and sim.plan.final_state() is RunState.CANCELLED


def test_cancelling_one_task_skips_the_tasks_below_it() -> None:
    sim = begin(CHAIN | {"x": ()})
    sim.start(slots=1)
    sim.apply(sim.plan.cancel_task("a", "cancelled (API)", now=5.0))
    assert sim.killed == {"a"}
    sim.end("a", Ending.CANCELLED)
    assert sim.reasons("a")[-1] == (S.CANCELLED, "cancelled (API)")
    assert sim.plan.state["b"] is S.SKIPPED and sim.plan.state["c"] is S.SKIPPED
    sim.apply(sim.plan.cancel_task("x", "cancelled (API)", now=5.0))  # READY, not running
    assert sim.plan.state["x"] is S.CANCELLED and sim.start() == []
    assert sim.plan.idle and not sim.plan.cancelled


def test_a_queued_attempt_is_running_once_a_worker_has_it() -> None:
    sim = begin({"a": ()})
    sim.start(queued=True)
    assert sim.plan.state["a"] is S.SUBMITTED
    assert sim.plan.started("a", 2, "w1", now=3.0) == []  # not this attempt
    sim.apply(sim.plan.waiting("a", 1, "step.ipynb", "w1", now=3.0))
    assert [m.new for m in sim.moves[-2:]] == [S.RUNNING, S.WAITING]
    assert sim.moves[-2].values == {"started_at": 3.0}


def test_suspend_and_resume_need_the_right_state() -> None:
    sim = begin({"a": ()})
    assert sim.plan.controlled("a", Control.RESUME) == []
    sim.start()
    sim.apply(sim.plan.controlled("a", Control.SUSPEND))
    sim.apply(sim.plan.controlled("a", Control.RESUME))
    assert sim.reasons("a")[-2:] == [(S.SUSPENDED, "suspended"), (S.RUNNING, "resumed")]


def test_a_reused_result_stands_for_the_task_and_frees_the_ones_below() -> None:
    plan = make(CHAIN)

    def answer(p: Planner, q: Resolve) -> list[Step]:
        return p.reused(q.name, "run0", {"result_hash": "h"}) if q.name != "c" \
            else p.no_earlier(q.name)

    sim = Sim(plan, answer)
    sim.apply(plan.resume(list(CHAIN), now=1.0))
    assert plan.state == {"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.READY}
    assert sim.reasons("a") == [(S.READY, "upstream done"),
                                (S.SUCCEEDED, "unchanged; reused result of run run0")]


def test_missing_inputs_fail_the_task_without_running_it() -> None:
    plan = make(CHAIN)
    sim = Sim(plan, lambda p, q: p.missing(q.name, "task 'x' has no result", 2.0))
    sim.apply(plan.resume(list(CHAIN), now=1.0))
    assert plan.state == {"a": S.FAILED, "b": S.SKIPPED, "c": S.SKIPPED}
    assert plan.idle and plan.attempts["a"] == 0


def test_a_resumed_run_requeues_what_its_dead_driver_ran_or_adopts_it() -> None:
    states = {"a": S.SUCCEEDED, "b": S.RUNNING, "c": S.PENDING}
    plan = make(CHAIN, states=states)
    plan.attempts["b"] = 1
    sim = Sim(plan)
    sim.apply(plan.resume(list(CHAIN), now=9.0))
    assert sim.reasons("b") == [(S.READY, "requeued: the process running it stopped"),
                                (S.PENDING, "resumed"), (S.READY, "upstream done")]
    assert sim.moves[0].attempt == {"number": 1, "state": "INTERRUPTED", "ended_at": 9.0}
    assert plan.interrupted["b"] == 1

    plan = make(CHAIN, states=states)
    plan.attempts["b"] = 1
    sim = Sim(plan)
    sim.apply(plan.resume(list(CHAIN), now=9.0, adopt=True))
    assert sim.adopted == [Adopt("b", 1, True)] and not sim.moves
    sim.end("b", Ending.SUCCEEDED)
    assert plan.state["c"] is S.READY


def test_a_resumed_run_skips_below_what_had_failed() -> None:
    sim = begin(CHAIN, states={"a": S.FAILED})
    assert sim.reasons("b") == [(S.SKIPPED, "upstream 'a' failed")]
    assert sim.plan.state["c"] is S.SKIPPED and sim.plan.idle


def test_tasks_outside_the_selection_are_skipped_or_run_when_needed() -> None:
    up = {"a": (), "b": ("a",), "c": ("b",), "z": ()}
    sim = begin(up, selected={"c"}, needed={"a", "b"})
    # b runs (no earlier result of it), but only once a, which it needs too, is done
    assert sim.plan.state == {"a": S.READY, "b": S.PENDING, "c": S.PENDING, "z": S.SKIPPED}
    assert sim.reasons("a")[0][1].startswith("not selected, but b needs it")
    assert sim.reasons("z") == [(S.SKIPPED, "not selected")]
    assert sim.start() == ["a"]
    sim.end("a", Ending.SUCCEEDED)
    assert sim.plan.state["b"] is S.READY
    assert sim.reasons("b")[0][1].startswith("not selected, but c needs it")
    assert sim.start() == ["b"]
    sim.end("b", Ending.SUCCEEDED)
    assert sim.start() == ["c"]
    sim.end("c", Ending.SUCCEEDED)
    assert sim.plan.final_state() is RunState.SUCCEEDED and sim.plan.summary() == "3 succeeded"


# -- random DAGs, random events ------------------------------------------------------------
_BAD = (S.FAILED, S.TIMEOUT, S.CANCELLED)


def random_dag(rng: random.Random, n: int) -> dict[str, tuple[str, ...]]:
    names = [f"t{i}" for i in range(n)]
    return {name: tuple(sorted(rng.sample(names[:i], rng.randint(0, min(i, 3)))))
            for i, name in enumerate(names)}


def drive(rng: random.Random, n: int, slots: int) -> None:
    up = random_dag(rng, n)
    policies = {t: Policy(rng.randint(1, 3), 0.1) for t in up if rng.random() < 0.4}

    def answer(p: Planner, q: Resolve) -> list[Step]:
        r = rng.random()
        if r < 0.08:
            return p.reused(q.name, "run0", {})
        if r < 0.11:
            return p.missing(q.name, "no result", 0.0)
        return p.no_earlier(q.name)

    plan = make(up, policies=policies)
    sim = Sim(plan, answer)
    sim.apply(plan.resume(list(up), now=0.0))  # t0, t1, ... is an upstream-first order
    cancelled_alone: set[str] = set()
    interrupted: dict[str, int] = {}
    cancelled_at: int | None = None
    for _ in range(20 * n + 100):
        sim.start(slots)
        assert len(sim.running) <= slots
        assert plan.counts == {s: list(sim.store.values()).count(s) for s in TaskState}
        if plan.idle:
            break
        assert sim.running or sim.timers, "nothing runs, nothing waits, yet not idle"
        r = rng.random()
        if r < 0.02 and cancelled_at is None:
            cancelled_at = len(sim.moves)
            sim.apply(plan.cancel("cancelled"))
        elif r < 0.05:
            name = rng.choice(list(up))
            if sim.store[name] is S.PENDING or sim.store[name] in (S.READY, S.RETRYING) \
                    or name in sim.running:
                cancelled_alone.add(name)
            sim.apply(plan.cancel_task(name, "cancelled one", 0.0))
        elif sim.timers and (not sim.running or r < 0.2):
            sim.fire(rng.choice(list(sim.timers)))
        else:
            name = rng.choice(list(sim.running))
            if name in sim.killed and rng.random() < 0.7:
                ending = Ending.CANCELLED
            else:  # a kill may lose the race with the attempt's own end
                ending = rng.choices(list(Ending), [10, 3, 2, 0, 1, 1, 1])[0]
            if ending is Ending.INTERRUPTED:
                interrupted[name] = interrupted.get(name, 0) + 1
            sim.end(name, ending)
    else:
        raise AssertionError("the run did not end")

    final = sim.store
    assert final == plan.state
    assert all(s.terminal for s in final.values()), final
    for name, count in sim.starts.items():  # retries never exceed the task's count
        allowed = 1 + policies.get(name, Policy()).retries + interrupted.get(name, 0)
        assert count <= allowed, (name, count, allowed)
    succeeded_at = {m.name: i for i, m in enumerate(sim.moves) if m.new is S.SUCCEEDED}
    assert all(i == max(j for j, m in enumerate(sim.moves) if m.name == name)
               for name, i in succeeded_at.items()), "a task moved on after it succeeded"
    # SKIPPED: exactly the tasks below a failed (or one by one cancelled) task, except those
    # the run's cancel reached first.
    below = dag.descendants(up, {t for t, s in final.items()
                                   if s in (S.FAILED, S.TIMEOUT)
                                   or (s is S.CANCELLED and t in cancelled_alone)})
    below -= cancelled_alone  # cancelled on its own before the failure above it
    skipped = {t for t, s in final.items() if s is S.SKIPPED}
    if cancelled_at is None:
        assert skipped == below, (skipped ^ below, up, final)
        assert plan.final_state() is (RunState.SUCCEEDED if all(
            s is S.SUCCEEDED for s in final.values()) else RunState.FAILED)
    else:
        assert skipped <= below
        assert all(final[t] in (S.SKIPPED, S.CANCELLED) for t in below)
        after = sim.moves[cancelled_at:]
        assert not [m for m in after if m.new in (S.RUNNING, S.READY, S.RETRYING,
                                                  S.SUBMITTED)], "started after the cancel"
        assert plan.final_state() in (RunState.CANCELLED, RunState.SUCCEEDED)
    for t, s in final.items():  # nothing ran below a task that did not succeed
        if s is S.SUCCEEDED or t in sim.starts:
            assert all(final[u] is S.SUCCEEDED for u in up[t]), (t, up, final)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_random_dags_with_random_failures_retries_and_cancels_end_well(
        n: int, slots: int, seed: int) -> None:
    drive(random.Random(seed), n, slots)


# -- maps ---------------------------------------------------------------------------------
def mapping(sizes: dict[str, int]) -> Answer:
    """Answers as the engine does for maps: a selected map of ``sizes[name]`` members
    expands; anything else has no earlier result."""
    def answer(plan: Planner, q: Resolve) -> list[Step]:
        if q.name in sizes and q.selected:
            return plan.expand(q.name, [(f"{q.name}[{i}]", {}) for i in range(sizes[q.name])],
                               f"map over {sizes[q.name]} elements")
        return plan.no_earlier(q.name)
    return answer


def test_a_map_runs_its_members_then_ends_with_them() -> None:
    up = {"a": (), "m": ("a",), "z": ("m",)}
    plan = make(up, policies={"m": Policy(retries=1)})
    sim = Sim(plan, mapping({"m": 3}))
    sim.apply(plan.resume(["a", "m", "z"], now=1.0))
    sim.start()
    sim.end("a", Ending.SUCCEEDED)
    assert plan.state["m"] is S.RUNNING and plan.members["m"] == ["m[0]", "m[1]", "m[2]"]
    assert sim.start(slots=2) == ["m[0]", "m[1]"]
    sim.end("m[0]", Ending.FAILED)  # retried, as the map's policy says
    assert "m[0]" in sim.timers and plan.state["z"] is S.PENDING
    sim.end("m[1]", Ending.SUCCEEDED)
    sim.fire("m[0]")
    assert sorted(sim.start(slots=2)) == ["m[0]", "m[2]"]
    sim.end("m[2]", Ending.SUCCEEDED)
    assert plan.state["m"] is S.RUNNING  # m[0] still runs
    sim.end("m[0]", Ending.SUCCEEDED)
    assert sim.gathered == ["m"] and plan.state["m"] is S.SUCCEEDED
    assert plan.state["z"] is S.READY


def test_a_failed_member_fails_its_map_once_all_ended_and_skips_below() -> None:
    up = {"m": (), "z": ("m",)}
    plan = make(up)
    sim = Sim(plan, mapping({"m": 2}))
    sim.apply(plan.resume(["m", "z"], now=1.0))
    sim.start(slots=2)
    sim.end("m[0]", Ending.FAILED)
    assert plan.state["m"] is S.RUNNING and plan.state["z"] is S.PENDING
    sim.end("m[1]", Ending.SUCCEEDED)
    assert plan.state["m"] is S.FAILED and plan.state["z"] is S.SKIPPED
    assert sim.reasons("m")[-1] == (S.FAILED, "1 of 2 elements did not succeed: m[0] failed")
    assert plan.final_state() is RunState.FAILED


def test_an_empty_map_succeeds_and_a_false_condition_is_no_failure() -> None:
    up = {"m": (), "c": ("m",), "d": ("c",), "e": ("c", "m")}
    plan = make(up)

    def answer(plan: Planner, q: Resolve) -> list[Step]:
        if q.name == "c":
            return plan.skip_condition("c", "condition false: 0 > 0")
        if q.name == "d":  # it waits for c alone (the engine asks which)
            return plan.skip_condition(q.name, "upstream 'c', skipped by a condition")
        return mapping({"m": 0})(plan, q)

    sim = Sim(plan, answer)
    sim.apply(plan.resume(["m", "c", "d", "e"], now=1.0))
    assert plan.state["m"] is S.SUCCEEDED and sim.gathered == ["m"]
    assert plan.state["c"] is S.SKIPPED and plan.state["d"] is S.SKIPPED
    assert plan.state["e"] is S.READY  # it also waits for m, which ran
    sim.start()
    sim.end("e", Ending.SUCCEEDED)
    assert plan.idle and plan.final_state() is RunState.SUCCEEDED


def test_cancelling_a_map_cancels_its_members_then_it() -> None:
    plan = make({"m": ()})
    sim = Sim(plan, mapping({"m": 3}))
    sim.apply(plan.resume(["m"], now=1.0))
    sim.start(slots=1)
    sim.apply(plan.cancel_task("m", "cancelled one", 2.0))
    assert sim.killed == {"m[0]"} and plan.state["m"] is S.RUNNING
    sim.end("m[0]", Ending.CANCELLED)
    assert plan.state == {"m": S.CANCELLED, "m[0]": S.CANCELLED, "m[1]": S.CANCELLED,
                          "m[2]": S.CANCELLED}


def test_a_resumed_map_waits_for_its_members_and_is_not_expanded_again() -> None:
    up = {"m": (), "z": ("m",)}
    plan = make(up, states={"m": S.RUNNING})
    for name, st_ in (("m[0]", S.SUCCEEDED), ("m[1]", S.RUNNING)):
        plan.restore(name, st_, attempts=1)
        up[name] = ()
        plan.downstream[name] = ()  # type: ignore[index]
        plan.restore_member("m", name)
    sim = Sim(plan, mapping({"m": 5}))
    sim.apply(plan.resume(["m", "m[0]", "m[1]", "z"], now=1.0))
    assert plan.state["m"] is S.RUNNING and plan.state["m[1]"] is S.READY  # requeued
    assert sim.start() == ["m[1]"]
    sim.end("m[1]", Ending.SUCCEEDED)
    assert plan.state["m"] is S.SUCCEEDED and plan.members["m"] == ["m[0]", "m[1]"]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 25), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_random_dags_with_maps_end_well(n: int, slots: int, seed: int) -> None:
    """Random DAGs where some tasks are maps (0 to 4 members), with random failures,
    retries and cancels: every move is legal, a map ends only after all its members, it
    succeeds exactly when they all did, and nothing below a map starts before it ends."""
    rng = random.Random(seed)
    up: dict[str, tuple[str, ...]] = {}
    for i in range(n):
        up[f"t{i}"] = tuple(sorted({f"t{j}" for j in range(i) if rng.random() < 0.3}))
    sizes = {name: rng.randint(0, 4) for name in up if rng.random() < 0.4}
    policies = {name: Policy(retries=1) for name in up if rng.random() < 0.3}
    plan = make(up, policies=policies)
    sim = Sim(plan, mapping(sizes))
    sim.apply(plan.resume(dag.topological(up), now=1.0))
    for _ in range(40 * n + 200):
        sim.start(slots)
        assert plan.counts == {s: list(sim.store.values()).count(s) for s in TaskState}
        if plan.idle:
            break
        r = rng.random()
        if r < 0.01:
            sim.apply(plan.cancel("cancelled"))
        elif r < 0.03:
            sim.apply(plan.cancel_task(rng.choice(list(plan.state)), "one", 0.0))
        elif sim.timers and (not sim.running or r < 0.2):
            sim.fire(rng.choice(list(sim.timers)))
        elif sim.running:
            name = rng.choice(list(sim.running))
            ending = Ending.CANCELLED if name in sim.killed else \
                rng.choices([Ending.SUCCEEDED, Ending.FAILED], [8, 2])[0]
            sim.end(name, ending)
    else:
        raise AssertionError("the run did not end")
    assert all(s.terminal for s in sim.store.values()) and sim.store == plan.state
    last = {m.name: i for i, m in enumerate(sim.moves)}
    for group, members in plan.members.items():
        assert all(last[m] < last[group] for m in members), group
        assert (plan.state[group] is S.SUCCEEDED) == (
            all(plan.state[m] is S.SUCCEEDED for m in members)
            and plan.state[group] is not S.CANCELLED and not (
                plan.cancelled and any(plan.state[m] is not S.SUCCEEDED for m in members)))
    for name, below in plan.downstream.items():
        for d in below:
            if d in sim.starts or d in plan.members:
                ended = next(i for i, m in enumerate(sim.moves) if m.name == name
                             and m.new is S.SUCCEEDED)
                first = next(i for i, m in enumerate(sim.moves) if m.name == d
                             and m.new in (S.RUNNING, S.READY))
                assert ended < first, (name, d)
