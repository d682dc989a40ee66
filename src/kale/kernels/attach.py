"""Attach to a running task's kernel from its connection info (fetched from the manager).

The kernel listens on its node's loopback. On the same host a client connects directly;
from another host it goes through an SSH tunnel to the kernel's host (one ``ssh -N``
forwarding every port, with the user's SSH keys, agent and config)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


def is_local(info: dict[str, Any]) -> bool:
    host = info.get("host")
    return not host or host in (socket.gethostname(), "localhost", socket.getfqdn())


PORTS = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
_KEYS = ("transport", "ip", *PORTS, "signature_scheme", "key", "kernel_name")


def local_info(info: dict[str, Any]) -> dict[str, Any]:
    """Connection info as it is on the kernel's host (for this host only)."""
    return {k: info[k] for k in _KEYS if k in info}


class Tunnel:
    """One ``ssh -N`` process forwarding a local port to each of ``forwards`` (name ->
    (address, port) as seen from ``host``): every port of a kernel, or a manager's API.
    jupyter_client's tunnel support starts one ssh per port through pexpect and returns
    before they all listen; one of five was often missing. This waits until all listen.
    ``identity``: an SSH key file (else the agent and ssh's own defaults)."""

    def __init__(self, host: str, forwards: dict[str, tuple[str, int]],
                 timeout: float = 30.0, identity: str | None = None) -> None:
        import subprocess
        import time

        self.host = host
        self.local = {name: _free_port() for name in forwards}
        argv = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"]
        if identity:
            argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        for name, (address, port) in forwards.items():
            argv += ["-L", f"127.0.0.1:{self.local[name]}:{address}:{port}"]
        self.proc = subprocess.Popen([*argv, host], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not all(_listening(p) for p in self.local.values()):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr \
                    else ""
                raise ConnectionError(f"ssh to {host} failed: {err.strip() or 'no output'}")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"the SSH tunnel to {host} was not up within {timeout:g} s")
            time.sleep(0.05)

    @classmethod
    def for_kernel(cls, host: str, info: dict[str, Any], timeout: float = 30.0) -> Tunnel:
        return cls(host, {name: (str(info["ip"]), int(info[name])) for name in PORTS}, timeout)

    def info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**local_info(info), **self.local, "ip": "127.0.0.1"}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def reachable(info: dict[str, Any], timeout: float = 30.0) -> tuple[dict[str, Any],
                                                                    Tunnel | None]:
    """Connection info usable from here, and the tunnel it needs (None on the kernel's
    own host); the caller closes the tunnel when done."""
    if is_local(info):
        return local_info(info), None
    tunnel = Tunnel.for_kernel(str(info["host"]), info, timeout)
    return tunnel.info(info), tunnel


def connect(info: dict[str, Any], *, timeout: float = 10.0) -> Any:
    """A started, ready ``BlockingKernelClient`` on the kernel; through an SSH tunnel
    (closed with the client's channels) when the kernel is on another host."""
    from jupyter_client.blocking.client import BlockingKernelClient

    tunnel = None if is_local(info) else Tunnel.for_kernel(str(info["host"]), info, timeout)

    class Client(BlockingKernelClient):
        """jupyter_client's blocking client, which also closes the SSH tunnel (if any) when its
        channels stop. Blocking: use it from one thread."""

        def stop_channels(self) -> None:
            super().stop_channels()
            if tunnel is not None:
                tunnel.close()

    where = tunnel.info(info) if tunnel is not None else local_info(info)
    return start_client(Client(), where, timeout)


def start_client(kc: Any, where: dict[str, Any], timeout: float) -> Any:
    """``kc`` (a blocking kernel client) on the connection info ``where``, its channels
    started, once the kernel answers; its channels stopped (and whatever its
    ``stop_channels`` releases) if it does not within ``timeout`` seconds."""
    kc.load_connection_info(where)
    kc.start_channels()
    try:
        wait_for_ready(kc, timeout)
    except BaseException:
        kc.stop_channels()
        raise
    return kc


def wait_for_ready(kc: Any, timeout: float) -> None:
    """The kernel answers on its shell and this client hears its IOPub. (jupyter_client's
    ``wait_for_ready`` first polls the heartbeat with 0.2 s sleeps: most of an attach.)"""
    import time
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        msg_id = kc.kernel_info()
        left = deadline - time.monotonic()
        try:
            reply = kc.get_shell_msg(timeout=max(0.05, min(1.0, left)))
        except Empty:
            reply = None
        if reply is not None and reply["parent_header"].get("msg_id") == msg_id:
            try:  # the kernel_info's busy/idle on IOPub: subscribed (ZMQ joins late)
                kc.get_iopub_msg(timeout=0.2)
            except Empty:
                pass
            else:
                break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the task's kernel did not answer within {timeout:g} s")
    while True:  # what is left of this exchange on IOPub
        try:
            kc.get_iopub_msg(timeout=0.02)
        except Empty:
            return


def write_connection_file(info: dict[str, Any], directory: Path, name: str) -> Path:
    """A connection file (mode 0600: it holds the kernel's key) for tools that take one,
    such as ``jupyter console --existing``; ``info`` as :func:`reachable` gives it."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"kernel-{name}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return path
