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
        kc.wait_for_ready(timeout=timeout)
    except BaseException:
        kc.stop_channels()
        raise
    return kc


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
