"""An interactive step of a run at a site, worked through from this side: `kale step
--site` brings its notebook here, the notebook's ``kale-task`` kernel attaches to the
step's kernel at the site through the site's SSH connection, the person records a value
there and continues the step with `kale continue --site`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from conftest import Kale, wait_until
from sitekit import (  # noqa: F401 (the fixtures site and site_host)
    SiteUnderTest,
    site_fixture,
    site_host_fixture,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_step_at_a_site_is_worked_through_from_here(kale: Kale, site: SiteUnderTest,
                                                      tmp_path: Path) -> None:
    from jupyter_client.manager import KernelManager

    from kale.tasks.steps import install_kernelspec

    d = tmp_path / "project"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params]
    nbformat.write(nb, d / "review.ipynb")
    (d / "wf.yaml").write_text(textwrap.dedent("""\
        name: step-at-site
        tasks:
          review:
            notebook: review.ipynb
            parameters: {n: 21}
            interactive: true
        """))
    done = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml", "--site",
                           "hpc", "--detach"], cwd=d, env=kale.env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]

    def state() -> str:
        out = kale("status", run_id, "review", "--site", "hpc", "--json")
        return str(json.loads(out.stdout)["task"]["state"]) if out.returncode == 0 else ""

    wait_until(lambda: state() == "WAITING", what="the step to wait for a person")
    got = kale("step", run_id, "review", "--site", "hpc")
    assert got.returncode == 0, got.stderr
    step = Path(got.stdout.strip())
    assert step == kale.home / "sites" / "hpc" / "runs" / run_id / "review" / "step.ipynb"
    assert nbformat.read(step, as_version=4).metadata["kale"]["task"] == "review"
    # JupyterLab opens it with its kernel, kale-task, started in the notebook's folder
    install_kernelspec()
    km = KernelManager(kernel_name="kale-task")
    km.start_kernel(cwd=str(step.parent), env={**kale.env()})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        kc.execute_interactive("import getpass; print(n, getpass.getuser())", timeout=60,
                               output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert "".join(out).split() == ["21", "kale-other"]  # the site's kernel, as its user
        reply = kc.execute_interactive("import kale; kale.record('answer', n * 2)",
                                       timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    cont = kale("continue", run_id, "review", "--site", "hpc")
    assert cont.returncode == 0, cont.stderr
    wait_until(lambda: state() == "SUCCEEDED", what="the step to end")
    import kale as k
    from kale.sites.source import open_site

    run = k.Run(open_site("hpc", kale.home), run_id, owns_source=True)
    try:
        assert run.result("review") == {"answer": 42}
    finally:
        run.close()
