"""What a new user trips over in the first hour of `kale` (run as a real subprocess): how
typed values are read, what `--help`, `--version` and `kale runs` show, what Ctrl-C does to
a run driven by the manager, and why a failed task failed."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Kale

# -- 1. values typed on the command line ----------------------------------------------------
TYPES_WF = """\
name: types
parameters: {b: false, n: 0, x: 0, name: z, xs: [], m: {}, q: "", e: "", low: false}
tasks:
  show:
    python: probe:show
  record:
    shell: >-
      kale record b True && kale record n None && kale record x 007 &&
      kale record name abc && kale record xs '[1, "a"]' && kale record q '"007"' &&
      kale record low false
"""
PROBE = """\
def show(b, n, x, name, xs, m, q, e, low):
    return {k: [type(v).__name__, v] for k, v in locals().items()}
"""


def test_typed_values_read_the_same_in_run_p_and_record(kale: Kale, tmp_path: Path) -> None:
    """`-p b=True` is a bool, `-p n=None` None, `-p x=007` the int 7 (as papermill's `-p`
    and the workflow YAML read them); `-p name=abc` stays a string; `kale record` reads
    its VALUE by the same rule."""
    (tmp_path / "probe.py").write_text(PROBE)
    wf = tmp_path / "types.yaml"
    wf.write_text(TYPES_WF)
    out = kale("run", str(wf), "-p", "b=True", "-p", "n=None", "-p", "x=007", "-p",
               "name=abc", "-p", 'xs=[1, "a"]', "-p", "m={\"k\": 2.5}", "-p", 'q="007"',
               "-p", "e=", "-p", "low=false")
    assert out.returncode == 0, out.stderr
    tasks = {t["name"]: t for t in json.loads(kale("status", "--json").stdout)["tasks"]}
    assert tasks["show"]["result"] == {
        "b": ["bool", True], "n": ["NoneType", None], "x": ["int", 7], "name": ["str", "abc"],
        "xs": ["list", [1, "a"]], "m": ["dict", {"k": 2.5}], "q": ["str", "007"],
        "e": ["str", ""], "low": ["bool", False]}
    assert tasks["record"]["result"] == {"b": True, "n": None, "x": 7, "name": "abc",
                                         "xs": [1, "a"], "q": "007", "low": False}
    # the same values spelled another way are the same values: reused, not run again
    again = kale("run", str(wf), "--only", "show", "-p", "b=true", "-p", "n=null", "-p",
                 "x=7", "-p", "name=abc", "-p", 'xs=[1,"a"]', "-p", "m={\"k\":2.5}", "-p",
                 'q="007"', "-p", "e=", "-p", "low=False")
    assert again.returncode == 0, again.stderr
    show = json.loads(kale("status", "--json").stdout)["tasks"][0]
    assert show["name"] == "show" and show["reused_from"] == out.stdout.strip()


def test_a_bad_typed_value_says_what_and_where(kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    wf = tmp_path / "types.yaml"
    wf.write_text(TYPES_WF)
    out = kale("run", str(wf), "-p", "xs=[1, 2")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "-p" in out.stderr and "xs" in out.stderr and "not valid JSON" in out.stderr
    assert json.loads(kale("runs", "--json").stdout) == []
    help_text = " ".join(kale("run", "--help").stdout.split())
    assert "NAME=VALUE" in help_text and "007" in help_text and "None" in help_text
