"""Attach to a running task's kernel from its connection info (fetched from the manager).

The kernel listens on its node's loopback. On the same host a client connects directly;
from another host it goes through an SSH tunnel to the kernel's host (jupyter_client's
tunnel support, with the user's SSH keys or agent)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


def is_local(info: dict[str, Any]) -> bool:
    host = info.get("host")
    return not host or host in (socket.gethostname(), "localhost", socket.getfqdn())


def local_info(info: dict[str, Any]) -> dict[str, Any]:
    """Connection info usable from here: as it is on the kernel's host, else with ports
    forwarded through an SSH tunnel to that host."""
    keys = ("transport", "ip", "shell_port", "iopub_port", "stdin_port", "hb_port",
            "control_port", "signature_scheme", "key", "kernel_name")
    out = {k: info[k] for k in keys if k in info}
    if is_local(info):
        return out
    from jupyter_client import tunnel_to_kernel

    ports = tunnel_to_kernel(out, str(info["host"]))  # type: ignore[arg-type]
    names = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
    out.update(dict(zip(names, ports, strict=True)), ip="127.0.0.1")
    return out


def connect(info: dict[str, Any], *, timeout: float = 10.0) -> Any:
    """A started, ready ``BlockingKernelClient`` on the kernel."""
    from jupyter_client.blocking.client import BlockingKernelClient

    kc = BlockingKernelClient()
    kc.load_connection_info(local_info(info))  # type: ignore[arg-type]
    kc.start_channels()
    try:
        _wait_for_ready(kc, timeout)
    except BaseException:
        kc.stop_channels()
        raise
    return kc


def _wait_for_ready(kc: Any, timeout: float) -> None:
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
    such as ``jupyter console --existing``."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"kernel-{name}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(local_info(info), f)
    return path
