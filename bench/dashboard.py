"""DagView in real JupyterLab: how long a large DAG takes to show, and whether the view keeps
up with a run's state changes. Kale's view beside a naive ipywidgets one, in the same run.

    python bench/dashboard.py            # 1,000 tasks -> bench/results/dashboard.md
    python bench/dashboard.py --quick    # 100 tasks, one repetition (CI smoke)

Real pieces only: a Kale manager (``kale manager start --workers 1``, its home on tmpfs), a
JupyterLab server of our own (own port, token, root, settings and workspaces; its kernels
get ``KALE_HOME``, so ``kale.Client()`` in a cell finds the manager), and Debian's headless
Chromium driven by Playwright. The bench writes a notebook into the lab's root, opens it,
and runs its cells one at a time (click the cell, Ctrl+Enter: run in place). Each
measured cell first closes the previous cell's widget, so one view at a time is live.

Both views show the workflow as the same SVG (``kale.widgets.layout.dag_svg``: one
``<g class="kale-node" data-state=...>`` per task) and read the same manager event
stream, batched every 0.1 s:

``kale``   ``DagView(run, group_similar=False)`` (a box per task, as the naive view: the
           layers' ``t{i}`` would otherwise be grouped): the SVG is sent once; then only
           each batch's changes, and the browser recolours the boxes whose state changed.
``naive``  :func:`naive_dag`: an ``ipywidgets.HTML`` whose ``value`` is the whole graph
           drawn again with ``dag_svg`` after every batch of events (one thread reads
           ``kale.Client().events(run)``, another redraws every 0.1 s if something changed).

In the page, a MutationObserver on the cell notes, for each task, when its box first
shows SUCCEEDED (``Date.now()``), and when all N boxes do; a keydown listener notes when
Ctrl+Enter was pressed (``performance.now()``).

``render``  a finished N-task run (shell ``true``, 10 layers of N/10 tasks, each task after
            one or two tasks of the layer above), submitted and waited for before the browser
            opens. The cell: ``t0 = time.time(); from kale.widgets import DagView;
            v = DagView(kale.Client().run(RUN_ID)); print(time.time() - t0); v``. Time from
            the key press until all N boxes are in the DOM with ``data-state="SUCCEEDED"``
            (*DOM*), and until the frame after that has been painted (*on screen*:
            ``requestAnimationFrame`` then ``setTimeout 0``); then 2 s more, counting boxes
            that go back to an earlier state (a view replaying the run's history over what
            it showed), and when all N last became SUCCEEDED (*for good*). The first
            execution in the fresh kernel (*cold*: imports, the first ``kale.Client()``, the
            browser loading the widget's module; Kale's runs first) is reported on its own;
            then R repetitions, alternating Kale and naive; medians.
``live``    the cell submits an N-task run of the same shape and shows it at once:
            ``burst`` (``true``: thousands of state changes a second) and ``steady``
            (``sleep 0.05``: about 150 a second, near the issue's 100). Each system gets a
            run of its own. From the manager (the run's stored state events): changes per
            second (task state events over the span from the first to the last), the run's
            ``ended_at``. From the page: when every box showed its final state. Reported:
            that moment minus ``ended_at`` (*lag at the end*); per task, the moment its box
            turned SUCCEEDED minus its SUCCEEDED event's ``ts`` (p50/p95/max); *most tasks
            behind*: the largest gap, sampled every 0.1 s, between tasks SUCCEEDED per the
            manager and per the DOM; boxes that went back to an earlier state
            (*regressions*); how many SVG elements the page drew; and the CPU seconds the
            kernel, the Jupyter server and Chromium used during the cell (beside their idle
            use, measured for 3 s with a finished graph shown).

``--big N`` (issue 17, goal 5) measures a big graph instead, Kale's view alone (a naive view
of 100,000 boxes does not show): ``start``, a fan-out of N/10 replicas ``sim-{i}``, chains
``c{c}-{k}`` (of 100 steps; of 10 below 10,000 tasks) for the rest, and ``gather`` after all,
every task the no-op Python function ``noops:noop``. The DagView groups similar tasks, so the
graph is a few boxes whatever N. *live*: the cell submits the run and shows it at once; the
page notes when each plain box first shows SUCCEEDED and, for each group's box, when its
count of succeeded members (``text.kale-map-count``) went up to what; a member's *box
update* lag is when its group's box first counted as many SUCCEEDED members as had
succeeded, per the manager's events, when it did, minus that event's ``ts``. The WebSocket
frames the page received during the cell (Playwright) give the bytes sent per update (the
view's comm messages: ``delta`` and full syncs) beside what the former whole-states message
would have weighed (the JSON of every task's state). *display*: a new cell shows the
finished run, ``DagView(kale.Client().run(RUN))``; from Ctrl+Enter until every box shows
SUCCEEDED and a frame was painted (median of R, after a cold first). ``--big 100000 --quick``
is not needed: ``--quick --big`` uses 2,000 tasks.

Every wait has a timeout: a DOM that never reaches the expected state fails the script
(with what it did show). Nothing here asserts a timing. ``--keep`` keeps the temporary
folder (manager, worker and lab logs).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import save_report
from _manager import free_port, kale_cli, reap

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "kale-bench-dashboard"
LAYERS = 10
SYSTEMS = ("kale", "naive")
LIVE = {"burst": "true", "steady": "sleep 0.05"}


# -- the workflow and the baseline (both also imported by the notebook's kernel) --------------
def layered(n: int, command: str, layers: int = LAYERS) -> Any:
    """``n`` shell tasks in ``layers`` layers; each task after the task above it and, for
    most, one more of the layer above (so edges cross, as in a real DAG)."""
    from kale import Workflow

    width = max(1, n // layers)
    wf = Workflow(f"dag-{n}")
    for i in range(n):
        layer, j = divmod(i, width)
        above = (layer - 1) * width
        after = [] if layer == 0 else sorted({f"t{above + j}", f"t{above + (7 * j + 3) % width}"})
        wf.shell(f"t{i}", command, after=after)
    return wf


def big(n: int, pace: float = 0.0) -> Any:
    """``start``; about ``n // 10`` replicas ``sim-{i}`` after it; chains ``c{c}-{k}`` of 100 steps
    (10 below 10,000 tasks) after it for the rest; ``gather`` after every replica and every
    chain's end. Every task the no-op ``noops:noop`` (``bench/`` on the workers' path), or
    with ``pace`` ``noops:nap`` of that many seconds (a slower run)."""
    from kale import Workflow

    wf = Workflow(f"big-{n}")

    def task(name: str, after: Any = None) -> Any:
        if pace:
            return wf.python("noops:nap", name=name, after=after,
                             parameters={"seconds": pace})
        return wf.python("noops:noop", name=name, after=after)

    start = task("start")
    length = 100 if n >= 10_000 else 10
    chains = (n - 2 - n // 10) // length
    ends = [task(f"sim-{i}", start)  # (and what is left over)
            for i in range(n - 2 - chains * length)]
    for c in range(chains):
        prev = start
        for k in range(length):
            prev = task(f"c{c}-{k}", prev)
        ends.append(prev)
    wf.python("noops:noop", name="gather", after=ends)
    return wf


def naive_dag(run: Any, interval: float = 0.1) -> Any:
    """The baseline: what one writes with ipywidgets alone. An ``ipywidgets.HTML`` showing the
    whole graph, drawn again (``dag_svg``) and sent whole after each batch of the run's
    events: a thread reads the manager's stream, another redraws every ``interval`` seconds
    when a state changed (the cadence of Kale's own feed)."""
    import ipywidgets

    import kale
    from kale.widgets.layout import dag_svg

    tasks = run.spec().get("tasks") or {}
    upstream = {}
    for name, t in tasks.items():
        after = t.get("after") or []
        upstream[name] = [after] if isinstance(after, str) else list(after)
    states = {t["name"]: t["state"] for t in run.status()["tasks"]}
    view = ipywidgets.HTML(dag_svg(upstream, states))
    pending: dict[str, str] = {}
    lock, read_all = threading.Lock(), threading.Event()

    def read() -> None:
        try:
            for event, data in kale.Client().events(run.id):
                if event == "state" and data["task"] is not None:
                    with lock:
                        pending[data["task"]] = data["new"]
        finally:
            read_all.set()

    def draw() -> None:
        while True:
            ended = read_all.wait(interval)
            with lock:
                changed = dict(pending)
                pending.clear()
            if changed:
                states.update(changed)
                view.value = dag_svg(upstream, states)
            if ended:
                return

    for target in (read, draw):
        threading.Thread(target=target, daemon=True).start()
    return view


# -- the notebook --------------------------------------------------------------------------
def cells(render_run: str, n: int) -> dict[str, str]:
    """The notebook's cells by key (in order). Each measured cell counts itself in ``REP``
    and prints ``rep REP``, so the page can tell its output from the last one's."""
    head = "REP += 1\nif v is not None:\n    v.close()\nt0 = time.time()\n"
    make = {"kale": "from kale.widgets import DagView\nv = DagView({}, group_similar=False)",
            "naive": "v = naive_dag({})"}
    out = {"setup": f"import sys, time\nsys.path.insert(0, {str(BENCH)!r})\nimport kale\n"
                    "from dashboard import layered, naive_dag\nREP, v = 0, None"}
    for system in SYSTEMS:
        out[f"render-{system}"] = (
            head + make[system].format(f"kale.Client().run({render_run!r})")
            + '\nprint(f"rep {REP} built in {time.time() - t0:.4f} s")\nv')
    for mode, command in LIVE.items():
        for system in SYSTEMS:
            out[f"{mode}-{system}"] = (
                head + f"run = kale.Client().submit(layered({n}, {command!r}), force=True)\n"
                + make[system].format("run")
                + '\nprint(f"rep {REP} run {run.id} built in {time.time() - t0:.4f} s")\nv')
    return out


def write_notebook(path: Path, sources: dict[str, str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources.values()]
    nbformat.write(nb, path)


# -- JupyterLab ----------------------------------------------------------------------------
class Lab:
    """A JupyterLab server of our own: its own port, token, root, settings, workspaces."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        private = root.parent / "_lab"
        settings = private / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.log = private / "lab.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                 f"--port={self.port}", "--ServerApp.port_retries=0",
                 f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
                 f"--LabApp.user_settings_dir={private / 'settings'}",
                 f"--LabApp.workspaces_dir={private / 'ws'}", "--LabApp.news_url=None"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("JupyterLab did not start:\n"
                                   + self.log.read_text()[-3000:])
            time.sleep(0.3)

    def _answers(self) -> bool:
        try:
            self.call("/api/status")
            return True
        except OSError:
            return False

    def call(self, path: str, method: str = "GET") -> str:
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.call("/api/shutdown", "POST")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def chromium() -> str:
    path = ROOT / "test-output" / "chromium.path"
    exe = path.read_text().strip() if path.is_file() else "/usr/bin/chromium"
    if not os.access(exe, os.X_OK):
        sys.exit(f"no Chromium at {exe} (scripts/services/chromium.sh)")
    return exe


# -- in the page -----------------------------------------------------------------------------
KEYS = """() => document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.ctrlKey) window.__pressed = performance.now(); }, true)"""

# Watch cell ``index`` for its output ``marker`` and then its N boxes: per task, when it first
# showed SUCCEEDED; when all N first did (and when the frame after that was painted), and
# when they last came to (after boxes that went back to an earlier state); the number of
# such regressions, in all and after all N had shown SUCCEEDED; how many SVGs were drawn.
WATCH = """([index, n, marker]) => {
  const RANK = {PENDING: 0, READY: 1, SUBMITTED: 2, RUNNING: 3, SUCCEEDED: 4};
  if (window.__bench) window.__bench.observer.disconnect();
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[index];
  const w = window.__bench = {ours: false, done: null, doneAt: null, painted: null,
    settled: null, complete: false, nodes: 0, count: 0, final: {}, last: {}, regressions: 0,
    late: 0, svg: null, svgs: 0, error: null};
  const scan = () => {
    for (const o of cell.querySelectorAll('.jp-OutputArea-output[data-mime-type*="std"]')) {
      if (o.textContent.includes('Traceback')) w.error = o.textContent;  // a traceback
    }
    if (!w.ours) {
      w.ours = [...cell.querySelectorAll('.jp-RenderedText')]
        .some((o) => o.textContent.includes(marker));
      if (!w.ours) return;
    }
    const svg = cell.querySelector('svg.kale-dag-svg');
    if (svg !== w.svg) {
      w.svg = svg;
      if (svg) w.svgs++;
    }
    const now = Date.now(), nodes = cell.querySelectorAll('g.kale-node');
    let count = 0;
    for (const g of nodes) {
      const name = g.dataset.task, state = g.dataset.state, rank = RANK[state] ?? 5;
      if (rank < (w.last[name] ?? -1)) {
        w.regressions++;
        if (w.done !== null) w.late++;
      }
      w.last[name] = rank;
      if (state === 'SUCCEEDED') {
        count++;
        if (!(name in w.final)) w.final[name] = now;
      }
    }
    w.nodes = nodes.length;
    w.count = count;
    const complete = nodes.length === n && count === n;
    if (complete && !w.complete) w.settled = performance.now();
    w.complete = complete;
    if (complete && w.done === null) {
      w.done = performance.now();
      w.doneAt = now;
      requestAnimationFrame(() => setTimeout(() => { w.painted = performance.now(); }, 0));
    }
  };
  w.observer = new MutationObserver(scan);
  w.observer.observe(cell, {subtree: true, childList: true, attributes: true,
                            attributeFilter: ['data-state']});
}"""
RESULT = """() => { const w = window.__bench;
  return {pressed: window.__pressed, done: w.done, doneAt: w.doneAt, painted: w.painted,
          settled: w.settled, complete: w.complete, final: w.final,
          regressions: w.regressions, late: w.late, svgs: w.svgs}; }"""
STATE = """() => { const w = window.__bench;
  return {marker_seen: w.ours, nodes: w.nodes, succeeded: w.count, error: w.error}; }"""


# Watch cell ``index`` (once its output shows ``marker``): when each plain box first showed
# SUCCEEDED, and each group's box's count of succeeded members, each time it went up.
BIGWATCH = """([index, marker]) => {
  if (window.__big) window.__big.observer.disconnect();
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[index];
  const w = window.__big = {ours: false, first: null, plain: {}, groups: {}, error: null};
  const look = (g) => {
    const name = g.dataset.task, now = Date.now();
    const count = g.querySelector('text.kale-map-count');
    if (count) {
      const m = /^(\\d+) /.exec(count.textContent || '');
      if (!m) return;
      const k = Number(m[1]), seen = w.groups[name] || (w.groups[name] = []);
      if (!seen.length || seen[seen.length - 1][1] < k) seen.push([now, k]);
    } else if (g.dataset.state === 'SUCCEEDED' && !(name in w.plain)) w.plain[name] = now;
  };
  const all = () => { for (const g of cell.querySelectorAll('g.kale-node')) look(g); };
  const scan = (records) => {
    for (const o of cell.querySelectorAll('.jp-OutputArea-output[data-mime-type*="std"]')) {
      if (o.textContent.includes('Traceback')) w.error = o.textContent;
    }
    if (!w.ours) {
      w.ours = [...cell.querySelectorAll('.jp-RenderedText')]
        .some((o) => o.textContent.includes(marker));
      if (!w.ours) return;
    }
    const boxes = new Set();
    let whole = false;
    for (const r of records) {
      const at = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const g = at && at.closest('g.kale-node');
      if (g) boxes.add(g); else whole = true;
    }
    if (whole) all(); else for (const g of boxes) look(g);
    if (w.first === null && cell.querySelector('g.kale-node')) w.first = Date.now();
  };
  w.observer = new MutationObserver(scan);
  w.observer.observe(cell, {subtree: true, childList: true, characterData: true,
                            attributes: true, attributeFilter: ['data-state']});
}"""


class Notebook:
    """The notebook open in JupyterLab: runs a cell and watches its output."""

    def __init__(self, page: Any, keys: list[str], lab: Lab) -> None:
        self.page, self.keys, self.lab = page, keys, lab
        self.rep = 0
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.evaluate(KEYS)

    def cell(self, key: str) -> Any:
        return self.page.locator(".jp-NotebookPanel .jp-Cell").nth(self.keys.index(key))

    def press(self, key: str) -> None:
        cell = self.cell(key)
        cell.locator(".jp-InputPrompt").click()
        cell.evaluate("(e) => e.scrollIntoView({block: 'start'})")
        self.page.keyboard.press("Control+Enter")

    def setup(self) -> None:
        self.press("setup")
        prompt = self.cell("setup").locator(".jp-InputPrompt")
        deadline = time.monotonic() + 60
        while not re.search(r"\[\d+\]", prompt.inner_text()):
            if time.monotonic() > deadline:
                raise RuntimeError("the setup cell did not run in 60 s")
            time.sleep(0.1)
        errors = self.cell("setup").locator(".jp-OutputArea-output", has_text="Traceback")
        if errors.count():
            raise RuntimeError(f"the setup cell failed: {errors.first.inner_text()}")

    def measure(self, key: str, n: int, timeout: float, settle: float) -> dict[str, Any]:
        """Run cell ``key``; wait until its N boxes all show SUCCEEDED (and a frame later),
        then ``settle`` seconds more, watching for boxes that go back."""
        self.rep += 1
        marker = f"rep {self.rep} "
        self.page.evaluate(WATCH, [self.keys.index(key), n, marker])
        procs = Processes(self.lab)
        self.press(key)
        try:
            self.page.wait_for_function(
                "() => window.__bench.painted !== null || window.__bench.error !== null",
                timeout=timeout * 1000, polling=50)
        except Exception as e:
            raise RuntimeError(f"cell {key}: the DOM did not show {n} SUCCEEDED boxes within "
                               f"{timeout:.0f} s: {self.page.evaluate(STATE)}; "
                               f"page errors: {self.errors}") from e
        cpu = procs.used()
        state = self.page.evaluate(STATE)
        if state["error"]:
            raise RuntimeError(f"cell {key} failed: {state['error']}")
        time.sleep(settle)
        out = self.page.evaluate(RESULT)
        if not out["complete"]:
            raise RuntimeError(f"cell {key}: {n} SUCCEEDED boxes, then not {settle:g} s later: "
                               f"{self.page.evaluate(STATE)}")
        text = "\n".join(self.cell(key).locator(".jp-RenderedText").all_inner_texts())
        line = re.search(rf"{marker}(?:run (\S+) )?built in ([\d.]+) s", text)
        if line is None:
            raise RuntimeError(f"cell {key}: no '{marker}... built in' line in {text!r}")
        out.update(run_id=line.group(1), build=float(line.group(2)), cpu=cpu)
        return out


class Processes:
    """CPU seconds used from now on by the kernel, the Jupyter server and Chromium."""

    def __init__(self, lab: Lab) -> None:
        import psutil

        server = psutil.Process(lab.proc.pid)
        browser = [p for p in psutil.Process().children(recursive=True)
                   if "chrom" in p.name().lower()]
        self.groups = {"kernel": [p for p in server.children(recursive=True)
                                  if "ipykernel" in " ".join(p.cmdline())],
                       "server": [server], "chromium": browser}
        self.start = self._times()

    def _times(self) -> dict[str, float]:
        import psutil

        out = {}
        for group, procs in self.groups.items():
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            out[group] = total
        return out

    def used(self) -> dict[str, float]:
        now = self._times()
        return {g: now[g] - self.start[g] for g in now}


# -- measurements ----------------------------------------------------------------------------
def render(nb: Notebook, n: int, reps: int) -> dict[str, Any]:
    def once(system: str) -> dict[str, Any]:
        r = nb.measure(f"render-{system}", n, timeout=120, settle=2.0)
        return {"screen": (r["painted"] - r["pressed"]) / 1000,
                "dom": (r["done"] - r["pressed"]) / 1000,
                "settled": (r["settled"] - r["pressed"]) / 1000, "build": r["build"],
                "regressions": r["regressions"], "late": r["late"], "cpu": r["cpu"]}

    out: dict[str, Any] = {s: {"cold": once(s), "reps": []} for s in SYSTEMS}
    for _ in range(reps):
        for system in SYSTEMS:  # alternating, so that drift hits both alike
            out[system]["reps"].append(once(system))
    return out


def live(nb: Notebook, client: Any, mode: str, system: str, n: int) -> dict[str, Any]:
    r = nb.measure(f"{mode}-{system}", n, timeout=240, settle=1.0)
    run_id = r["run_id"]
    client.run(run_id).wait(120)
    doc = client.status(run_id, tasks=False)["run"]
    if doc["state"] != "SUCCEEDED":
        raise RuntimeError(f"live run {run_id} ({mode}, {system}): {doc['state']}")
    events = [d for e, d in client.events(run_id) if e == "state" and d["task"] is not None]
    ts = [d["ts"] for d in events]
    done_ts = {d["task"]: d["ts"] for d in events if d["new"] == "SUCCEEDED"}
    shown = {name: ms / 1000 for name, ms in r["final"].items()}
    lags = sorted(shown[name] - at for name, at in done_ts.items())
    manager_times, dom_times = sorted(done_ts.values()), sorted(shown.values())
    behind, t = 0, min(ts)
    while t <= max(dom_times):
        behind = max(behind, _count_le(manager_times, t) - _count_le(dom_times, t))
        t += 0.1
    return {"run_id": run_id, "changes": len(events), "span": max(ts) - min(ts),
            "rate": len(events) / (max(ts) - min(ts)),
            "run_seconds": doc["ended_at"] - doc["created_at"],
            "end_lag": r["doneAt"] / 1000 - doc["ended_at"],
            "lag_p50": _pct(lags, 50), "lag_p95": _pct(lags, 95), "lag_max": lags[-1],
            "behind": behind, "regressions": r["regressions"], "svgs": r["svgs"],
            "build": r["build"], "cpu": r["cpu"]}


def idle(lab: Lab, seconds: float = 3.0) -> dict[str, float]:
    """CPU seconds per second with nothing changing (the last graph still shown)."""
    procs = Processes(lab)
    time.sleep(seconds)
    return {g: used / seconds for g, used in procs.used().items()}


def _count_le(sorted_times: list[float], t: float) -> int:
    return bisect.bisect_right(sorted_times, t)


def _pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


# -- a big graph (--big) ---------------------------------------------------------------------
def big_cells(n: int, pace: float = 0.0) -> dict[str, str]:
    """The big mode's notebook: set-up, the live cell (submit and show), the display cell
    (``RUN_ID`` filled in by the live cell)."""
    head = "REP += 1\nif v is not None:\n    v.close()\nt0 = time.time()\n"
    return {"setup": f"import sys, time\nsys.path.insert(0, {str(BENCH)!r})\nimport kale\n"
                     "from dashboard import big\nfrom kale.widgets import DagView\n"
                     f"REP, v, WF = 0, None, big({n}, {pace!r})",
            "live": head + "run = kale.Client().submit(WF, force=True)\nRUN_ID = run.id\n"
                    "v = DagView(run)\n"
                    'print(f"rep {REP} run {run.id} built in {time.time() - t0:.4f} s")\nv',
            "display": head + "v = DagView(kale.Client().run(RUN_ID))\n"
                       'print(f"rep {REP} built in {time.time() - t0:.4f} s")\nv'}


def boxes_of(wf: Any) -> tuple[int, dict[str, list[str]]]:
    """How many boxes the DagView draws for ``wf``, and each group's member tasks."""
    from kale.widgets.groups import collapse, members_of, similar

    up = {name: list(t.after) for name, t in wf.tasks.items()}
    group = similar(up)
    return len(collapse(up, group)), members_of(group)


