"""The official CWL v1.2 conformance tests (tests/data/cwl-v1.2, SOURCE.md says from where)
through Kale: each test's tool and job are imported and run as a Kale run in this process,
and the output object is compared with the test's expected one by cwltest's own
comparison (class, location's basename, checksum, size, nested values). A test marked
``should_fail`` passes when Kale refuses it or its run fails.

``tests/data/cwl-v1.2/passing.txt`` lists the ids that pass; each is a test case here, so
one that stops passing fails CI. To measure again (and rewrite the list)::

    python3 tests/test_cwl_conformance.py            # required tests: counts, failures
    python3 tests/test_cwl_conformance.py --all      # every test of the suite
    python3 tests/test_cwl_conformance.py --write    # also rewrite passing.txt
    python3 tests/test_cwl_conformance.py --all --suite DIR   # a whole checkout of the
                                                              # suite (all its files)
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

SUITE = Path(__file__).resolve().parent / "data" / "cwl-v1.2"
PASSING = SUITE / "passing.txt"


def suite_tests(suite: Path = SUITE) -> list[dict[str, Any]]:
    """Every test of conformance_tests.yaml (its ``$import``s followed), with tool and
    job as absolute paths."""
    def flat(entries: list[dict[str, Any]], base: Path) -> list[dict[str, Any]]:
        out = []
        for t in entries:
            if "$import" in t:
                path = base / t["$import"]
                out += flat(yaml.safe_load(path.read_text()), path.parent)
                continue
            t = dict(t)
            for key in ("tool", "job"):
                if t.get(key):
                    where, _, frag = str(t[key]).partition("#")
                    t[key] = str(base / where) + (f"#{frag}" if frag else "")
            out.append(t)
        return out

    return flat(yaml.safe_load((suite / "conformance_tests.yaml").read_text()), suite)


def passing_ids() -> list[str]:
    return [line.split("#")[0].strip() for line in PASSING.read_text().splitlines()
            if line.split("#")[0].strip()]


def run_test(test: dict[str, Any], home: Path, outdir: Path) -> str | None:
    """Run one conformance test through Kale; None when it passes, else why not."""
    from cwltest.compare import CompareFail, compare

    from kale.client.local import open_store
    from kale.cwl.importer import import_cwl
    from kale.cwl.runner import RunFailed, copy_outputs, execute
    from kale.errors import KaleError

    tool = test["tool"]
    if not Path(tool.partition("#")[0]).exists():
        return f"{tool} is not in the copied suite"
    store, path = open_store(home)
    try:
        imported = import_cwl(tool, test.get("job"))
        with contextlib.redirect_stderr(io.StringIO()):
            _, out = execute(store, path, imported, force=True, jobs=2)
        out = copy_outputs(out, outdir)
    except (KaleError, RunFailed) as e:
        return None if test.get("should_fail") else f"{type(e).__name__}: {e}"
    if test.get("should_fail"):
        return "should have failed, but gave " + repr(out)[:300]
    try:
        compare(test.get("output", {}), out)
    except CompareFail as e:
        return "output differs: " + str(e)[:2000]
    return None


_BY_ID = {t["id"]: t for t in suite_tests()}


@pytest.mark.parametrize("test_id", passing_ids())
def test_conformance(test_id: str, tmp_path: Path) -> None:
    """A conformance test listed as passing still passes."""
    why = run_test(_BY_ID[test_id], tmp_path / "home", tmp_path / "out")
    assert why is None, f"{test_id}: {why}"


def test_passing_list_names_suite_tests() -> None:
    """Every listed id is a test of the suite, listed once."""
    ids = passing_ids()
    assert len(ids) == len(set(ids))
    assert not [i for i in ids if i not in _BY_ID]


def _measure(every: bool, write: bool, suite: Path = SUITE) -> None:
    tests = [t for t in suite_tests(suite) if every or "required" in t.get("tags", [])]
    passed, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n, t in enumerate(tests):
            try:
                why = run_test(t, Path(tmp) / "home", Path(tmp) / f"out{n}")
            except Exception as e:  # a crash is a failure of that test, reported
                why = f"crashed: {type(e).__name__}: {e}"
            (failed if why else passed).append((t["id"], why))
            print(f"{'PASS' if not why else 'FAIL'} {t['id']}" + (f": {why[:300]}" if why else ""),
                  flush=True)
    print(f"\n{len(passed)} / {len(tests)} {'tests' if every else 'required tests'} pass")
    if write:
        PASSING.write_text("# CWL v1.2 conformance tests Kale passes (tests/test_cwl_conformance.py"
                           " --write)\n" + "".join(f"{i}\n" for i, _ in passed))


if __name__ == "__main__":
    where = sys.argv[sys.argv.index("--suite") + 1] if "--suite" in sys.argv else SUITE
    _measure("--all" in sys.argv, "--write" in sys.argv, Path(where).resolve())
