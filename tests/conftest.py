from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# CI is reproducible: the same examples on every run (locally they vary, to find new bugs).
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private Kale home for one test; the Python API and the CLI both use it."""
    path = tmp_path / "kale-home"
    monkeypatch.setenv("KALE_HOME", str(path))
    monkeypatch.delenv("KALE_STORE_URL", raising=False)
    yield path


class Kale:
    """Runs the real ``kale`` command in a subprocess."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home, self.cwd = home, cwd

    def env(self) -> dict[str, str]:
        return {**os.environ, "KALE_HOME": str(self.home), "COLUMNS": "200"}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kale.cli.main", *args], cwd=self.cwd,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "kale.cli.main", *args], cwd=self.cwd,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


@pytest.fixture
def kale(home: Path, tmp_path: Path) -> Kale:
    return Kale(home, tmp_path)