def big_live(nb: Notebook, client: Any, groups: dict[str, list[str]],
             frames: list[tuple[float, int]], timeout: float) -> dict[str, Any]:
    """The live cell: box update lags at the run's rate of state changes, bytes per update."""
    nb.rep += 1
    marker = f"rep {nb.rep} "
    nb.page.evaluate(BIGWATCH, [nb.keys.index("live"), marker])
    totals = {g: len(m) for g, m in groups.items()}
    procs = Processes(nb.lab)
    frames.clear()
    nb.press("live")
    nb.page.wait_for_function(
        """(totals) => { const w = window.__big; if (w.error) return true;
             if (!('gather' in w.plain)) return false;
             return Object.entries(totals).every(([g, n]) => {
               const s = w.groups[g] || []; return s.length && s[s.length - 1][1] >= n; }); }""",
        arg=totals, timeout=timeout * 1000, polling=100)
    cpu = procs.used()
    seen = nb.page.evaluate("() => window.__big")
    if seen["error"]:
        raise RuntimeError(f"the live cell failed: {seen['error']}")
    text = "\n".join(nb.cell("live").locator(".jp-RenderedText").all_inner_texts())
    line = re.search(rf"{marker}run (\S+) built in ([\d.]+) s", text)
    if line is None:
        raise RuntimeError(f"no '{marker}run ... built in' line in {text!r}")
    run_id = line.group(1)
    client.run(run_id).wait(120)
    doc = client.status(run_id, tasks=False)["run"]
    events = [d for e, d in client.events(run_id) if e == "state" and d["task"] is not None]
    ts = [d["ts"] for d in events]
    first = seen["first"] / 1000
    place = {m: g for g, ms in groups.items() for m in ms}
    done: dict[str, list[float]] = {}
    lags = []
    for d in sorted((d for d in events if d["new"] == "SUCCEEDED"), key=lambda d: d["ts"]):
        box = place.get(d["task"], d["task"])
        done.setdefault(box, []).append(d["ts"])
        if d["ts"] < first:
            continue  # before the view showed: in its snapshot
        if box in groups:  # when its box first counted this many
            k = len(done[box])
            at = next((t for t, c in seen["groups"].get(box, []) if c >= k), None)
        else:
            at = seen["plain"].get(box)
        if at is not None:
            lags.append(at / 1000 - d["ts"])
    lags.sort()
    during = [b for t, b in frames]
    full = len(json.dumps({d["task"]: "SUCCEEDED" for d in events}))
    return {"run_id": run_id, "changes": len(events), "span": max(ts) - min(ts),
            "rate": len(events) / (max(ts) - min(ts)), "state": doc["state"],
            "run_seconds": doc["ended_at"] - doc["created_at"],
            "build": float(line.group(2)), "lags": len(lags),
            "lag_p50": _pct(lags, 50), "lag_p95": _pct(lags, 95), "lag_max": lags[-1],
            "frames": len(during), "bytes": sum(during),
            "frame_p50": _pct(sorted(during), 50) if during else 0,
            "frame_max": max(during, default=0), "whole_states_bytes": full, "cpu": cpu,
            "load": os.getloadavg()}


