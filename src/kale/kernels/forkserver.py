"""A kernel factory: a process of the kernel's own Python that has imported ipykernel
(and nothing else a fresh kernel would not import while starting), and forks a new
kernel process on request. A forked kernel starts in a few tens of milliseconds of CPU
instead of the ~0.3 s an interpreter spends importing ipykernel, and is as fresh as one
started by ``python -m ipykernel_launcher``: no user code ever ran in the factory.

Kale runs this file with ``PYTHON -c "exec(...)" PATH FD`` (never imports it: it must work
in any Python that has ipykernel, Kale or not). FD is one end of a ``SOCK_SEQPACKET`` socket
pair. The protocol, one JSON message per packet:

* factory -> Kale, once ready: ``{"ready": pid}`` (or ``{"error": "..."}`` and exit);
* Kale -> factory: ``{"argv": [...], "env": {...}, "cwd": "..."}``, where argv is what
  follows ``-m ipykernel_launcher`` in the kernelspec's command (``-f FILE ...``);
* factory -> Kale: ``{"pid": pid}`` with a pidfd of the new kernel attached
  (``SCM_RIGHTS``), or ``{"error": "..."}``.

Each kernel is the leader of a new session and dies with the factory
(``PR_SET_PDEATHSIG``), which dies with Kale and exits when Kale closes its socket. The
factory reaps its children; Kale watches each kernel through its pidfd, so a reused pid
is never mistaken for the kernel.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Any

#: imported before forking: ipykernel imports all of these while a kernel starts
PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell",
           "ipykernel.debugger", "IPython.core.completerlib", "tornado.platform.asyncio",
           "tornado.queues", "faulthandler")


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _send(sock: socket.socket, doc: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(doc).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(sock: socket.socket, req: dict[str, Any], factory: int) -> None:
    """In the forked process: become a kernel; never return."""
    code = 1
    try:
        sock.close()
        os.setsid()
        _die_with_parent()
        if os.getppid() != factory:  # the factory died before the line above
            os._exit(1)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        import importlib.util

        spec = importlib.util.find_spec("ipykernel_launcher")
        argv = [str(a) for a in req["argv"]]
        sys.argv = [spec.origin if spec and spec.origin else "ipykernel_launcher", *argv]
        from ipykernel.kernelapp import IPKernelApp

        # what ``python -m ipykernel_launcher`` does; the kernel polls its parent (this
        # factory) as a launched kernel polls the process that launched it
        app = IPKernelApp.instance(parent_handle=factory)
        app.initialize(argv)  # type: ignore[no-untyped-call]
        app.start()  # type: ignore[no-untyped-call]
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[2]))
    _die_with_parent()
    # like ipykernel_launcher: the working directory is not on sys.path while importing
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    try:
        if not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
            raise RuntimeError("needs Python >= 3.9 on Linux (pidfd_open)")
        import importlib

        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:  # an older ipykernel: it imports less
                continue
        import ipykernel.kernelapp  # noqa: F401 - this one is required
    except BaseException as e:
        _send(sock, {"error": f"{type(e).__name__}: {e}"})
        return
    import gc

    gc.collect()
    gc.freeze()  # kernels share these pages; their collections need not scan them
    me = os.getpid()
    _send(sock, {"ready": me})
    while True:
        ready, _, _ = select.select([sock], [], [], 1.0)
        _reap()
        if not ready:
            continue
        try:
            data = sock.recv(1 << 22)
        except OSError:
            return
        if not data:  # Kale closed its end: the factory's work is over
            return
        try:
            req = json.loads(data)
            pid = os.fork()
        except BaseException as e:
            _send(sock, {"error": f"{type(e).__name__}: {e}"})
            continue
        if pid == 0:
            _child(sock, req, me)
        pidfd = os.pidfd_open(pid)  # the child is not reaped before this: no reused pid
        try:
            _send(sock, {"pid": pid}, [pidfd])
        finally:
            os.close(pidfd)


if __name__ == "__main__":
    main()
