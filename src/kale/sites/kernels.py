"""Attach to a running task's kernel at a site, through the site's SSH connection.

A task's kernel listens on its host's loopback. At a site, that host is the site's (its
login node, or wherever its manager runs the task): this machine cannot reach it, and
must not try even when the names happen to match (a site on this very machine, as the
tests have it). :func:`site_kernel` forwards the kernel's five ports, as the site's host
sees them, to local ports through the site's one multiplexed SSH connection
(:class:`KernelForwards`), and gives a ``jupyter_client`` client on those local ports.

Why forwards of the master rather than a ``ssh -N -L`` process
(:class:`kale.kernels.attach.Tunnel`): with the site's ``ControlPath``, such an ``ssh``
is a client of the master, which hands the forwards to the master and exits at once; the
forwards would outlive it, and closing it would close nothing. Asking the master itself
(``ssh -O forward``, later ``ssh -O cancel``) says what happens: the ports are the
master's, over the connection the user authenticated once, and are removed when the
kernel client stops.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from typing import TYPE_CHECKING, Any

from kale.errors import SiteError
from kale.kernels.attach import PORTS, _free_port, local_info, start_client, wait_for_ready

if TYPE_CHECKING:
    from kale.sites.site import Site

log = logging.getLogger("kale.sites")

#: seconds between two looks at the master connection (to forward again after a drop)
WATCH = 1.0
#: tries at finding five free local ports (another process may take one meanwhile)
TRIES = 3


class KernelForwards:
    """A kernel's ports forwarded to local ports (``local``: port name -> port on
    127.0.0.1) by the site's master connection.

    Invariants: from construction to :meth:`close`, every local port is a forward of the
    master to the kernel's port as the site's host sees it; when the master connection
    drops and comes back (anyone may bring it back: this object's watcher thread does,
    after ``WATCH`` seconds), the same local ports are forwarded again, so a ZeroMQ client
    reconnects by itself; :meth:`close` removes the forwards (idempotent). Threads: one
    watcher (``kale-kernel-forwards``); :meth:`close` from any thread."""

    def __init__(self, site: Site, info: dict[str, Any]) -> None:
        self.site = site
        self.remote = {name: (str(info["ip"]), int(info[name])) for name in PORTS}
        self.local: dict[str, int] = {}
        #: how many times the ports were forwarded again (after a dropped connection)
        self.generation = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.master = self._open()
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name="kale-kernel-forwards")
        self._watcher.start()

    def info(self, info: dict[str, Any]) -> dict[str, Any]:
        """The kernel's connection info as a client here uses it."""
        return {**local_info(info), **self.local, "ip": "127.0.0.1"}

    def specs(self) -> list[str]:
        """ssh's ``-L`` arguments of the forwards."""
        return [f"127.0.0.1:{self.local[n]}:{host}:{port}"
                for n, (host, port) in self.remote.items()]

    def _open(self) -> int | None:
        """Forward the ports (new local ones on the first call); the master's pid."""
        link = self.site.link
        if not link.alive():  # (through the site, whose lock keeps reconnections one)
            self.site.reconnect()
        error = ""
        for _ in range(TRIES if not self.local else 1):
            if not self.local or error:
                self.local = {name: _free_port() for name in self.remote}
            done = self._mux("forward")
            if done.returncode == 0:
                return link.master_pid()
            error = done.stderr.strip()
        raise SiteError(self.site.name, f"cannot forward the kernel's ports: {error}",
                        transient=True)

    def _mux(self, command: str) -> subprocess.CompletedProcess[str]:
        link = self.site.link
        argv = ["ssh", *link.ssh_args(), "-O", command]
        for spec in self.specs():
            argv += ["-L", spec]
        return subprocess.run([*argv, link.config.destination], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)

    def _watch(self) -> None:
        while not self._closed.wait(WATCH):
            pid = self.master
            if pid is not None and _alive(pid):
                continue
            self.generation += 1  # (first: a client executing from now on waits for IOPub)
            try:
                with self._lock:
                    if not self._closed.is_set():
                        self.master = self._open()
                        log.info("site %s: the kernel's ports are forwarded again",
                                 self.site.name)
            except Exception as e:  # the site is away: try again at the next look
                log.warning("site %s: cannot forward the kernel's ports again (%s)",
                            self.site.name, e)

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            if self.master is not None and _alive(self.master):
                self._mux("cancel")


def _alive(pid: int) -> bool:
    """Whether the process ``pid`` runs (a zombie does not: a master that died may wait
    for a parent that never reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
    try:  # no /proc (macOS)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def site_kernel(site: Site, client: Any, run_id: str, task: str,
                timeout: float = 10.0) -> Any:
    """A started, ready ``BlockingKernelClient`` on the kernel of ``task`` (of run
    ``run_id``, at ``site``; ``client`` is the site manager's
    :class:`~kale.client.remote.Client`), through the site's SSH connection. Its
    ``forwards`` (:class:`KernelForwards`) live as long as it: ``stop_channels()``
    removes them."""
    from jupyter_client.blocking.client import BlockingKernelClient

    info = client.kernel_info(run_id, task)
    forwards = KernelForwards(site, info)

    class Client(BlockingKernelClient):
        """jupyter_client's blocking client, which removes the forwards of the kernel's
        ports when its channels stop, and after the forwards came back on a new SSH
        connection, waits until its IOPub subscription is back before it executes code
        (ZeroMQ reconnects by itself, the subscription a little later: output sent
        before then would be lost). Blocking: use it from one thread."""

        seen = 0  # the forwards' generation this client last synchronised with

        def execute(self, *args: Any, **kwargs: Any) -> str:
            if forwards.generation != self.seen:
                wait_for_ready(self, timeout)
                self.seen = forwards.generation
            return str(super().execute(*args, **kwargs))

        def stop_channels(self) -> None:
            super().stop_channels()
            forwards.close()

    kc = Client()
    kc.forwards = forwards  # type: ignore[attr-defined]
    return start_client(kc, forwards.info(info), timeout)