def big_main(args: argparse.Namespace) -> None:
    """``--big N``: the big graph's live run and display (see the module)."""

    from kale import Client

    n = 2_000 if args.quick else args.big
    reps = 1 if args.quick else 3
    tmp = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="kale-bench-dashboard-", dir=tmp))
    home, lab_root = root / "home", root / "lab"
    lab_root.mkdir()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)  # noops, for workers
    env = {**os.environ, "KALE_HOME": str(home), "IPYTHONDIR": str(root / "ipython"),
           **{f"JUPYTER_{d.upper()}_DIR": str(root / d) for d in ("config", "data", "runtime")}}
    env.pop("KALE_STORE_URL", None)
    count, groups = boxes_of(big(n))
    doc: dict[str, Any] = {"n": n, "boxes": count, "groups": {g: len(m) for g, m in
                                                              groups.items()},
                           "environment": environment()}
    kale_cli(home, "manager", "start", "--port", str(free_port()), "--workers", "2")
    frames: list[tuple[float, int]] = []

    def frame(payload: Any) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        if b"comm_msg" in data and (b'"delta"' in data or b'"base_states"' in data):
            frames.append((time.time(), len(data)))

    try:
        client = Client(home=home, timeout=300)
        sources = big_cells(n, args.pace)
        write_notebook(lab_root / "dashboard.ipynb", sources)
        with lab_page(lab_root, env, frame) as (lab, page):
            nb = Notebook(page, list(sources), lab)
            nb.setup()
            doc["live"] = big_live(nb, client, groups, frames, timeout=900)
            doc["display"] = []
            for _ in range(reps + 1):  # the first: cold
                r = nb.measure("display", count, timeout=120, settle=1.0)
                doc["display"].append({"screen": (r["painted"] - r["pressed"]) / 1000,
                                       "dom": (r["done"] - r["pressed"]) / 1000,
                                       "build": r["build"], "load": os.getloadavg()})
            doc["page_errors"] = nb.errors
    finally:
        with contextlib.suppress(Exception):
            kale_cli(home, "manager", "stop", timeout=30)
        reap(root)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    name = "dashboard-big-quick" if args.quick else "dashboard-big"
    doc["pace"] = args.pace
    save_report(RESULTS, name + ("-paced" if args.pace else ""), big_report(doc, args.quick),
                doc)


