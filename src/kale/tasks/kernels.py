"""A pool of warm Jupyter kernels for notebook tasks.

Starting an ipykernel takes about half a second; running a trivial notebook on a warm
kernel takes a few milliseconds. The pool therefore keeps kernels alive between tasks and
*resets* a kernel after a successful task (``%reset -f``, then the working directory,
``os.environ`` and ``sys.path`` it had at start are restored) instead of starting a new
one. A kernel is shut down instead of reused, and a replacement started in the background,
after a failing cell, a cancel or timeout, a failed reset, or ``max_uses`` tasks.

What a reset does not undo: modules imported by a task stay imported (``sys.modules``),
threads it started keep running, and process-wide state changed through C extensions stays
changed. Python-level variables never leak from one task to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from kale.errors import KaleError

log = logging.getLogger("kale.kernels")

DEFAULT_KERNEL = "python3"

# Run once, silently, in every new kernel. It defines the hooks the pool calls between
# tasks in a namespace of its own (``sys.modules["_kale_kernel"]``), so ``%reset`` cannot
# remove them and they never show up among the user's variables.
_BOOT = r'''
import gc, os, sys, types
from IPython import get_ipython

def _boot():
    ip = get_ipython()
    base_cwd, base_env, base_path = os.getcwd(), dict(os.environ), list(sys.path)

    def enter(cwd, env, path):
        os.chdir(cwd)
        os.environ.update(env)
        sys.path[:0] = path

    def reset():
        ip.run_line_magic("reset", "-f")  # ends with gc.collect(): fast, see freeze below
        ip.execution_count = 1
        os.chdir(base_cwd)
        os.environ.clear()
        os.environ.update(base_env)
        sys.path[:] = base_path
        # Survivors (the kernel itself, modules a task imported) move to the permanent
        # generation, so the next reset's collections only scan what the next task made.
        gc.freeze()

    sys.modules["_kale_kernel"] = types.SimpleNamespace(enter=enter, reset=reset)
    _guard(ip)
    gc.collect()
    gc.freeze()

def _guard(ip):
    """People attach to this kernel (a console, JupyterLab) while a task runs in it; the
    kernel is the task's, not theirs. `exit` in a console leaves it running, and a
    shutdown request (a "shut down kernel" menu, a server stopping) is answered but not
    obeyed: Kale ends its kernels itself, by signal."""
    try:
        from ipykernel.zmqshell import ZMQExitAutocall
        call = ZMQExitAutocall.__call__
        def keep(self, keep_kernel=True):
            return call(self, keep_kernel=keep_kernel)
        ZMQExitAutocall.__call__ = keep
    except Exception:
        pass
    kernel = getattr(ip, "kernel", None)
    if kernel is None:
        return
    async def shutdown(stream, ident, parent):
        restart = bool(parent.get("content", {}).get("restart", False))
        kernel.session.send(stream, "shutdown_reply", {"status": "ok", "restart": restart},
                            parent, ident=ident)
    for handlers in (getattr(kernel, "control_handlers", None),
                     getattr(kernel, "shell_handlers", None)):
        if handlers and "shutdown_request" in handlers:
            handlers["shutdown_request"] = shutdown

_boot()
'''
_HOOK = '__import__("sys").modules["_kale_kernel"]'
_RESET = f"{_HOOK}.reset()"


class UnknownKernel(KaleError):
    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name, self.available = name, list(available)
        super().__init__(f"no such kernel: {name} (available: {', '.join(available) or 'none'})")


class KernelFailed(KaleError):
    """A kernel did not start, or a silent request to it failed."""


class Kernel:
    """One running kernel: its manager (the process) and a client (the channels)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.km = AsyncKernelManager(kernel_name=name)
        self.kc: AsyncKernelClient | None = None
        self.uses = 0
        self.retiring = False        # a successor is starting to take its place
        self.successor_ready = False  # ...and is ready: shut this one down when free
        self.language_info: dict[str, Any] = {}
        self.dead = False
        #: the subshell tasks run in (ipykernel >= 7, JEP 91): the kernel's main shell
        #: stays free, so a person attached to it gets answers while a cell runs
        self.subshell: str | None = None

    def __repr__(self) -> str:
        return f"<Kernel {self.name} pid={self.pid} uses={self.uses}>"

    @property
    def pid(self) -> int | None:
        pid = getattr(self.km.provisioner, "pid", None)
        return pid if isinstance(pid, int) else None

    @property
    def client(self) -> AsyncKernelClient:
        if self.kc is None:
            raise KernelFailed(f"kernel {self.name} is not started")
        return self.kc

    async def start(self, cwd: Path, timeout: float) -> None:
        await self.km.start_kernel(
            cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kc = self.kc = self.km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=timeout)
        kc.allow_stdin = False
        await self.execute(f"exec({_BOOT!r}, {{}})", timeout)
        reply = await kc.kernel_info(reply=True, timeout=timeout)
        self.language_info = dict(reply["content"].get("language_info") or {})
        if "kernel subshells" in (reply["content"].get("supported_features") or ()):
            await self._into_subshell(timeout)

    async def _into_subshell(self, timeout: float) -> None:
        """Create a subshell and send this client's code there from now on."""
        kc = self.client
        msg = kc.session.msg("create_subshell_request", {})
        kc.control_channel.send(msg)
        while True:
            reply = await asyncio.wait_for(kc.control_channel.get_msg(), timeout)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                break
        sid = reply["content"].get("subshell_id")
        if reply["content"].get("status") != "ok" or not sid:
            return
        self.subshell = str(sid)
        make = kc.session.msg

        def msg_in_subshell(msg_type: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            m: dict[str, Any] = make(msg_type, *args, **kwargs)
            if msg_type == "execute_request":
                m["header"]["subshell_id"] = sid
            return m

        kc.session.msg = msg_in_subshell

    def connection(self) -> dict[str, Any]:
        """What a client needs to attach: ports, transport, HMAC key (secret), and where."""
        import socket

        info = dict(self.km.get_connection_info(session=False))
        session = self.km.session
        key = session.key
        info.update(key=key.decode() if isinstance(key, bytes) else str(key),
                    signature_scheme=session.signature_scheme)
        return {**info, "kernel_name": self.name, "host": socket.gethostname(),
                "pid": self.pid, "subshell": self.subshell}

    async def execute(self, code: str, timeout: float) -> None:
        """Run ``code`` silently (no outputs, no history); raise if it fails."""
        try:
            reply = await self.client.execute(code, silent=True, store_history=False,
                                              allow_stdin=False, reply=True, timeout=timeout)
        except TimeoutError as e:
            raise KernelFailed(f"kernel {self.name} did not answer within {timeout} s") from e
        content = reply["content"]
        if content.get("status") != "ok":
            raise KernelFailed(f"kernel {self.name}: {content.get('ename')}: "
                               f"{content.get('evalue')}")

    async def enter(self, cwd: Path, env: Mapping[str, str], path: Sequence[str],
                    timeout: float = 30.0) -> None:
        """Prepare the kernel for a task: cwd, environment variables, ``sys.path`` head."""
        await self.execute(f"{_HOOK}.enter({str(cwd)!r}, {dict(env)!r}, {list(path)!r})",
                           timeout)

    async def reset(self, timeout: float = 30.0) -> None:
        await self.execute(_RESET, timeout)

    def kill_now(self) -> None:
        """SIGKILL the kernel's process group at once (no await: safe while cancelling)."""
        self.dead = True
        prov = self.km.provisioner
        proc = getattr(prov, "process", None)
        if not isinstance(proc, subprocess.Popen) or proc.returncode is not None:
            return  # never started, or already reaped: its pid may belong to another now
        pgid = getattr(prov, "pgid", None)
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.kill()

    async def shutdown(self) -> None:
        """Kill the kernel and reap it; release its channels and connection file."""
        self.dead = True
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
        try:
            if self.km.has_kernel:
                self.kill_now()
                await self.km.shutdown_kernel(now=True)
            else:
                await self.km.cleanup_resources()
        except Exception as e:  # already gone, or half started
            log.debug("shutting down %r: %s", self, e)


class KernelPool:
    """Warm kernels by kernel name. ``start()`` pre-starts ``size`` kernels of the default
    kernel; :meth:`acquire` hands out a ready kernel (starting one if none is warm) and
    :meth:`release` takes it back, to be reset and reused or shut down and replaced.

    A kernel is retired after ``max_uses`` tasks without a cold start in between: its
    successor starts in the background half way through, and if the successor is still not
    ready at ``max_uses`` the old kernel serves on (up to twice ``max_uses``).
    """

    def __init__(self, size: int = 1, *, default: str = DEFAULT_KERNEL, max_uses: int = 20,
                 startup_timeout: float = 60.0, reset_timeout: float = 30.0) -> None:
        self.size = max(0, size)
        self.default = default
        self.max_uses = max(1, max_uses)
        self.startup_timeout = startup_timeout
        self.reset_timeout = reset_timeout
        self._all: set[Kernel] = set()
        self._idle: dict[str, list[Kernel]] = {}
        self._coming: dict[str, int] = {}  # kernels starting or resetting, to become idle
        self._waiters: dict[str, deque[asyncio.Future[Kernel | None]]] = {}
        self._background: set[asyncio.Task[None]] = set()  # starts and resets
        self._stopping: set[asyncio.Task[None]] = set()    # shutdowns (never cancelled)
        self._specs: list[str] | None = None
        self._closed = False
        # A neutral directory for kernels between tasks (never the caller's cwd, which
        # may disappear).
        self._home = Path(tempfile.gettempdir())

    # -- kernel names --------------------------------------------------------------------
    def available(self, refresh: bool = False) -> list[str]:
        """Names of the installed kernelspecs."""
        if self._specs is None or refresh:
            self._specs = sorted(KernelSpecManager().find_kernel_specs())
        return self._specs

    def check(self, name: str) -> None:
        """Raise :class:`UnknownKernel` unless a kernelspec named ``name`` is installed."""
        if name not in self.available() and name not in self.available(refresh=True):
            raise UnknownKernel(name, self.available())

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start ``size`` kernels of the default kernel, concurrently."""
        missing = self.size - self._live()
        if missing <= 0:
            return
        self.check(self.default)
        self._count(self.default, missing)
        results = await asyncio.gather(*(self._start(self.default) for _ in range(missing)),
                                       return_exceptions=True)
        errors: list[BaseException] = []
        for r in results:
            self._count(self.default, -1)
            if isinstance(r, Kernel):
                self._put_idle(r)
            else:
                errors.append(r)
                self._wake_one(self.default)
        if errors:
            raise errors[0]

    async def close(self) -> None:
        """Shut every kernel down, idle or busy, and wait until they are gone."""
        self._closed = True
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(KernelFailed("the kernel pool is closed"))
        kernels = list(self._all)
        self._all.clear()
        self._idle.clear()
        await asyncio.gather(*(k.shutdown() for k in kernels), *self._stopping,
                             return_exceptions=True)

    @property
    def kernels(self) -> list[Kernel]:
        """Every kernel the pool holds (idle, busy or being reset)."""
        return list(self._all)

    def _live(self) -> int:
        """Kernels that count towards ``size`` (not those a successor is replacing)."""
        return sum(1 for k in self._all if not k.retiring)

    def _count(self, name: str, delta: int) -> None:
        self._coming[name] = self._coming.get(name, 0) + delta

    async def _start(self, name: str) -> Kernel:
        if self._closed:
            raise KernelFailed("the kernel pool is closed")
        k = Kernel(name)
        self._all.add(k)
        try:
            await k.start(self._home, self.startup_timeout)
        except BaseException as e:
            self._all.discard(k)
            k.kill_now()
            await asyncio.shield(self._stop(k))
            if isinstance(e, Exception) and not isinstance(e, KaleError):
                raise KernelFailed(f"kernel {name} failed to start: "
                                   f"{type(e).__name__}: {e}") from e
            raise
        log.debug("started %r", k)
        return k

    def _stop(self, kernel: Kernel) -> asyncio.Task[None]:
        """Shut ``kernel`` down in a task that close() waits for."""
        self._all.discard(kernel)
        log.debug("stopping %r", kernel)
        task = asyncio.ensure_future(kernel.shutdown())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- acquire / release ---------------------------------------------------------------
    async def acquire(self, name: str | None = None) -> Kernel:
        """A ready kernel of kernelspec ``name`` (default: the pool's default kernel)."""
        name = name or self.default
        if self._closed:
            raise KernelFailed("the kernel pool is closed")
        self.check(name)
        kernel: Kernel | None = None
        idle = self._idle.get(name)
        while idle and kernel is None:
            kernel = idle.pop()
            if not await kernel.km.is_alive():  # died while idle (OOM killer...)
                self._retire(kernel)
                kernel = None
        if kernel is None and self._coming.get(name, 0) > len(self._waiters.get(name, ())):
            # A kernel is being reset or started: waiting for it beats a cold start.
            fut: asyncio.Future[Kernel | None] = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(name, deque())
            waiters.append(fut)
            try:
                kernel = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    got = fut.result()
                    if got is not None:
                        self._put_idle(got)
                raise
            finally:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
        if kernel is None:
            kernel = await self._start(name)
        kernel.uses += 1
        if (kernel.uses >= max(1, self.max_uses // 2) and not kernel.retiring
                and not self._closed):
            kernel.retiring = True  # start its successor while it keeps serving
            self._count(name, 1)
            self._spawn(self._replace(name, predecessor=kernel))
        return kernel

    def release(self, kernel: Kernel, reusable: bool) -> None:
        """Take ``kernel`` back. Reusable: reset it in the background and keep it warm.
        Otherwise shut it down and start a replacement in the background."""
        if kernel not in self._all:
            return
        if self._closed:
            self._stop(kernel)
            return
        if not reusable or kernel.dead:
            reuse = False
        elif kernel.retiring:
            reuse = kernel.uses < (2 if not kernel.successor_ready else 1) * self.max_uses
        else:
            reuse = self._live() <= self.size
        # Counted now, not when the task starts: an acquire() right after this call must
        # wait for the reset rather than start a kernel of its own.
        self._count(kernel.name, 1)
        self._spawn(self._recycle(kernel, reuse))

    async def discard(self, kernel: Kernel) -> None:
        """Kill ``kernel`` now (awaited) and start a replacement in the background."""
        kernel.kill_now()
        if kernel not in self._all:
            return
        task = self._retire(kernel)
        await asyncio.shield(task)

    def _retire(self, kernel: Kernel) -> asyncio.Task[None]:
        """Shut ``kernel`` down; start a replacement if the pool is short of kernels."""
        task = self._stop(kernel)
        if not self._closed and self._live() < self.size:
            self._count(kernel.name, 1)
            self._spawn(self._replace(kernel.name))
        else:
            self._wake_one(kernel.name)
        return task

    async def _recycle(self, kernel: Kernel, reuse: bool) -> None:
        """Reset ``kernel`` for reuse, or replace it; the caller counted it in ``_coming``."""
        name = kernel.name
        if reuse:
            try:
                await kernel.reset(self.reset_timeout)
            except Exception as e:
                log.warning("resetting %r failed (%s); replacing it", kernel, e)
            else:
                self._count(name, -1)
                self._put_idle(kernel)
                return
        self._count(name, -1)
        await asyncio.shield(self._retire(kernel))

    async def _replace(self, name: str, predecessor: Kernel | None = None) -> None:
        """Start a kernel for the pool; the caller counted it in ``_coming``."""
        try:
            kernel = await self._start(name)
        except BaseException as e:
            self._count(name, -1)
            if predecessor is not None:
                predecessor.retiring = False  # it serves on; a later acquire tries again
            self._wake_one(name)
            if not isinstance(e, Exception):
                raise
            log.warning("starting a %s kernel failed: %s", name, e)
            return
        self._count(name, -1)
        if predecessor is not None:
            predecessor.successor_ready = True
            idle = self._idle.get(name, [])
            if predecessor in idle and predecessor.uses >= self.max_uses:
                idle.remove(predecessor)
                self._stop(predecessor)
        self._put_idle(kernel)

    def _put_idle(self, kernel: Kernel) -> None:
        waiters = self._waiters.get(kernel.name)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(kernel)
                return
        if kernel.successor_ready and kernel.uses >= self.max_uses:  # replaced while busy
            self._stop(kernel)
            return
        self._idle.setdefault(kernel.name, []).append(kernel)

    def _wake_one(self, name: str) -> None:
        """A kernel someone may be waiting for will not come: let one waiter start its own."""
        waiters = self._waiters.get(name)
        if not waiters or len(waiters) <= self._coming.get(name, 0):
            return
        while waiters:
            fut = waiters.pop()
            if not fut.done():
                fut.set_result(None)
                return
