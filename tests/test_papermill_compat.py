"""Kale runs notebooks as papermill runs them: papermill's own test notebooks
(tests/data/papermill, see its README) through Kale (the Python API, real kernels) and
through papermill (the installed package, in this process), side by side in one test run.
Compared: succeeded or failed (and why), which cells ran, their outputs, the injected
parameters' values and types as the notebook sees them.

The one deliberate difference: a notebook that names no kernelspec at all runs on Kale's
default kernel, where papermill refuses to guess.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import Kale, Manager, service_missing
from kale import Workflow
from kale.errors import ValidationError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DATA = Path(__file__).parent / "data" / "papermill"
ERROR_MARKER = "papermill-error-cell-tag"  # papermill's markdown cells around an error
INJECTED = "injected-parameters"

#: a parameter of every type papermill translates (its python translator: str, int, float
#: with nan and infinities, bool, None, dict, list), with papermill's own test strings
TYPED: dict[str, Any] = {
    "p_str": "Hello", "p_empty": "", "p_quoted": '"Hello"', "p_spaces": r"do\ not\ crash",
    "p_bs_quote": r"bar=\"baz\"", "p_dbl_bs": r'\\"bar\\"', "p_unicode": "naïve ☃ ünï",
    "p_newline": "two\nlines\ttab", "p_int": 42, "p_neg": -7, "p_big": 2**70, "p_zero": 0,
    "p_float": 2.5, "p_tiny": 1e-300, "p_huge": 1e300, "p_negzero": -0.0,
    "p_nan": float("nan"), "p_inf": float("inf"), "p_ninf": float("-inf"),
    "p_true": True, "p_false": False, "p_none": None,
    "p_list": [1, "two", 3.5, None, True, [4]], "p_empty_list": [],
    "p_dict": {"a": {"b": [1, 2]}, "c": None, "d": "x"}, "p_empty_dict": {},
}
# what the notebook sees: every injected name, its type and repr
PROBE = ("for _name in sorted(n for n in dir() if n.startswith('p_')):\n"
         "    _value = globals()[_name]\n"
         "    print(_name, type(_value).__name__, repr(_value))")


@dataclass
class Case:
    task: str
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    kernel: str | None = None
    probe: bool = False  # add PROBE as the last cell (in a copy of the notebook)


CASES = [
    Case("simple", "simple_execute.ipynb", {"msg": "Hello"}),
    Case("typed", "simple_execute.ipynb", {"msg": "typed", **TYPED}, probe=True),
    Case("no_parameters", "no_parameters.ipynb", {"msg": "Hello"}),
    Case("complex_parameters", "complex_parameters.ipynb", {"msg": "Hi"}),
    Case("version_4_4", "nb_version_4.4.ipynb", {"var": 2}),
    Case("result_no_exec", "result_no_exec.ipynb", {"foo": 2, "bar": "world"}),
    Case("report_mode", "report_mode_test.ipynb", {"a": 2, "b": 3}),
    Case("plain", "test_notebooknode_io.ipynb"),
    Case("broken", "broken.ipynb"),
    Case("broken1", "broken1.ipynb"),
    Case("broken2", "broken2.ipynb"),
    Case("line_magic_error", "line_magic_error.ipynb"),
    Case("logging", "test_logging.ipynb"),
    Case("sysexit", "sysexit.ipynb"),
    Case("sysexit0", "sysexit0.ipynb"),
    Case("systemexit", "systemexit.ipynb"),
    Case("sysexit1", "sysexit1.ipynb"),
    Case("alias_python", "test_autosave.ipynb"),  # names "python", python3 to jupyter_client
    Case("kernel_named", "test_autosave.ipynb", kernel="python3"),
    Case("kernelspec_r", "notimplemented_translator.ipynb"),    # names "r": none such
]


@dataclass
class Result:
    ok: bool
    error: str | None
    notebook: Path | None
    failure: tuple[str, str] | None = None  # papermill's ename and evalue


def cells(path: Path) -> list[tuple[Any, ...]]:
    """What a user sees of an executed notebook: each of their cells, whether it ran and
    its outputs (tracebacks aside); the injected cell and papermill's error markers left
    out."""
    nb = nbformat.read(path, as_version=4)
    seen: list[tuple[Any, ...]] = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if INJECTED in tags or ERROR_MARKER in tags:
            continue
        if cell.cell_type != "code":
            seen.append((cell.cell_type, cell.source))
            continue
        outputs: list[tuple[Any, ...]] = []
        for out in cell.get("outputs", []):
            kind = out["output_type"]
            if kind == "stream" and outputs and outputs[-1][:2] == (kind, out["name"]):
                # how a stream is cut into messages depends on timing, not on the runner
                outputs[-1] = (kind, out["name"], outputs[-1][2] + out["text"])
            elif kind == "stream":
                outputs.append((kind, out["name"], out["text"]))
            elif kind == "error":
                outputs.append((kind, out["ename"], out["evalue"]))
            else:
                outputs.append((kind, out.get("data", {}).get("text/plain")))
        seen.append(("code", cell.source, cell.get("execution_count"), outputs))
    return seen


def injected(path: Path) -> str | None:
    nb = nbformat.read(path, as_version=4)
    return next((c.source for c in nb.cells
                 if INJECTED in c.get("metadata", {}).get("tags", [])), None)


@pytest.fixture(scope="module")
def papermill() -> Any:
    try:
        import papermill
    except ImportError:
        service_missing("papermill is not installed (pip install -e '.[bench]')")
    return papermill


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cases' notebooks in one folder (probe cells added to copies)."""
    folder = tmp_path_factory.mktemp("papermill-notebooks")
    for case in CASES:
        src = DATA / case.notebook
        if case.probe:
            nb = nbformat.read(src, as_version=4)
            nb.cells.append(nbformat.v4.new_code_cell(PROBE))
            nb.cells[-1].pop("id", None)  # an nbformat 4.4 notebook has no cell ids
            case.notebook = f"{case.task}.probe.ipynb"
            nbformat.write(nb, folder / case.notebook)
        elif not (folder / case.notebook).exists():
            shutil.copy(src, folder / case.notebook)
    return folder


