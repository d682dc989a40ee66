"""A site in use: :class:`Site` reaches the site's Kale over :class:`~kale.sites.ssh.SshLink`,
starts its manager when none runs, gives a :class:`~kale.client.remote.Client` over a
forwarded Unix socket, stages a workflow's files there and copies task outputs back.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kale.config import version
from kale.errors import SiteConfigError, SiteError
from kale.sites import registry
from kale.sites.registry import SiteConfig
from kale.sites.ssh import SshLink, runtime_dir
from kale.transfers.rsync import parse_stats

#: what is never staged: version control, caches, checkpoints, Kale homes, environments.
#: A ``.kaleignore`` in any staged directory adds patterns to skip, one per line (as
#: ``.gitignore``; rsync's exclude patterns).
#: what rsync reports, as :func:`kale.transfers.rsync.parse_stats` reads it (plain digits)
STATS = ("--stats", "--no-human-readable")
STAGE_EXCLUDES = (".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".ipynb_checkpoints/",
                  ".kale/", ".venv/", "venv/", ".mypy_cache/", ".pytest_cache/",
                  ".ruff_cache/", "node_modules/")


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """What a site's Kale says about itself (``kale site check``)."""

    kale: str
    python: str
    home: str
    manager: dict[str, Any] | None
    schedulers: dict[str, str]
    token: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"kale": self.kale, "python": self.python, "home": self.home,
                "manager": self.manager, "schedulers": self.schedulers}


@dataclass(frozen=True, slots=True)
class Staged:
    """A workflow's files at the site: where, and what rsync sent to bring them up to
    date (``files``: how many it sent, ``bytes``: their size)."""

    path: str
    files: int
    bytes: int


