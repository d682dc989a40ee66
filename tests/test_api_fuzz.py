"""Bad input to the manager API: schemathesis generates requests from the OpenAPI spec,
submitting runs included, and no answer may be a server error. The manager under test has
no workers (``--workers 0``), so a generated workflow that is valid is recorded and queued
but no generated command ever runs on this machine. Deeper, any JSON document given to
`Workflow.from_dict` is either a workflow or a ValidationError, never a crash."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Kale
from kale import ValidationError, Workflow
from test_manager import free_port


@pytest.fixture
def idle_manager(kale: Kale, home: Path) -> Iterator[dict[str, str]]:
    out = kale("manager", "start", "--port", str(free_port()), "--workers", "0")
    assert out.returncode == 0, out.stderr
    yield {"url": out.stdout.strip()}
    kale("manager", "stop")

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


@pytest.mark.timeout(400)  # schemathesis gets 300 s (12 s on an idle machine)
def test_no_server_errors_from_generated_requests(home: Path, idle_manager: dict[str, str],
                                                   tmp_path: Path) -> None:
    st_cli = shutil.which("st")
    assert st_cli, "schemathesis is a test dependency (pip install -e '.[test]')"
    token = (home / "token").read_text().strip()
    out = subprocess.run(
        [st_cli, "run", idle_manager["url"] + "/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
         "--tls-verify", str(home / "tls" / "manager.crt"),  # the pin: the only CA
         "-n", "40", "--seed", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "passed" in out.stdout
