"""The dashboard in a real browser: JupyterLab 4 (and Notebook 7) in headless Chromium
through Playwright, on the example notebook, against a real manager and workers."""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Manager
from kale.model.display import COLORS
from test_lab import CHROMIUM_ARGS, TOKEN, Lab, lab_for  # noqa: F401 - a fixture

# JupyterLab, a browser, a manager and workers on a loaded machine: each wait below is a
# safety net of a minute or two, and together they exceed the default 120 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
EXAMPLE = ROOT / "examples" / "dashboard" / "dashboard.ipynb"
PROMPTS = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.replace(/\\s|:/g, ''))"""
TRACEBACK = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
    .some(o => o.textContent.includes('Traceback (most recent call last)'))"""


def _until(page: Any, done: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Until ``done()``, accepting a "Select Kernel" dialog whenever one comes (Notebook 7
    sometimes asks, despite the notebook's kernelspec, and not always at once)."""
    accept = page.locator(".jp-Dialog button.jp-mod-accept")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        elif done():
            return
        time.sleep(0.2)
    page.screenshot(path=str(ROOT / "test-output" / "dashboard-timeout.png"))
    raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                         "(screenshot: test-output/dashboard-timeout.png)")


def kernel_ready(page: Any, idle: Any) -> None:
    _until(page, lambda: bool(idle.count()) and not page.locator(".jp-Dialog").count(),
           "the notebook's kernel to be idle")


def prompts(page: Any) -> list[str]:
    """The code cells' prompts: "[ ]" not run, "[*]" queued or running, "[3]" ran."""
    return list(page.evaluate(f"({PROMPTS})()"))


def run_all(page: Any, idle: Any) -> None:
    """Run > Run All Cells, until every code cell has run without an error.

    Notebook 7 sometimes loses cells of the request: all of them when it is made just as
    its kernel connects, or some, when its kernel still connects or when a late "Select
    Kernel" dialog restarts it (a lost cell goes back to "[ ]", or a cell after it fails
    for want of what it defines). So once the request has done all it will (nothing
    queued or running, the kernel idle), a request that did not run every cell is made
    again. Only the last cell has a lasting effect (it starts the run), and it is run
    again only if it failed or never ran. (A request that is not lost changes the
    prompts at once, in the page, before any kernel answers: the 30 s allowed for that
    are a browser's time, not a kernel's.)"""
    for _ in range(5):
        before = prompts(page)
        page.get_by_role("menuitem", name="Run", exact=True).first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            _until(page, lambda b=before: prompts(page) != b, "a cell to start", 30)
        except AssertionError:
            continue  # the whole request was lost
        _until(page, lambda: "[*]" not in prompts(page) and bool(idle.count())
               and not page.locator(".jp-Dialog").count(), "the cells to run")
        ran = prompts(page)
        if ran and all(p not in ("[]", "[*]") for p in ran) \
                and not page.evaluate(f"({TRACEBACK})()"):
            return
    page.screenshot(path=str(ROOT / "test-output" / "dashboard-timeout.png"))
    raise AssertionError(f"Run All Cells did not run every cell in 5 tries: {prompts(page)} "
                         "(screenshot: test-output/dashboard-timeout.png)")


@contextlib.contextmanager
def example_page(chromium: str, tmp_path: Path, make_lab: Callable[[Path], Lab], path: str,
                 idle: str, viewport: dict[str, int],
                 notebook: Path = EXAMPLE) -> Iterator[tuple[Any, list[str]]]:
    """The example notebook (or ``notebook``), copied to a lab of its own, opened at
    ``path`` in Chromium; every cell run. Yields the page and the page errors seen."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "lab"
    root.mkdir(exist_ok=True)
    shutil.copy(notebook, root / "dashboard.ipynb")
    from playwright.sync_api import expect

    lab = make_lab(root)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=CHROMIUM_ARGS)
        # What the page shows after a click goes through the kernel and back: a minute,
        # not the default 5 s, on a loaded machine (a safety net: expect() returns as soon
        # as the page shows it).
        expect.set_options(timeout=60_000)
        try:
            page = browser.new_page(viewport=viewport)
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab.base}/{path}?token={TOKEN}")
            kernel_ready(page, page.locator(idle))
            run_all(page, page.locator(idle))
            yield page, errors
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for other tests
            browser.close()


def test_the_example_dashboard_in_jupyterlab(
        chromium: str, home: Path, tmp_path: Path, managers: Callable[..., Manager],
        lab_for: Callable[[Path], Lab]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    managers("--workers", "1")  # the notebook's wf.run(manager=True) finds it
    shot = ROOT / "test-output" / "dashboard.png"
    with example_page(chromium, tmp_path, lab_for, "lab/tree/dashboard.ipynb",
                      "#jp-main-statusbar >> text=/\\| Idle/",
                      {"width": 1400, "height": 1100}) as (page, errors):
        def node(name: str) -> object:
            return page.locator(f".kale-dag g.kale-node[data-task='{name}']")

        # The run goes on live: boxes turn the succeeded colour as tasks end.
        expect(page.locator(".kale-dag g.kale-node")).to_have_count(7, timeout=60_000)
        for name in ("fetch", "clean-a", "clean-b", "clean-c", "summarise"):
            expect(node(name)).to_have_attribute("data-state", "SUCCEEDED",
                                                 timeout=120_000)
        fill = node("fetch").locator("rect")  # type: ignore[attr-defined]
        expect(fill).to_have_attribute("fill", COLORS["SUCCEEDED"])
        expect(node("plot")).to_have_attribute("data-state", "FAILED", timeout=60_000)
        expect(node("report")).to_have_attribute("data-state", "SKIPPED", timeout=60_000)

        # Click the failed task: its description, attempts and log.
        node("plot").click()  # type: ignore[attr-defined]
        detail = page.locator(".kale-dag-detail")
        expect(detail).to_contain_text("Fails the first time")
        expect(detail.locator(".kale-stderr")).to_contain_text("no display to plot on")
        expect(detail).to_contain_text("exit code 1")
        log = page.locator(".kale-log-view .kale-log-text")
        page.get_by_role("tab", name="Log").click()
        expect(page.locator(".kale-log-view select.kale-task-select")).to_have_value("plot")

        # Retry what failed: a new run, where plot and then report succeed.
        first = page.locator(".kale-dag .kale-title").inner_text()
        page.locator(".kale-dag button", has_text="Retry failed").click()
        expect(page.locator(".kale-dag .kale-title")).not_to_have_text(first,
                                                                    timeout=60_000)
        expect(node("plot")).to_have_attribute("data-state", "SUCCEEDED", timeout=120_000)
        expect(node("report")).to_have_attribute("data-state", "SUCCEEDED",
                                                 timeout=120_000)
        expect(node("fetch")).to_have_attribute("data-state", "SUCCEEDED")
        expect(node("plot").locator("rect")).to_have_attribute(  # type: ignore[attr-defined]
            "fill", COLORS["SUCCEEDED"])
        node("plot").click()  # type: ignore[attr-defined]
        expect(detail.locator(".kale-stdout")).to_contain_text("plotted")
        page.select_option(".kale-log-view select.kale-stream-select", "stdout")
        expect(log).to_contain_text("plotted", timeout=60_000)
        page.locator(".kale-dag").scroll_into_view_if_needed()
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=False)
        # The other tabs draw what the manager has: both runs, the worker, the charts.
        page.get_by_role("tab", name="Runs").click()
        expect(page.locator(".kale-runs tr[data-run]")).to_have_count(2)
        page.get_by_role("tab", name="Workers").click()
        expect(page.locator(".kale-workers tr[data-worker]")).to_have_count(1)
        page.get_by_role("tab", name="Resources").click()
        expect(page.locator(".kale-resources svg.kale-chart")).to_have_count(2)
        page.get_by_role("tab", name="Connect").click()
        expect(page.locator(".kale-login .kale-connected")).to_have_text("not connected")
        # Zoom: "+" zooms in by a quarter, "Fit" shows the whole graph again.
        zoom = page.locator(".kale-dag .kale-zoom")
        page.locator(".kale-dag button", has_text="Fit").click()
        fitted = zoom.text_content()
        page.locator(".kale-dag button", has_text="+").click()
        expect(zoom).not_to_have_text(fitted or "")
        page.locator(".kale-dag button", has_text="Fit").click()
        expect(zoom).to_have_text(fitted or "")
        assert not errors, errors
    assert shot.stat().st_size > 10_000


def test_the_example_dashboard_in_notebook_7(
        chromium: str, home: Path, tmp_path: Path, managers: Callable[..., Manager],
        lab_for: Callable[[Path], Lab]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    managers("--workers", "1")
    # the same server serves Notebook 7 at /notebooks/
    with example_page(chromium, tmp_path, lab_for, "notebooks/dashboard.ipynb",
                      ".jp-Notebook-ExecutionIndicator[data-status='idle']",
                      {"width": 1300, "height": 1000}) as (page, errors):
        node = page.locator(".kale-dag g.kale-node[data-task='plot']")
        expect(node).to_have_attribute("data-state", "FAILED", timeout=120_000)
        page.locator(".kale-dag button", has_text="Retry failed").click()
        expect(node).to_have_attribute("data-state", "SUCCEEDED", timeout=120_000)
        expect(node.locator("rect")).to_have_attribute("fill", COLORS["SUCCEEDED"])
        page.screenshot(path=str(ROOT / "test-output" / "dashboard-notebook7.png"))
        # Notebook 7.6 itself throws this once for any ipywidget (a plain IntSlider
        # does it too): its settings plugin finds no schema for the widget manager.
        ours = [e for e in errors if "reading 'schema'" not in e]
        assert not ours, ours


MAP_NOTEBOOK = """\
from pathlib import Path

from kale import Workflow

gate = Path("gate").resolve()  # the members wait for it: the test opens it once it saw them run
wf = Workflow("map-demo", parameters={"xs": list(range(150))})
sim = wf.shell("simulate", "echo simulated")
analyse = wf.shell(
    "analyse", f"w=0; until [ -e {gate} ]; do [ $w -lt 3000 ] || exit 99; w=$((w+1)); "
    "sleep 0.1; done; echo x=$x; case $x in 7|70|140) echo cannot read $x >&2; exit 3;; esac",
    map={"x": "${params.xs}"}, after=sim, description="Analyse one element.")
wf.shell("summary", "echo summary", after=analyse)
wf.shell("extra", "echo extra", after=sim, when="${params.xs} == []")
run = wf.run(manager=True)
dash = run.dashboard()
dash
"""


def _one_cell_notebook(path: Path, source: str) -> Path:
    """Write a notebook of one code cell, ``source``, on the python3 kernel, to ``path``."""
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}})
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)
    return path


def test_a_map_in_the_dashboard_is_one_box_with_counts_that_opens_into_its_members(
        chromium: str, home: Path, tmp_path: Path, managers: Callable[..., Manager],
        lab_for: Callable[[Path], Lab]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    notebook = _one_cell_notebook(tmp_path / "map.ipynb", MAP_NOTEBOOK)
    managers("--workers", "1", "--worker-slots", "4")
    shot = ROOT / "test-output" / "dashboard-map.png"
    with example_page(chromium, tmp_path, lab_for, "lab/tree/dashboard.ipynb",
                      "#jp-main-statusbar >> text=/\\| Idle/",
                      {"width": 1400, "height": 1100}, notebook) as (page, errors):
        box = page.locator(".kale-dag g.kale-node.kale-map[data-task='analyse']")
        # Live: the members run (they wait for the gate), counted in the map's one box.
        expect(box.locator("rect[data-state='RUNNING']")).to_have_count(1, timeout=120_000)
        expect(box.locator("text.kale-label")).to_have_text("analyse \u00d7150")
        (tmp_path / "lab" / "gate").touch()
        expect(box.locator("text.kale-map-count")).to_have_text("147 ✓ 3 ✗ 0 ▶",
                                                               timeout=180_000)
        expect(box).to_have_attribute("data-state", "FAILED")
        expect(box.locator("rect[data-state='FAILED']")).to_have_attribute("data-count", "3")
        expect(box.locator("rect.kale-box")).to_have_attribute("fill", COLORS["FAILED"])
        extra = page.locator(".kale-dag g.kale-node[data-task='extra']")
        expect(extra).to_have_attribute("data-state", "SKIPPED")
        expect(extra).to_have_class(re.compile("kale-cond"))  # drawn apart from a failure
        expect(page.locator(".kale-dag g.kale-node")).to_have_count(4)  # never a box a member

        # Click the map: its members, a page at a time, then only the failed ones.
        box.click()
        members = page.locator(".kale-dag .kale-members")
        rows = members.locator("tr[data-member]")
        expect(rows).to_have_count(100)
        expect(members.locator(".kale-page")).to_have_text("1\u2013100 of 150")
        members.get_by_title("Next page").click()
        expect(rows).to_have_count(50)
        expect(rows.last).to_have_attribute("data-member", "analyse[149]")
        members.locator("[data-filter='FAILED']").click()
        expect(rows).to_have_count(3)
        expect(members.locator(".kale-page")).to_have_text("1\u20133 of 3")
        # Click a member: its details and log, as for a task.
        members.locator("tr[data-member='analyse[70]']").click()
        detail = page.locator(".kale-dag-detail")
        expect(detail.locator(".kale-detail-head")).to_contain_text("analyse[70]")
        expect(detail.locator(".kale-member-of")).to_have_text("member 70 of analyse")
        expect(detail.locator(".kale-stderr")).to_contain_text("cannot read 70")
        expect(detail).to_contain_text("exit code 3")
        expect(members.locator("tr.kale-focus")).to_have_attribute("data-member", "analyse[70]")
        # The Log tab shows it (made after the tab loaded), offering the workflow's four
        # tasks and it, not 150 members; the Resources tab draws it alone until "all tasks".
        page.get_by_role("tab", name="Log").click()
        task = page.locator(".kale-log-view select.kale-task-select")
        expect(task).to_have_value("analyse[70]")
        expect(task.locator("option")).to_have_count(5)
        page.select_option(".kale-log-view select.kale-stream-select", "stderr")
        expect(page.locator(".kale-log-view .kale-log-text")).to_have_text("cannot read 70\n")
        page.get_by_role("tab", name="Resources").click()
        only = page.locator(".kale-resources .kale-only")
        expect(only.locator(".kale-only-task")).to_have_text("analyse[70]")
        only.get_by_role("button", name="all tasks").click()
        expect(only).to_be_hidden()
        expect(page.locator(".kale-resources svg.kale-chart")).to_have_count(2)
        extra.click()
        expect(detail.locator(".kale-cond-reason")).to_contain_text("condition false")
        page.locator(".kale-dag").scroll_into_view_if_needed()
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=False)
        assert not errors, errors


GROUP_NOTEBOOK = """\
from pathlib import Path

from kale import Workflow

gate = Path("gate").resolve()  # the replicas wait for it: the test opens it once it saw them run
wf = Workflow("fan-out")
start = wf.shell("start", "true")
sims = [wf.shell(f"sim-{i}", f"w=0; until [ -e {gate} ]; do [ $w -lt 3000 ] || exit 99; "
                 f"w=$((w+1)); sleep 0.1; done; echo replica {i}", after=start)
        for i in range(200)]
steps = [wf.shell(f"c{c}-0", "true", after=start) for c in range(12)]
steps = [wf.shell(f"c{c}-1", "true", after=s) for c, s in enumerate(steps)]
wf.shell("gather", "true", after=sims + steps)
run = wf.run(manager=True)
dash = run.dashboard()
dash
"""


def test_similar_tasks_are_one_box_that_opens_and_the_graph_pans_and_zooms(
        chromium: str, home: Path, tmp_path: Path, managers: Callable[..., Manager],
        lab_for: Callable[[Path], Lab]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    notebook = _one_cell_notebook(tmp_path / "group.ipynb", GROUP_NOTEBOOK)
    managers("--workers", "1", "--worker-slots", "4")
    shot = ROOT / "test-output" / "dashboard-group.png"
    with example_page(chromium, tmp_path, lab_for, "lab/tree/dashboard.ipynb",
                      "#jp-main-statusbar >> text=/\\| Idle/",
                      {"width": 1400, "height": 1100}, notebook) as (page, errors):
        canvas = page.locator(".kale-dag .kale-dag-canvas")
        box = page.locator(".kale-dag g.kale-node.kale-map[data-task='sim-{0..199}']")
        # 200 replicas are one box, 12 chains of 2 steps two: 5 boxes for 226 tasks.
        expect(page.locator(".kale-dag g.kale-node")).to_have_count(5)
        expect(page.locator(".kale-dag g.kale-node[data-task='c{0..11}-1']")).to_have_count(1)
        expect(box.locator("text.kale-label")).to_have_text("sim-{0..199} \u00d7200")
        expect(box.locator("rect[data-state='RUNNING']")).to_have_count(1, timeout=120_000)
        expect(box).to_have_attribute("data-state", "RUNNING")
        # Changes only: each update redraws the boxes that changed, never the graph.
        updates = int(canvas.get_attribute("data-updates") or 0)
        canvas.evaluate("(c) => { c.querySelector('svg').dataset.mark = 'drawn once'; }")
        (tmp_path / "lab" / "gate").touch()
        expect(box.locator("text.kale-map-count")).to_have_text("200 ✓ 0 ✗ 0 ▶",
                                                               timeout=180_000)
        expect(page.locator(".kale-dag g.kale-node[data-task='gather']")).to_have_attribute(
            "data-state", "SUCCEEDED", timeout=120_000)
        assert int(canvas.get_attribute("data-updates") or 0) > updates
        assert int(canvas.get_attribute("data-painted") or 0) < 5  # the last: what changed
        assert canvas.locator("svg").get_attribute("data-mark") == "drawn once"
        expect(box).to_have_attribute("data-state", "SUCCEEDED")

        # Click the group: its 200 tasks, a page at a time; one of them: its details.
        box.click()
        members = page.locator(".kale-dag .kale-members")
        expect(members.locator(".kale-members-head")).to_contain_text("200 similar tasks")
        rows = members.locator("tr[data-member]")
        expect(rows).to_have_count(100)
        expect(rows.first).to_have_attribute("data-member", "sim-0")
        members.get_by_title("Next page").click()
        expect(rows.last).to_have_attribute("data-member", "sim-199")
        members.locator("tr[data-member='sim-150']").click()
        detail = page.locator(".kale-dag-detail")
        expect(detail.locator(".kale-member-of")).to_have_text("one of sim-{0..199}")
        expect(detail.locator(".kale-stdout")).to_have_text("replica 150\n")

        # Pan and zoom by mouse: the wheel zooms about the cursor, a drag pans (and is
        # no click); zoomed far out, the labels are hidden rather than unreadable.
        svg = canvas.locator("svg")
        label = page.locator(".kale-dag g.kale-node[data-task='start'] text.kale-label")
        page.locator(".kale-dag button", has_text="Fit").click()
        canvas.hover()
        zoom = float(canvas.get_attribute("data-zoom") or 0)
        page.mouse.wheel(0, -300)  # in
        expect(canvas).not_to_have_attribute("data-zoom", f"{zoom:.4f}")
        assert float(canvas.get_attribute("data-zoom") or 0) > zoom
        expect(canvas).to_have_attribute("data-lod", "near")
        expect(label).to_be_visible()
        before = svg.get_attribute("style")
        r = canvas.bounding_box()
        assert r is not None
        page.mouse.move(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
        page.mouse.down()
        page.mouse.move(r["x"] + r["width"] / 2 + 120, r["y"] + r["height"] / 2 + 60,
                        steps=5)
        page.mouse.up()
        expect(svg).not_to_have_attribute("style", before or "")
        assert "translate(" in (svg.get_attribute("style") or "")
        expect(detail.locator(".kale-detail-head")).to_contain_text("sim-150")  # no click
        for _ in range(8):
            page.mouse.wheel(0, 400)  # far out
        expect(canvas).to_have_attribute("data-lod", "far")
        expect(label).to_be_hidden()
        page.locator(".kale-dag button", has_text="Fit").click()
        expect(canvas).to_have_attribute("data-zoom", f"{zoom:.4f}")
        page.locator(".kale-dag").scroll_into_view_if_needed()
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=False)
        assert not errors, errors