@pytest.fixture(scope="module")
def by_papermill(papermill: Any, notebooks: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    out_dir = tmp_path_factory.mktemp("papermill-out")
    results = {}
    for case in CASES:
        out = out_dir / f"{case.task}.ipynb"
        try:
            papermill.execute_notebook(str(notebooks / case.notebook), str(out),
                                       parameters=case.parameters,
                                       kernel_name=case.kernel, cwd=str(notebooks),
                                       progress_bar=False, log_output=False)
            ok, error = True, None
        except Exception as e:
            ok, error = False, f"{type(e).__name__}: {e}"
            failure = (getattr(e, "ename", None), getattr(e, "evalue", None))
        results[case.task] = Result(ok, error, out if out.exists() else None,
                                    None if ok or None in failure else failure)
    return results


@pytest.fixture(scope="module")
def home_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("kale-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KALE_HOME", str(home))
        mp.delenv("KALE_STORE_URL", raising=False)
        mp.delenv("KALE_KERNEL_REUSE", raising=False)
        yield home


def recorded(run: Any, task: str) -> Result:
    record = run[task].record
    notebook = record.artifacts.get("notebook")
    return Result(record.state.value == "SUCCEEDED", record.error,
                  Path(notebook) if notebook else None)


@pytest.fixture(scope="module")
def by_kale(notebooks: Path, home_for_module: Path) -> dict[str, Result]:
    results = {}
    wf = Workflow("papermill-compat", base_dir=notebooks)
    for case in CASES:
        if case.task.startswith(("kernelspec_", "alias_")):
            # Kale refuses a workflow whose kernel is not installed before it runs
            # anything (the task itself would fail with the same message): one each.
            alone = Workflow(case.task, base_dir=notebooks)
            alone.notebook(case.task, case.notebook, parameters=case.parameters)
            try:
                results[case.task] = recorded(alone.run().wait(timeout=120), case.task)
            except ValidationError as e:
                results[case.task] = Result(False, str(e), None)
            continue
        wf.notebook(case.task, case.notebook, parameters=case.parameters, kernel=case.kernel)
    run = wf.run(jobs=2).wait(timeout=300)
    for case in CASES:
        if case.task not in results:
            results[case.task] = recorded(run, case.task)
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.task for c in CASES])
def test_kale_runs_papermills_notebooks_as_papermill_does(
        case: Case, by_kale: dict[str, Result], by_papermill: dict[str, Result]) -> None:
    kale, pm = by_kale[case.task], by_papermill[case.task]
    assert kale.ok == pm.ok, (kale, pm)
    if pm.error is not None and "No such kernel" in pm.error:
        name = pm.error.rsplit(" ", 1)[1]  # "No such kernel named NAME"
        assert kale.error is not None
        assert f"no such kernel: {name} (the notebook's kernelspec" in kale.error
        assert kale.notebook is None  # nothing ran
        return
    assert pm.notebook is not None and kale.notebook is not None, (kale, pm)
    assert cells(kale.notebook) == cells(pm.notebook)
    if case.parameters:
        assert injected(kale.notebook) is not None and injected(pm.notebook) is not None
    if not pm.ok:  # the same error, told as Kale tells it: "cell N: ename: evalue"
        assert pm.failure is not None and kale.error is not None
        if pm.failure[0] == "CellExecutionError":
            # papermill found no error output (a %magic's UsageError goes to stderr) and
            # names none; Kale names the error the cell's stderr shows
            told = kale.error.split(": ", 1)[1]
            assert any(told in str(o[-1]) for c in cells(pm.notebook) if c[0] == "code"
                       for o in c[3]), (kale, pm)
        else:
            assert kale.error.endswith(f"{pm.failure[0]}: {pm.failure[1]}"), (kale, pm)