@contextlib.contextmanager
def lab_page(lab_root: Path, env: dict[str, str], on_frame: Any = None
             ) -> Iterator[tuple[Lab, Any]]:
    """JupyterLab on ``lab_root`` and a headless Chromium page showing its
    ``dashboard.ipynb``, once the kernel is idle; ``on_frame(payload)`` sees every
    WebSocket frame the page receives. Both are stopped on the way out."""
    from playwright.sync_api import sync_playwright

    lab = Lab(lab_root, env)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                if on_frame is not None:
                    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
                page.goto(f"{lab.base}/lab/tree/dashboard.ipynb?token={TOKEN}")
                page.locator("#jp-main-statusbar").get_by_text(
                    re.compile(r"\| Idle")).first.wait_for(timeout=90_000)
                yield lab, page
            finally:
                browser.close()
    finally:
        lab.stop()


def big_report(doc: dict[str, Any], quick: bool) -> str:
    med = statistics.median
    lv, shows = doc["live"], doc["display"][1:] or doc["display"]
    screen = [d["screen"] for d in shows]
    paced = f", each sleeping {doc['pace']} s" if doc.get("pace") else ""
    out = [f"### Dashboard, a big graph ({'quick' if quick else 'full'}: {doc['n']:,} tasks"
           f"{paced} drawn as {doc['boxes']} boxes; groups: "
           + ", ".join(f"{g} ({m:,})" for g, m in doc["groups"].items()) + ")\n\n",
           f"{doc['environment']}\n\n| | Kale DagView | goal |\n|---|---:|---:|\n",
           f"| display a finished run: Ctrl+Enter to every box final, painted (median of "
           f"{len(shows)}; range {min(screen):.2f}-{max(screen):.2f} s) | {med(screen):.2f} s "
           "| < 3 s |\n",
           f"| display, Python build (median) | {med(d['build'] for d in shows):.2f} s | |\n",
           f"| display, first in a fresh kernel (cold) | {doc['display'][0]['screen']:.2f} s "
           "| |\n",
           f"| live: task state changes / s in the manager ({lv['changes']:,} in "
           f"{lv['span']:.1f} s) | {lv['rate']:,.0f} | 1,000 |\n",
           f"| live: box update lag (box counts a SUCCEEDED minus its event's ts), p50 / p95 "
           f"/ max of {lv['lags']:,} | {lv['lag_p50']:.2f} / {lv['lag_p95']:.2f} / "
           f"{lv['lag_max']:.2f} s | p95 < 0.5 s |\n",
           f"| live: view updates received (WebSocket frames), bytes median / max / total | "
           f"{lv['frames']:,}: {lv['frame_p50']:,} / {lv['frame_max']:,} / {lv['bytes']:,} B "
           "| |\n",
           f"| the former update: every task's state, whole, each 0.1 s batch | "
           f"{lv['whole_states_bytes']:,} B | |\n",
           "| live: CPU s during the cell, kernel / server / Chromium | "
           + " / ".join(f"{lv['cpu'][g]:.1f}" for g in ("kernel", "server", "chromium"))
           + f" (run {lv['run_seconds']:.1f} s) | |\n",
           f"\nLoad average during the live run (at its end) "
           f"{' / '.join(f'{x:.2f}' for x in lv['load'])}, after the displays "
           f"{' / '.join(f'{x:.2f}' for x in doc['display'][-1]['load'])}.\n"]
    if doc.get("page_errors"):
        out.append(f"\nPage errors: {doc['page_errors']}\n")
    return "".join(out)


