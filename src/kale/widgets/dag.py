"""DagView: the workflow laid out top-down, each task coloured by its state, live."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import traitlets as T

from kale.errors import KaleError
from kale.model.display import COLORS
from kale.model.dynamic import group_of
from kale.widgets.base import RunView, asset
from kale.widgets.groups import collapse, members_of, similar, sort_key
from kale.widgets.layout import dag_svg, node_inner, svg_to_png
from kale.widgets.source import Event, tail

PAGE = 100  # members of a map the browser is sent at a time
FULL_SYNC = 10.0  # seconds between two full syncs of the states (between them: changes)


def _upstream(spec: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each task's upstream tasks and kind, from a workflow's canonical dict (its
    ``after``; what it reads through ``${refs}`` is in ``after`` in that dict too)."""
    from kale.model.workflow import task_kinds

    up, kinds = {}, {}
    known = set(task_kinds())  # Kale's and the plug-ins'
    for name, t in (spec.get("tasks") or {}).items():
        after = t.get("after") or []
        up[name] = [after] if isinstance(after, str) else list(after)
        kind = known.intersection(t)  # (a task has one kind)
        kinds[name] = kind.pop() if kind else ""
    return up, kinds


def _is_condition(reason: str | None) -> bool:
    """Whether a SKIPPED task's reason says a condition skipped it (no failure): its own
    condition was false, or it needed the result of a task whose condition was."""
    return bool(reason) and (str(reason).startswith("condition false")
                             or "skipped by a condition" in str(reason))


_PART = re.compile(r"\[([^\]]*)\]")


def _key(suffix: str) -> tuple[tuple[int, int | str], ...]:
    """How members sort: ``[2]`` before ``[10]``, numbers before names (``[refine]``)."""
    return tuple((0, int(k)) if k.isdigit() else (1, k) for k in _PART.findall(suffix))