class Site:
    """One site, reached over SSH. Invariants: the site's Kale is the same version as
    this one (pickled Python functions and the API need it), checked at every
    :meth:`connect`; its manager is started under the user's account when none runs;
    its API is reached only through the forwarded socket (nothing listens on the
    network for it); the token is read over the authenticated SSH connection and is
    never written on this side. Thread-safe: :meth:`reconnect` may be called from any
    thread (the handles' transports do, when the connection drops)."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.link = SshLink(config)
        # one forward per Kale home at the site (two sites may share a login)
        home = hashlib.sha256(config.home.encode()).hexdigest()[:8]
        self.socket = self.link.control.with_name(f"{self.link.control.stem}-{home}.sock")
        self.info: SiteInfo | None = None
        self._lock = threading.Lock()

    @classmethod
    def named(cls, name: str, home: str | Path | None = None) -> Site:
        return cls(registry.get(name, home))

    @property
    def name(self) -> str:
        return self.config.name

    # -- the site's Kale ---------------------------------------------------------------
    def probe(self, *, start: bool = False, token: bool = False) -> SiteInfo:
        """Ask the site's Kale what it is (starting its manager with ``start``)."""
        argv = [self.config.python, "-m", "kale.sites.here", "--home", self.config.home,
                *(["--start"] if start else []), *(["--token"] if token else [])]
        done = self.link.run(argv)
        if done.returncode:
            raise self._kale_failure(done)
        try:
            doc = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SiteError(self.name, f"its Kale answered something else than JSON: "
                            f"{done.stdout[-300:]!r} {done.stderr[-300:]!r}") from None
        return SiteInfo(kale=doc["kale"], python=doc["python"], home=doc["home"],
                        manager=doc.get("manager"), schedulers=doc.get("schedulers", {}),
                        token=doc.get("token"))

    def _kale_failure(self, done: subprocess.CompletedProcess[str]) -> SiteError:
        text = (done.stderr.strip() or done.stdout.strip())
        last = text.splitlines()[-1] if text else f"exit {done.returncode}"
        python = self.config.python
        if "No module named 'kale'" in text:
            return SiteConfigError(self.name, f"Kale is not installed for {python} there "
                                   "(install it, or give the right --python)")
        if done.returncode == 127 or "not found" in last or "No such file" in last:
            return SiteConfigError(self.name, f"{python} does not run there ({last}); give "
                                   "the Python that has Kale with `kale site add ... "
                                   "--python PATH`")
        if "No module named 'kale.sites" in text:
            return SiteConfigError(self.name, "its Kale is older than this one and has no "
                                   "sites: upgrade it")
        return SiteError(self.name, f"its Kale failed: {last}")

    def connect(self) -> SiteInfo:
        """Reach the site, start its manager if none runs, and forward its socket here.
        A connection that drops meanwhile (a transient :class:`SiteError`) is made again,
        once: every step is safe to repeat."""
        try:
            return self._connect()
        except SiteError as e:
            if not e.transient or isinstance(e, SiteConfigError):
                raise
            return self._connect()

    def _connect(self) -> SiteInfo:
        with self._lock:
            self.link.connect()
            info = self.probe(start=True, token=True)
            if info.kale != version():
                raise SiteConfigError(self.name, f"its Kale is {info.kale}, this one is "
                                      f"{version()}: install the same version on both sides")
            assert info.manager is not None
            self.link.forward(self.socket, str(info.manager["socket"]))
            self.info = info
            return info

    def reconnect(self) -> None:
        """After a dropped connection or a manager that died: the same as :meth:`connect`
        (the run goes on at the site; nothing here needs more)."""
        self.connect()

    def client(self, timeout: float = 30.0) -> Any:
        """A :class:`~kale.client.remote.Client` of the site's manager, through SSH; it
        re-attaches by itself when the connection drops."""
        from kale.client.remote import Client

        info = self.info or self.connect()
        assert info.token is not None
        return Client(socket=self.socket, token=info.token, timeout=timeout,
                      on_drop=self.reconnect, where=f"site {self.name}")

    def check(self) -> dict[str, Any]:
        """What ``kale site check`` reports: reachable, versions, manager, schedulers,
        and the problems found (empty when the site is ready)."""
        self.link.connect()
        info = self.probe()
        problems = []
        if info.kale != version():
            problems.append(f"its Kale is {info.kale}, this one is {version()}")
        import platform

        if info.python.rsplit(".", 1)[0] != platform.python_version().rsplit(".", 1)[0]:
            problems.append(f"its Python is {info.python}, this one is "
                            f"{platform.python_version()}: Python functions defined here "
                            "cannot run there")
        return {"site": self.name, "url": self.config.url, "reachable": True,
                **info.to_json(), "local_kale": version(), "problems": problems}

    # -- files -------------------------------------------------------------------------
    def stage(self, base_dir: Path) -> Staged:
        """Copy the workflow's directory ``base_dir`` to the site (what changed since the
        last time; files deleted here are deleted there), into a directory of the site's
        home named after it; returns where."""
        info = self.info or self.connect()
        local = base_dir.resolve()
        where = hashlib.sha256(f"{socket.gethostname()}:{local}".encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", local.name or "root")[:40]
        remote = f"{info.home}/staging/{slug}-{where}"
        done = self.link.run(["mkdir", "-p", remote])
        if done.returncode:
            raise SiteError(self.name, f"cannot make {remote}: {done.stderr.strip()}")
        argv = ["rsync", "-a", "--delete", *STATS, "-e", self.link.rsh(),
                "--filter=:- .kaleignore", *(f"--exclude={e}" for e in STAGE_EXCLUDES),
                f"{local}/", f"{self.config.destination}:{remote}/"]
        try:
            report = self._rsync(argv, f"staging {local}")
        except SiteError as e:  # a dropped connection: staging again is safe
            if not e.transient:
                raise
            self.link.connect()
            report = self._rsync(argv, f"staging {local}")
        return Staged(remote, *report)

    def fetch(self, paths: list[str], dest: Path) -> tuple[int, int]:
        """Copy ``paths`` (absolute, at the site) into the local directory ``dest``;
        ``(files, bytes)`` sent. Each lands under its own name (a directory with its
        content); files are written whole (rsync's temporary file, then a rename)."""
        dest.mkdir(parents=True, exist_ok=True)
        sources = [f"{self.config.destination}:{shlex.quote(p)}" for p in paths]
        argv = ["rsync", "-a", *STATS, "--protect-args", "-e", self.link.rsh(), *sources,
                f"{dest}/"]
        return self._rsync(argv, f"fetching into {dest}")

    def _rsync(self, argv: list[str], what: str) -> tuple[int, int]:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=3600)
        except FileNotFoundError:
            raise SiteConfigError(self.name, "rsync is not installed here") from None
        if done.returncode:
            text = done.stderr.strip()
            if "command not found" in text or "rsync: not found" in text:
                raise SiteConfigError(self.name, f"rsync is not installed there ({what})")
            raise SiteError(self.name, f"{what} failed: {text[-500:]}",
                            transient=done.returncode in (10, 12, 30, 35, 255))
        sent = parse_stats(done.stdout)
        return sent.files, sent.bytes

    def close(self) -> None:
        """Close the SSH connection (the site's manager and runs go on)."""
        self.link.close()
        self.socket.unlink(missing_ok=True)


__all__ = ["STAGE_EXCLUDES", "Site", "SiteInfo", "Staged", "runtime_dir"]