def test_every_parameter_type_reaches_the_notebook_as_papermill_passes_it(
        by_kale: dict[str, Result], by_papermill: dict[str, Result]) -> None:
    kale, pm = by_kale["typed"], by_papermill["typed"]
    assert kale.notebook is not None and pm.notebook is not None
    printed = cells(kale.notebook)[-1][3]
    assert printed == cells(pm.notebook)[-1][3]
    lines = printed[0][2].splitlines()
    assert len(lines) == len(TYPED)
    assert "p_nan float nan" in lines and "p_big int 1180591620717411303424" in lines
    assert f"p_dict dict {TYPED['p_dict']!r}" in lines
    assert f"p_newline str {TYPED['p_newline']!r}" in lines


def test_a_notebook_without_a_kernelspec_runs_on_the_default_kernel(
        papermill: Any, notebooks: Path, home_for_module: Path, tmp_path: Path) -> None:
    """The deliberate difference: papermill refuses a notebook that names no kernel;
    Kale runs it on its default kernel (python3)."""
    shutil.copy(DATA / "blank-vscode.ipynb", notebooks / "blank-vscode.ipynb")
    with pytest.raises(ValueError, match="No kernel name found in notebook"):
        papermill.execute_notebook(str(notebooks / "blank-vscode.ipynb"),
                                   str(tmp_path / "out.ipynb"), progress_bar=False)
    wf = Workflow("blank", base_dir=notebooks)
    wf.notebook("blank", "blank-vscode.ipynb")
    run = wf.run().wait(timeout=120)
    record = run["blank"].record
    assert record.state.value == "SUCCEEDED", record.error
    saved = nbformat.read(record.artifacts["notebook"], as_version=4)
    assert saved.metadata["kale"]["kernel"] == "python3"


# -- a helper module edited between runs --------------------------------------------------

def helper_notebook(folder: Path, value: int) -> None:
    (folder / "helper.py").write_text(f"VALUE = {value}\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import helper\nprint('helper', helper.VALUE)")]
    nbformat.write(nb, folder / "uses_helper.ipynb")


def printed(path: Path) -> str:
    return str(cells(path)[0][3][0][2])


def test_a_helper_module_edited_between_runs(
        papermill: Any, tmp_path: Path, home: Path, kale: Kale,
        managers: Callable[..., Manager]) -> None:
    """Papermill sees the edit (a new kernel per run). So does Kale: embedded runs, and a
    manager's worker whose kernels outlive runs, even when the task opted into reusing
    kernels (a kernel that loaded the old module is not reused)."""
    folder = tmp_path / "wf"
    folder.mkdir()
    seen: dict[str, list[str]] = {"papermill": [], "embedded": [], "manager-reuse": []}
    m = managers("--workers", "1")
    with m.client() as client:
        for value in (1, 22):
            helper_notebook(folder, value)
            out = tmp_path / f"pm-{value}.ipynb"
            papermill.execute_notebook(str(folder / "uses_helper.ipynb"), str(out),
                                       cwd=str(folder), progress_bar=False)
            seen["papermill"].append(printed(out))

            wf = Workflow("helper", base_dir=folder)
            wf.notebook("uses", "uses_helper.ipynb")
            run = wf.run().wait(timeout=120)
            seen["embedded"].append(printed(Path(run["uses"].record.artifacts["notebook"])))

            reusing = Workflow("helper-reuse", base_dir=folder)
            reusing.notebook("uses", "uses_helper.ipynb", env={"KALE_KERNEL_REUSE": "1"})
            remote = client.submit(reusing).wait(timeout=120)
            assert remote.state.value == "SUCCEEDED"
            notebook = client.task(remote.id, "uses")["artifacts"]["notebook"]
            seen["manager-reuse"].append(printed(Path(notebook)))
    assert seen["papermill"] == ["helper 1\n", "helper 22\n"]
    assert seen["embedded"] == seen["papermill"]
    assert seen["manager-reuse"] == seen["papermill"]