class Members:
    """The tasks a run adds below a task of its workflow, by that task (its *group*): a
    map's members (``analyse[0]``, ``analyse[1]``, ...) and the tasks a task added
    (``plan[refine]``, and their own members, ``plan[refine][0]``). Each one's state, and
    per group the count per state. Pure bookkeeping for :class:`DagView`, which sends the
    browser only the counts and one page of one group (a map may have 10,000 members).

    Invariants: a name belongs to the workflow task it is named under (the nearest, by
    :func:`~kale.model.dynamic.group_of`), or to no group if none is a task of the
    workflow; every map of the workflow is a group from the start, another task once
    something was added below it; ``summary()[g]["counts"]`` sums to
    ``summary()[g]["total"]``, which is None while ``g`` has no members."""

    def __init__(self, maps: list[str], tasks: list[str] | None = None,
                 similar: dict[str, str] | None = None) -> None:
        self.maps = list(maps)
        self._tasks = set(tasks or ()) | set(self.maps)
        self._similar = dict(similar or {})  # task -> its group of similar tasks
        self._states: dict[str, dict[str, str]] = {g: {} for g in self.maps}
        for group, names in members_of(self._similar).items():
            self._states[group] = dict.fromkeys(names, "PENDING")
        # per group, its members counted by state (kept as they change: a batch of changes
        # to a group of 10,000 costs the changes, not a count of the 10,000)
        self._counts: dict[str, Counter[str]] = {
            g: Counter(t.values()) for g, t in self._states.items()}
        self._order: dict[str, list[str] | None] = {}  # sorted names, while valid

    @property
    def groups(self) -> list[str]:
        """The maps, then the other tasks that have members (in the order they got one)."""
        return list(self._states)

    def place(self, name: str) -> str | None:
        """The group ``name`` belongs to, else None (a task of the workflow, or unknown)."""
        if name in self._similar:
            return self._similar[name]
        group = group_of(name)
        while group is not None and group not in self._tasks:
            group = group_of(group)
        return group

    def set(self, name: str, state: str) -> str | None:
        """Record a member's state; returns its group (None: ``name`` is no member)."""
        group = self.place(name)
        if group is None:
            return None
        table = self._states.setdefault(group, {})
        counts = self._counts.setdefault(group, Counter())
        old = table.get(name)
        if old is None:
            self._order[group] = None
        else:
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
        counts[state] += 1
        table[name] = state
        return group

    def state(self, name: str) -> str | None:
        group = self.place(name)
        return None if group is None else self._states.get(group, {}).get(name)

    def similar(self, group: str) -> bool:
        """Whether ``group`` is a group of similar tasks of the workflow."""
        return group in self._states and group not in self.maps and group not in self._tasks

    def expand(self, names: list[str]) -> list[str]:
        """``names`` with each group of similar tasks replaced by its tasks."""
        out: list[str] = []
        for name in names:
            out.extend(self._states[name] if self.similar(name) else [name])
        return out

    def summary(self, only: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per group (of ``only``, if given): ``{"total": members or None, "counts":
        {state: n}, "kind": "map" (a map's members), "added" (tasks a task added) or
        "similar" (a group of similar tasks)}``."""
        return {g: {"total": len(t) if t else None, "counts": dict(self._counts[g]),
                    "kind": "map" if g in self.maps
                    else "similar" if self.similar(g) else "added"}
                for g, t in self._states.items() if only is None or g in only}

    def counts(self) -> Counter[str]:
        """Every member's state, counted."""
        out: Counter[str] = Counter()
        for counts in self._counts.values():
            out.update(counts)
        return out

    def page(self, group: str, offset: int, state: str = "",
             limit: int = PAGE) -> dict[str, Any]:
        """Members ``offset`` ... ``offset + limit`` of ``group`` (those in ``state``, if
        given), in order: ``{"map", "total", "matching", "offset", "filter", "rows":
        [[index, name, state], ...]}`` (``index``: the member's number in its map, else
        what it is named by below the group); an offset past the end gives the last page."""
        table = self._states.get(group, {})
        order = self._order.get(group)
        if order is None:
            key: Callable[[str], Any] = sort_key if self.similar(group) else (
                lambda n: _key(n[len(group):]))
            order = self._order[group] = sorted(table, key=key)
        chosen = [n for n in order if table[n] == state] if state else order
        offset = max(0, min(offset, (len(chosen) - 1) // limit * limit if chosen else 0))
        alike = self.similar(group)  # (its members: numbered by their place in it)
        rows = [[offset + i if alike else _index(group, n), n, table[n]]
                for i, n in enumerate(chosen[offset:offset + limit])]
        return {"map": group, "total": len(table), "matching": len(chosen),
                "offset": offset, "limit": limit, "filter": state, "rows": rows}


def _index(group: str, name: str) -> int | str:
    suffix = name[len(group):]
    inner = suffix[1:-1]
    return int(inner) if inner.isdigit() else suffix


#: which state a group of similar tasks shows as a whole: the first its members are in
GROUP_STATE = ("FAILED", "TIMEOUT", "RUNNING", "SUBMITTED", "RETRYING", "CANCELLED", "WAITING",
               "SUSPENDED", "READY", "PENDING", "SKIPPED", "SUCCEEDED")


def _group_state(group: dict[str, Any]) -> str:
    counts = group.get("counts") or {}
    return next((s for s in GROUP_STATE if counts.get(s)), "PENDING")


def _markdown(text: str) -> str:
    """A task's description as HTML (raw HTML in it is shown as text, not run)."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": False}).render(text or ""))


class DagView(RunView):
    """The run's tasks as a graph, top-down, each box filled with its state's colour and
    recoloured as the run goes. Click a box for its description, parameters, attempts
    and the end of its logs; shift- or ctrl-click to select several; then "Run
    selection", "Run from here", "Retry failed" or "Cancel" (the selection, or else the
    whole run). Actions that make a new run show it here (and in a Dashboard, everywhere).

    A map is one box (``analyse x1000``) with a bar and counts of its members' states
    (``maps``); clicking it opens its members (``opened``), a page at a time
    (``members``: ``member_offset``, ``member_filter`` by state); clicking a member shows
    its details like a task's. The members' states stay in Python: the browser gets
    counts and one page, whatever the map's size. A task a false condition skipped (no
    failure) is drawn dashed (``conditions``: task -> reason).

    Similar tasks (``sim-0`` ... ``sim-9999`` of one kind, waiting for the same things:
    :mod:`kale.widgets.groups`) are one box too, ``sim-{0..9999}``, that opens the same
    way (``group_similar=False``: a box per task).

    The browser is sent what changed, not the whole graph: ``delta`` carries each batch's
    changed boxes (``states``) and groups (``maps``), and every :data:`FULL_SYNC` seconds
    (and when a view asks, as it does when it shows) ``base_states`` and ``base_groups``
    carry everything. (``send_changes=False``: the whole states each batch, as before.)
    ``states`` and ``maps`` are what is shown now, in Python.

    ``DagView(run)`` with a run handle, ``DagView("RUN-ID", client=c)``, or
    ``DagView(workflow)`` for a workflow not yet run."""

    _esm = asset("common.js", "dag.js")
    svg = T.Unicode("").tag(sync=True)
    #: box (a task, or a group's name) -> its state, now (kept in Python)
    states = T.Dict()
    #: the states and groups as of the last full sync, and the changes of the last batch
    #: since (``{"seq": n, "states": {box: state}, "maps": {group: as in maps}}``)
    base_states = T.Dict().tag(sync=True)
    base_groups = T.Dict().tag(sync=True)
    delta = T.Dict().tag(sync=True)
    colors = T.Dict(dict(COLORS)).tag(sync=True)
    selected = T.List(T.Unicode()).tag(sync=True)
    focus = T.Unicode("").tag(sync=True)
    detail = T.Dict().tag(sync=True)
    run_state = T.Unicode("").tag(sync=True)
    counts = T.Dict().tag(sync=True)
    title = T.Unicode("").tag(sync=True)
    #: map (or task that added tasks, or group of similar tasks) -> {"total": members or
    #: None, "counts": {state: n}, "kind": "map", "added" or "similar", "svg": its box's
    #: drawing}; kept in Python (the browser gets base_groups and deltas)
    maps = T.Dict()
    #: task -> why a condition skipped it
    conditions = T.Dict().tag(sync=True)
    #: the map whose members are shown ("" none), and which of them (from the
    #: ``member_offset``th, only those in state ``member_filter`` if set)
    opened = T.Unicode("").tag(sync=True)
    member_offset = T.Int(0).tag(sync=True)
    member_filter = T.Unicode("").tag(sync=True)
    #: the page of members shown (:meth:`Members.page`)
    members = T.Dict().tag(sync=True)

    def __init__(self, run: Any = None, *, group_similar: bool = True,
                 send_changes: bool = True, **kwargs: Any) -> None:
        from kale.model.workflow import Workflow

        self.group_similar, self.send_changes = group_similar, send_changes
        self._synced = 0.0  # when the browser was last sent everything (monotonic)
        self.on_new_run: list[Any] = []  # callbacks(run_id): a Dashboard follows along
        self._upstream: dict[str, list[str]] = {}
        self._kinds: dict[str, str] = {}
        self._spec: dict[str, Any] = {}  # the workflow's tasks, as its canonical dict has them
        self._boxes: dict[str, list[str]] = {}  # what each box waits for (groups as one)
        self._members = Members([])
        self._lost = ""  # the message saying the event stream broke, while it is shown
        if isinstance(run, Workflow):
            super().__init__(None, **kwargs)
            self._draw(run.to_dict(for_store=True), run.name)
            return
        super().__init__(run, **kwargs)
        self.observe(self._focused, names="focus")
        self.observe(self._paged, names=["opened", "member_offset", "member_filter"])

    # -- the run -------------------------------------------------------------------------
    def reset(self, run_id: str) -> None:
        # The manager answers with every task's state (only that: no task's other
        # fields) while this kernel lays the workflow out (two processes, two cores).
        with ThreadPoolExecutor(1, thread_name_prefix="kale-status") as pool:
            asked = pool.submit(self.source.states, run_id)
            try:
                self._draw(self.source.workflow(run_id), self.title)
            finally:
                doc = asked.result()
        run = doc["run"]
        self.run_id, self.run_state = run["id"], run["state"]
        self.title = f"{run['workflow']} · run {run['id']}"
        members = self._members
        states = {name: state for name, state in doc["states"].items()
                  if members.set(name, state) is None}
        self.states = states
        self.conditions = {n: r for n, r in doc["conditions"].items() if n in states}
        self.after = int(doc.get("last_event") or 0)
        self._recount()
        self._full_sync()
        self.selected, self.message = [], ""
        if self.opened not in self._members.groups:
            self.opened = ""
        self._paged()
        if self._known(self.focus):
            self._load_detail(self.focus)
        else:
            self.focus, self.detail = "", {}

    def _draw(self, spec: dict[str, Any], title: str) -> None:
        self._upstream, self._kinds = _upstream(spec)
        self._spec = dict(spec.get("tasks") or {})
        maps = [n for n, t in self._spec.items() if t.get("map") is not None]
        alike = similar(self._upstream, self._kinds, set(maps)) if self.group_similar else {}
        self._members = Members(maps, list(self._spec), alike)
        self._boxes = collapse(self._upstream, alike) if alike else self._upstream
        for name, group in alike.items():
            self._kinds.setdefault(group, self._kinds.get(name, ""))
        self.title = title
        self.states, self.conditions = {}, {}
        self._recount()
        self._full_sync()
        self.svg = dag_svg(self._boxes, {}, kinds=self._kinds, maps=self.maps)

    def _full_sync(self) -> None:
        """Send the browser everything (as of now); the deltas that follow build on it."""
        with self.hold_sync():
            self.base_states, self.base_groups = dict(self.states), dict(self.maps)
            self.delta = {"seq": self.delta.get("seq", 0) + 1, "states": {}, "maps": {}}
        self._synced = time.monotonic()

    def _known(self, task: str) -> bool:
        """A task of the workflow, or a member of one of its maps the run has made."""
        return task in self._upstream or task in self._boxes \
            or self._members.state(task) is not None

    def _recount(self, only: set[str] | None = None) -> dict[str, Any]:
        """``maps`` (each with its box's drawing, ``svg``, for the browser to put in
        place) and ``counts``, from the states now; only groups ``only`` are drawn again
        (all if None). Returns the groups drawn."""
        drawn = self._members.summary(only)
        for name, group in drawn.items():
            state = self.states.get(name) or _group_state(group)
            group["svg"] = node_inner(name, state, self._kinds.get(name, ""), COLORS, group,
                                      self.conditions.get(name))
            group["state"] = state
        self.maps = drawn if only is None else {**self.maps, **drawn}
        self.counts = dict(Counter(self.states.values()) + self._members.counts())
        return drawn

    def _paged(self, _change: dict[str, Any] | None = None) -> None:
        """The page of the opened map's members the browser shows (none if no map is
        opened). (The browser's choice comes in the kernel's thread, the members' states
        in the feed's: one at a time.)"""
        with self._lock:
            if self.opened and self.opened not in self._members.groups:
                self.error = f"{self.opened!r} is not a map of this workflow (nor added tasks)"
                self.opened = ""
            page = self._members.page(self.opened, self.member_offset, self.member_filter) \
                if self.opened else {}
            if page.get("offset", self.member_offset) != self.member_offset:
                self.member_offset = page["offset"]  # (past the end: the last page)
            self.members = page

    def open_map(self, name: str, state: str = "") -> None:
        """Show the members of map ``name`` (those in ``state``, if given), from the
        first, as clicking its box does."""
        if name not in self._members.groups:
            raise KaleError(f"{name!r} is not a map of this workflow (nor added tasks)")
        with self.hold_trait_notifications():
            self.opened, self.member_filter, self.member_offset = name, state, 0
        self._paged()

    def on_events(self, batch: list[Event]) -> None:
        changed: dict[str, str] = {}
        groups: set[str] = set()  # maps whose members changed
        touched: set[str] = set()
        conditions = dict(self.conditions)
        for event, data in batch:
            if event == "state" and int(data["id"]) <= self.after:
                continue  # the snapshot has it already (or newer)
            if event == "state":
                task, new = data["task"], data["new"]
                if task is None:
                    self.run_state = new
                    continue
                touched.add(task)
                group = self._members.set(task, new)
                if group is not None:
                    groups.add(group)
                    continue
                changed[task] = new
                conditions.pop(task, None)
                if new == "SKIPPED" and _is_condition(data.get("reason")):
                    conditions[task] = data["reason"]
            elif event == "end":
                self.run_state = data["state"]
        if changed:
            self.states = {**self.states, **changed}
            self.conditions = conditions
        drawn = self._recount(groups) if changed or groups else {}
        self._tell(changed, drawn)
        if self.opened in groups:
            self._paged()
        if self.focus in touched or (self.focus in drawn and self._members.similar(self.focus)):
            self._load_detail(self.focus)

    def _tell(self, changed: dict[str, str], drawn: dict[str, Any]) -> None:
        """Tell the browser what changed: the changes alone, or everything every
        :data:`FULL_SYNC` seconds (or, ``send_changes=False``, every time)."""
        if not self.send_changes:
            self.base_states, self.base_groups = dict(self.states), dict(self.maps)
        elif time.monotonic() - self._synced >= FULL_SYNC:
            self._full_sync()
        elif changed or drawn:
            self.delta = {"seq": self.delta.get("seq", 0) + 1, "states": changed,
                          "maps": drawn}

    def on_connection(self, problem: str) -> None:
        """Say that the stream broke ("lost the connection to site hpc: reconnecting..."),
        and take it back once the stream is back (a newer message stays)."""
        if problem:
            self.message = self._lost = problem
        elif self.message == self._lost:
            self.message = ""

    # -- details -------------------------------------------------------------------------
    def _focused(self, change: dict[str, Any]) -> None:
        with self.reporting():
            self._load_detail(change["new"])

    def show(self, task: str) -> None:
        """Show ``task``'s details (as clicking its box does)."""
        if not self._known(task):
            raise KaleError(f"no task {task!r} in this workflow")
        if self.focus == task:
            self._load_detail(task)  # (a new focus loads them: _focused)
        self.focus = task

    def _load_detail(self, task: str) -> None:
        if not task or not self.run_id:
            self.detail = {}
            return
        if self._members.similar(task):  # a group's box: what it holds
            self.detail = self._group_detail(task)
            return
        t = self.source.task(self.run_id, task)
        group = t.get("member_of") or ""
        spec = self._spec.get(group or task) or {}  # a member: its map's definition
        after = t.get("after") or spec.get("after") or []
        self.detail = {
            "name": task, "state": t["state"], "kind": t.get("kind", ""),
            "description": _markdown(t.get("description") or spec.get("description", "")),
            "parameters": {k: str(v) for k, v in (t.get("parameters") or {}).items()},
            "after": [after] if isinstance(after, str) else list(after),
            "error": t.get("error") or "", "reason": t.get("reason") or "",
            "exit_code": t.get("exit_code"), "member_of": group, "index": t.get("index"),
            "group": self._members.place(task) or "",  # whose list it is in
            "similar": self._members.similar(self._members.place(task) or ""),
            "condition": bool((t.get("details") or {}).get("condition")),
            "attempts": [{"number": a["number"], "state": a["state"],
                          "started_at": a["started_at"], "ended_at": a["ended_at"],
                          "exit_code": a["exit_code"], "error": a["error"] or "",
                          "worker": a["worker"] or ""} for a in t.get("attempt_rows", [])],
            "stdout": tail(self.source.logs(self.run_id, task, "stdout")),
            "stderr": tail(self.source.logs(self.run_id, task, "stderr")),
        }

    def _group_detail(self, group: str) -> dict[str, Any]:
        """The details of a group of similar tasks: how many, in which states."""
        box = self.maps.get(group) or {}
        counts = ", ".join(f"{n} {s}" for s, n in (box.get("counts") or {}).items())
        return {"name": group, "state": box.get("state", "PENDING"),
                "kind": self._kinds.get(group, ""), "similar": True,
                "description": _markdown(f"{box.get('total')} similar tasks: {counts}. "
                                         "Click one in the list for its details."),
                "parameters": {}, "after": list(self._boxes.get(group, [])),
                "attempts": [], "stdout": "", "stderr": "", "group": ""}

    # -- actions -------------------------------------------------------------------------
    def act(self, action: str, content: dict[str, Any]) -> None:
        if action == "run_selection":
            self.run_selection()
        elif action == "run_from":
            self.run_from()
        elif action == "retry_failed":
            self.retry_failed()
        elif action == "cancel":
            self.cancel()
        elif action == "sync":  # a view that shows: everything, then changes
            with self._lock:
                self._full_sync()
        else:
            super().act(action, content)

    def _need_run(self) -> str:
        if not self.run_id:
            raise KaleError("this view shows a workflow, not a run: run it first")
        return self.run_id

    def run_selection(self, tasks: list[str] | None = None) -> str:
        """Run the selected tasks (or ``tasks``) again, as a new run; returns its id."""
        run_id = self._need_run()
        names = self._members.expand(list(tasks or self.selected))
        if not names:
            raise KaleError("select the tasks to run first (click a box; shift-click for "
                            "more)")
        return self._new_run(self.source.rerun(run_id, only=names))

    def run_from(self, task: str | None = None) -> str:
        """Run ``task`` (or the one shown) and everything below it again, as a new run."""
        run_id = self._need_run()
        name = task or self.focus
        if not name:
            raise KaleError("click the task to run from first")
        group = self._members.place(name)
        if group and self._members.similar(group):
            group = None  # one of similar tasks: from it
        name = group or name  # a member: run from its map
        names = self._members.expand([name])  # a group of similar tasks: from each
        return self._new_run(self.source.rerun(run_id, from_=names))

    def retry_failed(self) -> str:
        """Run again what did not succeed (what did is reused), as a new run."""
        run_id = self._need_run()
        return self._new_run(self.source.rerun(run_id, failed=True))

    def cancel(self, tasks: list[str] | None = None) -> None:
        """Cancel the selected tasks (or ``tasks``); with none selected, the whole run."""
        run_id = self._need_run()
        names = self._members.expand(list(tasks or self.selected))
        for name in names:
            self.source.task_action(run_id, name, "cancel")
        if not names:
            self.source.cancel(run_id)
        self.message = f"cancelled {', '.join(names) if names else 'the run'}"

    def _new_run(self, run_id: str) -> str:
        if self.on_new_run:
            for callback in self.on_new_run:
                callback(run_id)
        else:
            self.show_run(run_id)
        self.message = f"started run {run_id}"
        return run_id

    # -- static pictures -----------------------------------------------------------------
    def to_svg(self, path: str | Path | None = None) -> str:
        """The graph as it is now, as a standalone SVG document (written to ``path`` if
        given), for a report."""
        svg = dag_svg(self._boxes, self.states, kinds=self._kinds, title=self.title,
                      maps=self.maps, conditions=self.conditions)
        if path is not None:
            Path(path).write_text(svg)
        return svg

    def to_png(self, path: str | Path, scale: float = 2.0) -> Path:
        """The graph as it is now, as a PNG file (needs CairoSVG)."""
        svg_to_png(self.to_svg(), str(path), scale)
        return Path(path)
