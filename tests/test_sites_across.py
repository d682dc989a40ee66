"""One workflow across two sites and this machine: a task at each site, a task here, and
the transfer tasks Kale adds where outputs cross from one place to another."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import Kale
from sitekit import (  # noqa: F401 (the fixtures site and site_host)
    SiteUnderTest,
    site_fixture,
    site_host_fixture,
)

WORKFLOW = """\
name: two-sites
tasks:
  simulate:
    site: hpc
    shell: "seq 1 5 > data.txt && echo simulated as $(whoami)"
    outputs: ["data.txt"]
  analyse:
    site: other
    shell: "wc -l < ${simulate.data.txt} > count.txt && echo read ${simulate.data.txt}"
    outputs: ["count.txt"]
  report:
    shell: "echo lines: $(cat ${analyse.count.txt})"
"""


def test_a_workflow_across_two_sites_and_here(kale: Kale, site: SiteUnderTest,
                                              site_host: str, tmp_path: Path) -> None:
    other = SiteUnderTest(kale, site_host, "other")
    try:
        d = tmp_path / "project"
        d.mkdir()
        (d / "wf.yaml").write_text(WORKFLOW)
        done = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml"],
                              cwd=d, env=kale.env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        run_id = done.stdout.strip().splitlines()[0]
        doc = json.loads(kale("status", run_id, "--json").stdout)
        states = {t["name"]: t["state"] for t in doc["tasks"]}
        assert states == {"simulate": "SUCCEEDED", "simulate-to-other": "SUCCEEDED",
                          "analyse": "SUCCEEDED", "analyse-to-here": "SUCCEEDED",
                          "report": "SUCCEEDED"}
        assert kale("logs", run_id, "report").stdout.strip() == "lines: 5"
        # each ran where it was placed, and read its input there
        assert "simulated as kale-other" in kale("logs", run_id, "simulate").stdout
        read = kale("logs", run_id, "analyse").stdout
        assert f"read {other.abs_home}/transfers/{run_id}/simulate/data.txt" in read
        moved = kale("logs", run_id, "simulate-to-other").stdout
        assert "1 file(s), 10 bytes sent" in moved
        # the site's copy is whole, and the same as what was made
        assert other.sh(f"cat {other.abs_home}/transfers/{run_id}/simulate/data.txt"
                        ).stdout == "1\n2\n3\n4\n5\n"
    finally:
        other.close()


def test_tasks_name_their_site_in_python_and_yaml(tmp_path: Path) -> None:
    import kale as k

    wf = k.Workflow("w")
    wf.shell("a", "echo", site="hpc", outputs=["x"])
    assert "site: hpc" in wf.to_yaml()
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: w
        tasks:
          a: {shell: echo, site: "Not A Site"}
        """))
    done = subprocess.run([sys.executable, "-m", "kale.cli.main", "validate", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "tasks.a.site" in done.stdout + done.stderr
