"""Bad input to the manager API: schemathesis generates requests from the OpenAPI spec and
no answer may be a server error. Submitting runs is fuzzed at the model instead (a fuzzer
must not execute generated shell commands on this machine): any JSON document given to
`Workflow.from_dict` is either a workflow or a ValidationError, never a crash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kale import ValidationError, Workflow
from test_manager import manager  # noqa: F401 - the fixture

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)
task_like = st.dictionaries(
    st.sampled_from(["shell", "python", "notebook", "after", "outputs", "parameters",
                     "retries", "timeout", "resources", "env", "tags", "kernel", "x"]),
    json_values, max_size=5)
documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"name": json_values,
                           "tasks": st.dictionaries(st.text(max_size=5), task_like,
                                                    max_size=4)}),
)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_is_a_workflow_or_a_validation_error(doc: object) -> None:
    try:
        Workflow.from_dict(doc)
    except ValidationError as e:
        assert e.problems and all(p.message for p in e.problems)


def test_no_server_errors_from_generated_requests(home: Path, manager: dict,  # noqa: F811
                                                   tmp_path: Path) -> None:
    st_cli = shutil.which("st")
    assert st_cli, "schemathesis is a test dependency (pip install -e '.[test]')"
    token = (home / "token").read_text().strip()
    out = subprocess.run(
        [st_cli, "run", manager["url"] + "/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
         "--exclude-path", "/api/runs", "--exclude-method", "POST", "-n", "40",
         "--seed", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "passed" in out.stdout
