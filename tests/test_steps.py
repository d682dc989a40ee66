"""Interactive notebook steps with real kernels on real workers: the workflow waits
(WAITING) while independent branches go on; a person reads the step's inputs in its
kernel, records a value, and continues it (CLI or API), or rejects it; a step nobody
decides on takes its default action after its timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import Kale, Manager, wait_until
from kale import Workflow
from kale.errors import ValidationError
from test_workers import task

# Each wait below is a safety net of a minute or two; together they may exceed the
# default 120 s per test on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def review_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("threshold = 0.5")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("Look at the numbers, then decide."), params]
    nbformat.write(nb, path)
    return path


def step_workflow(tmp_path: Path, **interactive: Any) -> Workflow:
    wf = Workflow("review-flow", base_dir=tmp_path)
    prep = wf.shell("prep", "kale record n 21")
    wf.notebook("review", str(review_notebook(tmp_path / "review.ipynb")), after=[prep],
                parameters={"threshold": 0.9, "n": prep["n"]},
                description="# Review\nCheck that **n** makes sense.",
                interactive=interactive or True, retries=2)

    def use(review: dict[str, Any]) -> int:  # defined here: pickled by value for the worker
        return int(review["answer"]) * 2

    wf.python(use, after=["review"])
    wf.shell("side", "sleep 0.5; echo independent")
    return wf


def waiting(client: Any, run_id: str) -> dict[str, Any]:
    return wait_until(lambda: (t := task(client, run_id, "review"))["state"] == "WAITING" and t,
                      what="the step to wait")


def test_a_person_records_a_value_and_continues_the_step(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(step_workflow(tmp_path))
        doc = waiting(client, run.id)
        assert f"kale continue {run.id} review" in doc["reason"]
        # Independent branches went on while the step waits.
        wait_until(lambda: task(client, run.id, "side")["state"] == "SUCCEEDED", what="side")
        assert task(client, run.id, "use")["state"] == "PENDING"
        # The step notebook, made from the template, says what the step is about.
        step = Path(doc["reason"].split("open ", 1)[1].split(";", 1)[0])
        text = step.read_text()
        assert "Check that **n** makes sense." in text and f"kale continue {run.id} review" \
            in text and "threshold" in text
        assert nbformat.read(step, as_version=4).metadata["kale"]["task"] == "review"
        # The person works in the step's kernel: its inputs are there.
        kc = run["review"].kernel(timeout=60)
        try:
            got: list[str] = []
            kc.execute_interactive("print(n, threshold, prep)", timeout=60,
                                   output_hook=lambda msg: got.append(
                                       msg["content"].get("text", "")))
            assert "".join(got).split() == ["21", "0.9", "{'n':", "21}"]
            reply = kc.execute_interactive("import kale; kale.record('answer', n * 2)",
                                           timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
    out = kale("continue", run.id, "review")
    assert out.returncode == 0, out.stderr
    with m.client() as client:
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"
        assert client.result(run.id, "review") == {"answer": 42}
        assert client.result(run.id, "use") == 84


def test_continue_through_the_api(kale: Kale, home: Path, tmp_path: Path,
                                  managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    wf = Workflow("api-step", base_dir=tmp_path)
    wf.notebook("review", str(review_notebook(tmp_path / "review.ipynb")), interactive=True)
    with m.client() as client:
        run = client.submit(wf)
        waiting(client, run.id)
        assert run["review"].continue_()["state"] == "WAITING"
        assert run.wait(120).state.value == "SUCCEEDED"


def test_a_rejected_step_fails_and_skips_what_is_below(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(step_workflow(tmp_path))
        waiting(client, run.id)
    out = kale("reject", run.id, "review", "--reason", "n looks wrong")
    assert out.returncode == 0, out.stderr
    with m.client() as client:
        assert client.run(run.id).wait(120).state.value == "FAILED"
        review = task(client, run.id, "review")
        assert review["state"] == "FAILED" and review["error"] == "rejected: n looks wrong"
        assert review["attempts"] == 1  # a person's no is not retried (retries=2)
        assert task(client, run.id, "use")["state"] == "SKIPPED"
        assert task(client, run.id, "side")["state"] == "SUCCEEDED"


@pytest.mark.parametrize("action", ["continue", "reject"])
def test_a_step_nobody_decides_on_takes_its_default_action(
        action: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    wf = Workflow("timed-step", base_dir=tmp_path)
    wf.notebook("review", str(review_notebook(tmp_path / "review.ipynb")),
                interactive={"timeout": 2, "on_timeout": action})
    with m.client() as client:
        run = client.submit(wf)
        # No wait for WAITING here: the 2 s may be up before a loaded machine's poll sees
        # it. The events say afterwards that the step waited, then took its default action.
        final = run.wait(120).state.value
        review = task(client, run.id, "review")
        seen = [d["new"] for e, d in client.events(run.id)
                if e == "state" and d["task"] == "review"]
    assert seen[-2:] == ["WAITING", final], seen
    if action == "continue":
        assert final == "SUCCEEDED"
    else:
        assert final == "FAILED"
        assert review["error"] == "rejected: nobody decided within 2 s"


def test_continue_and_reject_refuse_what_is_not_waiting(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    wf = Workflow("no-step", base_dir=tmp_path)
    wf.shell("plain", "true")
    with m.client() as client:
        run = client.submit(wf).wait(120)
    out = kale("continue", run.id, "plain")
    assert out.returncode == 2 and "not WAITING for a person" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_interactive_steps_are_notebook_tasks_and_need_the_manager(
        kale: Kale, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only notebook tasks can be interactive"):
        Workflow("w").shell("s", "true", interactive=True)
    with pytest.raises(ValidationError, match="must be continue or reject"):
        Workflow("w").notebook("n", "x.ipynb", interactive={"on_timeout": "maybe"})
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "x.ipynb")
    spec = tmp_path / "wf.yaml"
    spec.write_text("name: w\ntasks:\n  n:\n    notebook: x.ipynb\n    interactive: true\n")
    out = kale("run", str(spec), "--embedded")
    assert out.returncode == 2 and "interactive steps run through the Kale manager" \
        in out.stderr, out.stderr
