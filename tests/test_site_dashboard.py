"""The dashboard of a run at an SSH site, in a real browser: JupyterLab 4 in headless
Chromium (the harness of tests/test_dashboard_lab.py), on this side, as root, with its own
KALE_HOME that holds the site's definition. The notebook does what a scientist does,
``run = wf.run(site="hpc"); run.dashboard()``, and the page shows the live graph, the
task states to the end and a task's log, all through the site's SSH connection (no port
forwarding by the user), and goes on when that connection is SIGKILLed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, Kale, process_alive, wait_until
from sitekit import (  # noqa: F401 (the fixtures site and site_host)
    SiteUnderTest,
    site_fixture,
    site_host_fixture,
)
from test_dashboard_lab import kernel_ready, run_all
from test_lab import CHROMIUM_ARGS, TOKEN, Lab, lab_for  # noqa: F401 - a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def lab_root(tmp_path: Path, site: SiteUnderTest) -> Path:
    """A lab with the project (a workflow whose first task waits on a gate at the site)
    and the notebook that runs it at the site and shows its dashboard."""
    root = tmp_path / "lab"
    project = root / "project"
    project.mkdir(parents=True)
    gate = f"{site.abs_home}/gate"
    (project / "wf.yaml").write_text(textwrap.dedent(f"""\
        name: site-dashboard
        tasks:
          fetch:
            shell: "echo fetching at $(hostname); until [ -e {gate} ]; do sleep 0.05; done;
              echo fetched by $(whoami)"
          clean-a:
            shell: "echo cleaning a"
            after: [fetch]
          clean-b:
            shell: "echo cleaning b"
            after: [fetch]
          report:
            shell: "echo report by $(whoami)"
            after: [clean-a, clean-b]
        """))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import kale\n"
                                          "wf = kale.Workflow.from_yaml('project/wf.yaml')"),
                nbformat.v4.new_code_cell("run = wf.run(site='hpc')\ndash = run.dashboard()\n"
                                          "dash"),
                # what the graph's message line said, for the test to read
                nbformat.v4.new_code_cell("said = open('messages.txt', 'a', buffering=1)\n"
                                          "dash.dag.observe(lambda c: said.write(repr(c['new'])"
                                          " + '\\n'), names='message')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "site.ipynb")
    return root


def test_the_dashboard_of_a_run_at_a_site_in_jupyterlab(
        chromium: str, kale: Kale, site: SiteUnderTest, tmp_path: Path,
        lab_for: Callable[[Path], Lab]) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from kale.sites.site import Site

    # The lab's kernels get this test's KALE_HOME (the `home` fixture set it), whose
    # sites.json the `site` fixture wrote: the notebook names the site, nothing else.
    assert os.environ["KALE_HOME"] == str(kale.home)
    root = lab_root(tmp_path, site)
    lab = lab_for(root)
    link = Site.named("hpc", kale.home).link
    shot = ROOT / "test-output" / "site-dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=CHROMIUM_ARGS)
        expect.set_options(timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab.base}/lab/tree/site.ipynb?token={TOKEN}")
            idle = page.locator("#jp-main-statusbar >> text=/\\| Idle/")
            kernel_ready(page, idle)
            run_all(page, idle)

            def node(name: str) -> object:
                return page.locator(f".kale-dag g.kale-node[data-task='{name}']")

            # The live graph: the run at the site, its first task running there.
            expect(page.locator(".kale-dag g.kale-node")).to_have_count(4)
            expect(node("fetch")).to_have_attribute("data-state", "RUNNING")
            expect(node("report")).to_have_attribute("data-state", "PENDING")
            title = page.locator(".kale-dag .kale-title").inner_text()
            run_id = title.rsplit("run ", 1)[1].strip()
            # its log, followed live in the Log tab
            page.get_by_role("tab", name="Log").click()
            expect(page.locator(".kale-log-view select.kale-task-select")).to_have_value(
                "fetch")
            log = page.locator(".kale-log-view .kale-log-text")
            expect(log).to_contain_text("fetching at")

            # The SSH connection dies mid-run: the views go on (a new connection).
            old = link.master_pid()
            assert old is not None
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: not process_alive(old), what="the SSH master gone")
            new = wait_until(link.master_pid, what="a new SSH master (the views reconnect)")
            assert new != old
            assert site.sh(f"touch {site.abs_home}/gate").returncode == 0

            # The rest of the run, live: the log line written after the drop, every
            # state to the end.
            expect(log).to_contain_text("fetched by kale-other", timeout=120_000)
            for name in ("fetch", "clean-a", "clean-b", "report"):
                expect(node(name)).to_have_attribute("data-state", "SUCCEEDED",
                                                     timeout=120_000)
            # The graph said the connection was lost, then took it back; the page shows
            # no error, and nothing on the cell's stderr.
            said = (root / "messages.txt").read_text().splitlines()
            assert "'lost the connection to site hpc: reconnecting...'" in said, said
            assert said[-1] == "''", said
            expect(page.locator(".kale-dag .kale-message")).to_have_count(0)
            expect(page.locator(".kale-dag .kale-error, .kale-log-view .kale-error, "
                                ".kale-runs .kale-error")).to_have_count(0)
            stderr = "[data-mime-type='application/vnd.jupyter.stderr']"
            expect(page.locator(f".jp-OutputArea-output{stderr}")).to_have_count(0)
            node("report").click()  # type: ignore[attr-defined]
            detail = page.locator(".kale-dag-detail")
            expect(detail.locator(".kale-stdout")).to_contain_text("report by kale-other")
            page.get_by_role("tab", name="Runs").click()
            # the Runs tab: the run, ended (looked at again when the run ended)
            expect(page.locator(f".kale-runs tr[data-run='{run_id}']")).to_contain_text(
                "SUCCEEDED")
            page.locator(".kale-dag").scroll_into_view_if_needed()
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
            assert not errors, errors
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for other tests
            browser.close()
    # The run is the site's: there, and not in this side's store.
    status = json.loads(kale("status", run_id, "--site", "hpc", "--json").stdout)
    assert status["run"]["state"] == "SUCCEEDED"
    assert status["run"]["run_dir"].startswith(site.abs_home + "/")
    assert json.loads(kale("runs", "--json").stdout) == []
    assert shot.stat().st_size > 10_000


def test_a_view_of_a_run_at_a_site_outlives_its_manager_restarted(
        kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    """The site's manager is stopped while a graph follows a run there: the graph says
    it lost the connection; its feed's next look starts the manager again (through the
    site), the run goes on there, and the same graph follows it to the end."""
    import kale as k
    from kale.widgets import DagView
    from sitekit import PYTHON

    wf = k.Workflow.from_yaml(lab_root(tmp_path, site) / "project" / "wf.yaml")
    run = wf.run(site="hpc", home=kale.home)
    view = DagView(run)
    try:
        wait_until(lambda: view.states.get("fetch") == "RUNNING", what="fetch running")
        said: list[str] = []
        view.observe(lambda c: said.append(c["new"]), names="message")
        before = site.manager_pid()
        stop = site.sh(f"{PYTHON} -m kale.cli.main manager stop --home ~/{site.remote_home}")
        assert stop.returncode == 0, stop.stderr
        wait_until(lambda: said, what="the graph to say the connection was lost")
        assert said[0] == "lost the connection to site hpc: reconnecting..."
        assert site.sh(f"touch {site.abs_home}/gate").returncode == 0
        wait_until(lambda: view.run_state == "SUCCEEDED", what="the run's end, in the graph")
        assert set(view.states.values()) == {"SUCCEEDED"}
        assert said[-1] == "" and view.message == ""
        after = site.manager_pid()
        assert after is not None and after != before  # started again, at the site
    finally:
        view.close()
        run.close()
