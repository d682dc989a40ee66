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
                 idle: str, viewport: dict[str, int]) -> Iterator[tuple[Any, list[str]]]:
    """The example notebook, copied to a lab of its own, opened at ``path`` in Chromium;
    every cell run. Yields the page and the page errors seen."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(EXAMPLE, root / "dashboard.ipynb")
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
        # Zoom: fit the graph to the width, then zoom in from there.
        svg = page.locator(".kale-dag-canvas svg")
        page.locator(".kale-dag button", has_text="Fit").click()
        expect(svg).to_have_attribute("style", re.compile(r"width: 100%"))
        page.locator(".kale-dag button", has_text="+").click()
        expect(page.locator(".kale-dag .kale-zoom")).not_to_have_text("fit")
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