# -- the report ------------------------------------------------------------------------------
def report(doc: dict[str, Any], quick: bool) -> str:
    med = statistics.median
    n, rnd = doc["n"], doc["render"]
    head = "| | Kale DagView | naive ipywidgets.HTML | naive / Kale |\n|---|---:|---:|---:|\n"

    def reps(system: str, field: str) -> list[float]:
        return [r[field] for r in rnd[system]["reps"]]

    def row(label: str, k: float, b: float, unit: str = " s", digits: int = 2) -> str:
        ratio = f"{b / k:.1f}x" if k > 0 and b > 0 else ""
        return f"| {label} | {k:.{digits}f}{unit} | {b:.{digits}f}{unit} | {ratio} |\n"

    def plain(label: str, k: Any, b: Any) -> str:
        return f"| {label} | {k} | {b} | |\n"

    def flicker(system: str) -> str:
        runs = [*rnd[system]["reps"], rnd[system]["cold"]]
        hit = [r["late"] for r in runs if r["late"]]
        return f"{sum(hit)} in {len(hit)} of {len(runs)} displays"

    out = [f"### Dashboard ({'quick' if quick else 'full'} sizes: {n} tasks)\n\n",
           f"{doc['environment']}\n\n",
           f"Render a finished {n}-task run: from Ctrl+Enter, median of "
           f"{len(rnd['kale']['reps'])} (after a first, cold display)\n\n", head,
           row("on screen (all boxes SUCCEEDED, next frame painted)",
               med(reps("kale", "screen")), med(reps("naive", "screen"))),
           plain("on screen, range",
                 *(f"{min(reps(s, 'screen')):.2f}-{max(reps(s, 'screen')):.2f} s"
                   for s in SYSTEMS)),
           row("DOM: all boxes SUCCEEDED", med(reps("kale", "dom")), med(reps("naive", "dom"))),
           row("Python: build the widget (the cell's own timing)", med(reps("kale", "build")),
               med(reps("naive", "build")), digits=3),
           plain("first display in a fresh kernel (cold; Kale's comes first), on screen",
                 *(f"{rnd[s]['cold']['screen']:.2f} s" for s in SYSTEMS)),
           plain("first display, Python build",
                 *(f"{rnd[s]['cold']['build']:.3f} s" for s in SYSTEMS)),
           plain("boxes that went back to an earlier state in the next 2 s",
                 flicker("kale"), flicker("naive")),
           row("all boxes SUCCEEDED for good (after any such flicker)",
               med(reps("kale", "settled")), med(reps("naive", "settled")))]
    for mode, command in LIVE.items():
        k, b = doc["live"][mode]["kale"], doc["live"][mode]["naive"]
        out += [f"\nLive `{command}` run ({mode}): one run per view, the cell submits it and "
                "shows it\n\n", head,
                plain("task state changes / s (changes in s)",
                      *(f"{r['rate']:,.0f} ({r['changes']} in {r['span']:.1f} s)"
                        for r in (k, b))),
                row("run, created to ended", k["run_seconds"], b["run_seconds"]),
                row("lag at the end: all boxes final minus the run's ended_at", k["end_lag"],
                    b["end_lag"]),
                *(row(f"per-task lag (box SUCCEEDED minus its event's ts), {p}",
                      k[f"lag_{p}"], b[f"lag_{p}"]) for p in ("p50", "p95", "max")),
                plain("most tasks behind the manager (0.1 s samples)", k["behind"],
                      b["behind"]),
                plain("SVGs drawn in the page", k["svgs"], b["svgs"]),
                plain("boxes that went back to an earlier state", k["regressions"],
                      b["regressions"]),
                *(row(f"CPU s during the cell: {g}", k["cpu"][g], b["cpu"][g])
                  for g in ("kernel", "server", "chromium"))]
    idle = doc["idle"]
    out.append(f"\nIdle (the notebook open, a finished graph shown), CPU s per s: kernel "
               f"{idle['kernel']:.3f}, server {idle['server']:.3f}, "
               f"Chromium {idle['chromium']:.3f}\n")
    return "".join(out)


