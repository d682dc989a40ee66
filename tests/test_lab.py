"""An interactive step in real JupyterLab, in headless Chromium through Playwright: the
step notebook opens on the ``kale-task`` kernel (attached to the step's own kernel, not a
new one), its cells see the task's variables, and its last cell continues the workflow."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import ROOT, Kale, Manager, free_port, wait_until
from kale import Workflow
from test_workers import task

# A JupyterLab server, a browser and real kernels on a loaded machine: each wait below is a
# safety net of a minute or two, and together they exceed the default 120 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "kale-lab-test"


class Lab:
    """A JupyterLab server of our own: its own port, settings and workspaces."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        settings = root / "_lab" / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.log = root / "_lab" / "lab.log"
        with open(self.log, "w") as log:
            self.proc = self._start(root, env, log)
        wait_until(lambda: self._ours(root), what="JupyterLab to answer")

    def _start(self, root: Path, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             f"--port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={root / '_lab' / 'settings'}",
             f"--LabApp.workspaces_dir={root / '_lab' / 'ws'}", "--LabApp.news_url=None"],
            stdout=log, stderr=subprocess.STDOUT, env=env)

    def _ours(self, root: Path) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return "_lab" in self.get("/api/contents")
        except OSError:
            return False

    def get(self, path: str, method: str = "GET") -> str:
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.get("/api/shutdown", "POST")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def lab_for() -> Iterator[Callable[[Path], Lab]]:
    started: list[Lab] = []

    def make(root: Path) -> Lab:
        lab = Lab(root, {**os.environ})
        started.append(lab)
        return lab

    yield make
    for lab in started:
        lab.stop()


def test_a_step_notebook_runs_on_the_tasks_kernel_in_jupyterlab(
        chromium: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager], lab_for: Callable[[Path], Lab]) -> None:
    from playwright.sync_api import expect, sync_playwright

    user = nbformat.v4.new_notebook()
    user.cells = [nbformat.v4.new_markdown_cell("Record the answer for the next task."),
                  nbformat.v4.new_code_cell("kale.record('answer', n * 2)\nprint('pid', "
                                            "__import__('os').getpid())")]
    nbformat.write(user, tmp_path / "review.ipynb")
    wf = Workflow("lab-step", base_dir=tmp_path)
    prep = wf.shell("prep", "kale record n 21")
    wf.notebook("review", "review.ipynb", after=[prep], parameters={"n": prep["n"]},
                interactive=True, description="# Review in JupyterLab")

    def use(review: dict[str, Any]) -> int:
        return int(review["answer"]) + 1

    wf.python(use, after=["review"])
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: task(client, run.id, "review")["state"] == "WAITING",
                   what="WAITING")
        kernel_pid = client.kernel_info(run.id, "review")["pid"]
    runs = home / "runs" / run.id
    lab = lab_for(runs)
    shot = ROOT / "test-output" / "lab-step.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab.base}/lab/tree/review/step.ipynb?token={TOKEN}")
            idle = page.locator("#jp-main-statusbar").get_by_text(
                re.compile(r"Kale task \(attach\) \| Idle"))
            expect(idle.first).to_be_visible(timeout=120_000)
            page.locator("#jp-menu-panel").get_by_text("Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            page.wait_for_function("""() => { const ps = [...document.querySelectorAll(
                '.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
                return ps.length && ps.every(p => /\\[\\d+\\]/.test(p.textContent)); }""",
                                   timeout=120_000)
            outputs = page.locator(".jp-NotebookPanel .jp-OutputArea-output")
            # The cells ran in the step's own kernel: its inputs, its process.
            expect(outputs.filter(has_text="'n': 21").first).to_be_visible(timeout=60_000)
            expect(outputs.filter(has_text=f"pid {kernel_pid}").first).to_be_visible(
                timeout=60_000)
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
            assert not errors, errors
        finally:
            browser.close()
    with m.client() as client:
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"
        assert client.result(run.id, "use") == 43
    assert shot.stat().st_size > 10_000
