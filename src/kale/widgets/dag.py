"""DagView: the workflow laid out top-down, each task coloured by its state, live."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import traitlets as T

from kale.errors import KaleError
from kale.model.display import COLORS
from kale.widgets.base import RunView, asset
from kale.widgets.layout import dag_svg, svg_to_png
from kale.widgets.source import Event, tail


def _upstream(spec: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each task's upstream tasks and kind, from a workflow's canonical dict."""
    from kale.model.workflow import task_kinds

    up, kinds = {}, {}
    known = task_kinds()  # Kale's and the plug-ins'
    for name, t in (spec.get("tasks") or {}).items():
        after = t.get("after") or []
        up[name] = [after] if isinstance(after, str) else list(after)
        kinds[name] = next((k for k in known if k in t), "")
    return up, kinds


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

    ``DagView(run)`` with a run handle, ``DagView("RUN-ID", client=c)``, or
    ``DagView(workflow)`` for a workflow not yet run."""

    _esm = asset("common.js", "dag.js")
    svg = T.Unicode("").tag(sync=True)
    states = T.Dict().tag(sync=True)
    colors = T.Dict(dict(COLORS)).tag(sync=True)
    selected = T.List(T.Unicode()).tag(sync=True)
    focus = T.Unicode("").tag(sync=True)
    detail = T.Dict().tag(sync=True)
    run_state = T.Unicode("").tag(sync=True)
    counts = T.Dict().tag(sync=True)
    title = T.Unicode("").tag(sync=True)

    def __init__(self, run: Any = None, **kwargs: Any) -> None:
        from kale.model.workflow import Workflow

        self.on_new_run: list[Any] = []  # callbacks(run_id): a Dashboard follows along
        self._upstream: dict[str, list[str]] = {}
        self._kinds: dict[str, str] = {}
        self._lost = ""  # the message saying the event stream broke, while it is shown
        if isinstance(run, Workflow):
            super().__init__(None, **kwargs)
            self._draw(run.to_dict(for_store=True), run.name)
            return
        super().__init__(run, **kwargs)
        self.observe(self._focused, names="focus")

    # -- the run -------------------------------------------------------------------------
    def reset(self, run_id: str) -> None:
        doc = self.source.status(run_id)
        run = doc["run"]
        self.run_id, self.run_state = run["id"], run["state"]
        self._draw(self.source.workflow(run_id), f"{run['workflow']} · run {run['id']}")
        self.states = {t["name"]: t["state"] for t in doc.get("tasks", [])}
        self.after = int(doc.get("last_event") or 0)
        self.counts = dict(Counter(self.states.values()))
        self.selected, self.message = [], ""
        if self.focus in self._upstream:
            self._load_detail(self.focus)
        else:
            self.focus, self.detail = "", {}

    def _draw(self, spec: dict[str, Any], title: str) -> None:
        self._upstream, self._kinds = _upstream(spec)
        self.title = title
        self.svg = dag_svg(self._upstream, {}, kinds=self._kinds)

    def on_events(self, batch: list[Event]) -> None:
        changed: dict[str, str] = {}
        for event, data in batch:
            if event == "state" and int(data["id"]) <= self.after:
                continue  # the snapshot has it already (or newer)
            if event == "state":
                if data["task"] is None:
                    self.run_state = data["new"]
                else:
                    changed[data["task"]] = data["new"]
            elif event == "end":
                self.run_state = data["state"]
        if changed:
            self.states = {**self.states, **changed}
            self.counts = dict(Counter(self.states.values()))
            if self.focus in changed:
                self._load_detail(self.focus)

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
        if task not in self._upstream:
            raise KaleError(f"no task {task!r} in this workflow")
        if self.focus == task:
            self._load_detail(task)  # (a new focus loads them: _focused)
        self.focus = task

    def _load_detail(self, task: str) -> None:
        if not task or not self.run_id:
            self.detail = {}
            return
        t = self.source.task(self.run_id, task)
        self.detail = {
            "name": task, "state": t["state"], "kind": t.get("kind", ""),
            "description": _markdown(t.get("description", "")),
            "parameters": {k: str(v) for k, v in (t.get("parameters") or {}).items()},
            "after": t.get("after", []), "error": t.get("error") or "",
            "reason": t.get("reason") or "", "exit_code": t.get("exit_code"),
            "attempts": [{"number": a["number"], "state": a["state"],
                          "started_at": a["started_at"], "ended_at": a["ended_at"],
                          "exit_code": a["exit_code"], "error": a["error"] or "",
                          "worker": a["worker"] or ""} for a in t.get("attempt_rows", [])],
            "stdout": tail(self.source.logs(self.run_id, task, "stdout")),
            "stderr": tail(self.source.logs(self.run_id, task, "stderr")),
        }

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
        else:
            super().act(action, content)

    def _need_run(self) -> str:
        if not self.run_id:
            raise KaleError("this view shows a workflow, not a run: run it first")
        return self.run_id

    def run_selection(self, tasks: list[str] | None = None) -> str:
        """Run the selected tasks (or ``tasks``) again, as a new run; returns its id."""
        run_id = self._need_run()
        names = list(tasks or self.selected)
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
        return self._new_run(self.source.rerun(run_id, from_=[name]))

    def retry_failed(self) -> str:
        """Run again what did not succeed (what did is reused), as a new run."""
        run_id = self._need_run()
        return self._new_run(self.source.rerun(run_id, failed=True))

    def cancel(self, tasks: list[str] | None = None) -> None:
        """Cancel the selected tasks (or ``tasks``); with none selected, the whole run."""
        run_id = self._need_run()
        names = list(tasks or self.selected)
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
        svg = dag_svg(self._upstream, self.states, kinds=self._kinds, title=self.title)
        if path is not None:
            Path(path).write_text(svg)
        return svg

    def to_png(self, path: str | Path, scale: float = 2.0) -> Path:
        """The graph as it is now, as a PNG file (needs CairoSVG)."""
        svg_to_png(self.to_svg(), str(path), scale)
        return Path(path)