def environment() -> str:
    from importlib.metadata import version

    browser = subprocess.run([chromium(), "--version"], capture_output=True,
                             text=True).stdout.strip()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}, nproc {os.cpu_count()}, "
            f"JupyterLab {version('jupyterlab')}, anywidget {version('anywidget')}, "
            f"ipywidgets {version('ipywidgets')}, {browser}, load average {load} at start")


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="100 tasks, one repetition")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--big", type=int, nargs="?", const=100_000, default=0, metavar="N",
                   help="a big graph of N tasks (100,000; 2,000 with --quick) instead")
    p.add_argument("--pace", type=float, default=0.0, metavar="SECONDS",
                   help="with --big: each task sleeps this long (a slower run: its "
                        "results go to dashboard-big-paced)")
    args = p.parse_args()
    if args.big:
        big_main(args)
        return
    n, reps = (100, 1) if args.quick else (1000, 5)


    from kale import Client

    tmp = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="kale-bench-dashboard-", dir=tmp))
    home, lab_root = root / "home", root / "lab"
    lab_root.mkdir()
    env = {**os.environ, "KALE_HOME": str(home), "IPYTHONDIR": str(root / "ipython"),
           **{f"JUPYTER_{d.upper()}_DIR": str(root / d) for d in ("config", "data", "runtime")}}
    env.pop("KALE_STORE_URL", None)
    doc: dict[str, Any] = {"n": n, "reps": reps, "environment": environment()}
    kale_cli(home, "manager", "start", "--port", str(free_port()), "--workers", "1")
    try:
        client = Client(home=home, timeout=120)
        run = client.submit(layered(n, "true"), force=True)
        state = run.wait(300).state.value
        if state != "SUCCEEDED":
            raise RuntimeError(f"the {n}-task run to render: {state}")
        sources = cells(run.id, n)
        write_notebook(lab_root / "dashboard.ipynb", sources)
        with lab_page(lab_root, env) as (lab, page):
            nb = Notebook(page, list(sources), lab)
            nb.setup()
            doc["render"] = render(nb, n, reps)
            doc["idle"] = idle(lab)
            doc["live"] = {mode: {s: live(nb, client, mode, s, n) for s in SYSTEMS}
                           for mode in LIVE}
            doc["page_errors"] = nb.errors
    finally:
        with contextlib.suppress(Exception):
            kale_cli(home, "manager", "stop", timeout=30)
        reap(root)  # workers of this home, and anything else left with it
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")

    text = report(doc, args.quick)
    if doc["page_errors"]:
        text += f"\nPage errors: {doc['page_errors']}\n"
    save_report(RESULTS, "dashboard-quick" if args.quick else "dashboard", text, doc)


if __name__ == "__main__":
    main()
