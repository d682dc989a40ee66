"""An SSH site for tests (tests/test_sites.py and the other tests that run through a
site): the local sshd and the second OS user ``kale-other`` (alias ``kale-site-test``,
from scripts/services/sshd.sh and users.sh) play a cluster's login node. Import the
fixtures ``site_host_fixture`` and ``site_fixture`` (named ``site_host`` and ``site``) from
here into a test module."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, Kale, service_missing

SITE_HOST_FILE = ROOT / "test-output" / "ssh-site.host"
SSHD_DIR = Path(os.environ.get("KALE_SSHD_DIR", "/tmp/kale-sshd"))
PYTHON = os.path.realpath(sys.executable)


def remote(host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (shell text written by the test) at the site, as its user."""
    return subprocess.run(["ssh", "-o", "BatchMode=yes", host, command], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(name="site_host")
def site_host_fixture() -> str:
    """The ssh alias of the test site (``kale-other`` over the local sshd)."""
    host = SITE_HOST_FILE.read_text().strip() if SITE_HOST_FILE.is_file() else ""
    if not host:
        service_missing(f"no SSH site: {SITE_HOST_FILE} is missing (run "
                        "scripts/services/sshd.sh, then scripts/services/users.sh, as root)")
    return host


class SiteUnderTest:
    """A site ``name`` defined in this side's Kale home, with a fresh Kale home at the
    site (``remote_home``, under the site user's home)."""

    def __init__(self, kale: Kale, host: str, name: str = "hpc") -> None:
        self.kale, self.host, self.name = kale, host, name
        self.remote_home = f"kale-test-{secrets.token_hex(4)}"
        self.abs_home = remote(host, f"echo ~/{self.remote_home}").stdout.strip()
        done = kale("site", "add", name, f"ssh://{host}", "--remote-home",
                    f"~/{self.remote_home}", "--python", PYTHON)
        assert done.returncode == 0, done.stderr
        from kale.sites import registry

        self.config = registry.get(name, kale.home)

    def sh(self, command: str) -> subprocess.CompletedProcess[str]:
        return remote(self.host, command)

    def manager_pid(self) -> int | None:
        done = self.kale("site", "check", self.name, "--json")
        doc = json.loads(done.stdout)
        return doc["manager"]["pid"] if doc["manager"] else None

    def close(self) -> None:
        self.sh(f"{PYTHON} -m kale.cli.main manager stop --home ~/{self.remote_home}; "
                f"rm -rf ~/{self.remote_home}")
        from kale.sites.site import Site

        Site(self.config).close()


@pytest.fixture(name="site")
def site_fixture(kale: Kale, site_host: str) -> Iterator[SiteUnderTest]:
    """The site ``hpc`` of the test's Kale home, with a fresh Kale home there."""
    s = SiteUnderTest(kale, site_host)
    try:
        yield s
    finally:
        s.close()
