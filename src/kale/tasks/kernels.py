"""Jupyter kernels for notebook tasks (and Python tasks given a ``kernel``).

**A fresh kernel per task** (the default), as papermill starts one per notebook: a task
gets a kernel no task ran in before, and the kernel is discarded when the task ends, so
nothing a notebook did (``logging`` handlers, ``warnings`` filters, the ``decimal``
context, monkey-patches, imported modules, threads) reaches the next one. To keep that
cheap, the :class:`KernelPool` starts kernels *ahead of demand* (``ahead`` of them per
kernelspec in use), and for ipykernel kernelspecs it forks them from a factory process of
the kernelspec's own Python that has already imported ipykernel
(:mod:`kale.kernels.forkserver`): a forked kernel costs a few tens of milliseconds of CPU
instead of the ~0.3 s an interpreter spends importing ipykernel, and no user code ever ran
in the factory. (Kernels forked from one factory share its string hash seed, as processes
started with the same ``PYTHONHASHSEED`` do.) Other kernels (R, Julia, an ipykernel
started through a wrapper script) are launched by jupyter_client as usual.

**Reusing kernels** (opt-in, :func:`kernel_reuse`: ``KALE_KERNEL_REUSE=1`` in a task's
``env``, or in the environment of the process that runs tasks): after a task that
succeeded, its kernel is *reset* (``%reset -f``; the working directory, ``os.environ`` and
``sys.path`` it had at start are restored) and serves the next task that also opted in,
up to ``max_uses`` tasks. That saves the kernel start, but module-level state stays: what a
task imported stays imported, and process-wide settings it changed stay changed. A kernel
is never reused when a user module it loaded changed on disk since
(:mod:`kale.tasks.usercode`): it would run old code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

from kale.errors import KaleError
from kale.model.kernels import DEFAULT_KERNEL, UnknownKernel, choose_kernel, kernel_alias
from kale.tasks import procs, usercode

log = logging.getLogger("kale.kernels")

#: the environment variable that opts a task (or every task a process runs) into reusing
#: kernels; see :func:`kernel_reuse`
REUSE_ENV = "KALE_KERNEL_REUSE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

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
# The manifest of the user code the kernel loaded (kale.tasks.usercode.loaded), as the
# repr of a dict of strings. Asked for as a user expression: no output, nothing in the
# history, whatever the task did to sys.stdout or the json module; a kernel without Kale
# importable answers with an error (its manifest is then UNKNOWN_CODE).
_MANIFEST = "repr(__import__('kale.tasks.usercode', fromlist=['loaded']).loaded())"
#: the manifest of a Python kernel that could not tell its user code: a "file" that has no
#: hash, so :func:`kale.tasks.usercode.stale` always finds it changed
UNKNOWN_CODE = {"<user code unknown: Kale is not importable in the kernel>": ""}


class KernelFailed(KaleError):
    """A kernel did not start, or a silent request to it failed."""


# -- which kernel ------------------------------------------------------------------------

_installed: list[str] | None = None


def installed_kernels(refresh: bool = False) -> list[str]:
    """Names of the installed kernelspecs (cached; ``refresh`` reads them again)."""
    global _installed
    if _installed is None or refresh:
        _installed = sorted(KernelSpecManager().find_kernel_specs())
    return _installed


def check_kernel(name: str, source: str = "") -> None:
    """Raise :class:`UnknownKernel` unless a kernelspec named ``name`` is installed
    (kernelspec names are case-insensitive, as jupyter_client looks them up). ``source``
    says where the name came from, for the message."""
    key = kernel_alias(name).lower()
    if key not in installed_kernels() and key not in installed_kernels(refresh=True):
        raise UnknownKernel(name, installed_kernels(), source)


def kernel_for(notebook: str | os.PathLike[str] | None, task_kernel: str | None = None,
               default: str = DEFAULT_KERNEL) -> str:
    """The kernel a notebook task runs on, as papermill picks it: the task's ``kernel``,
    else the notebook's ``metadata.kernelspec.name``, else ``default``. Raises
    :class:`UnknownKernel` (a :class:`KaleError` whose message names the kernel, where the
    name came from and the installed kernels) when no such kernelspec is installed.

    For ``kale validate``: a notebook that cannot be read is not this function's to judge;
    it then checks the task's kernel, or the default.
    """
    metadata: Mapping[str, Any] | None = None
    if notebook is not None and not task_kernel:
        try:
            with open(notebook, encoding="utf-8") as f:
                doc = json.load(f)
            metadata = doc.get("metadata") if isinstance(doc, dict) else None
        except (OSError, ValueError):
            metadata = None
    name, source = choose_kernel(task_kernel, metadata if isinstance(metadata, Mapping)
                                 else None, default)
    check_kernel(name, source)
    return name


def kernel_reuse(env: Mapping[str, str], default: str | None = None) -> bool:
    """Whether a task opted into reusing kernels: ``KALE_KERNEL_REUSE`` in its ``env``,
    else ``default`` (the value in the environment of the process running it). ``1``,
    ``true``, ``yes``, ``on`` reuse; ``0``, ``false``, ``no``, ``off`` or unset do not.
    Anything else raises :class:`KaleError` with a message saying so."""
    value = env.get(REUSE_ENV)
    where = "in the task's env"
    if value is None:
        value, where = default, "in the environment Kale runs in"
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise KaleError(f"{REUSE_ENV}={value!r} {where}: use 1 to reuse kernels between tasks "
                    "or 0 for a fresh kernel per task")


# -- the kernel factory ------------------------------------------------------------------

_FORKSERVER = Path(__file__).resolve().parent.parent / "kernels" / "forkserver.py"
_LAUNCHERS = ("ipykernel_launcher", "ipykernel")
_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# ``python -c`` (the working directory is not on sys.path while it imports ipykernel, as
# with ipykernel_launcher), running the factory's file by path: any Python runs it
# (``-c`` puts the working directory first on sys.path: taken out before any import)
_BOOTSTRAP = ("import sys; sys.path[:] = [q for q in sys.path if q]; p = sys.argv[1]; "
              "exec(compile(open(p).read(), p, 'exec'))")


class _Forked:
    """What jupyter_client's ``LocalProvisioner`` uses of a ``Popen``, for a kernel forked
    by a factory: not this process's child, so it is watched through its pidfd (a reused
    pid is never mistaken for it). Its exit status is not ours to read: ``returncode`` is
    minus the signal Kale sent, or 0."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._fd = pidfd
        self._sent = 0
        self.returncode: int | None = None

    def _readable(self, timeout: float | None) -> bool:
        poller = select.poll()  # not select(): a busy worker may hold fds beyond 1024
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))

    def poll(self) -> int | None:
        if self.returncode is None and self._readable(0):
            self._exited()
        return self.returncode

    def _exited(self) -> None:
        self.returncode = -self._sent if self._sent else 0
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._readable(timeout):
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
            self._exited()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the kernel and its process group (it leads a session of its own)."""
        if self.poll() is not None:
            return
        self._sent = sig
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._fd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class KernelFactory:
    """A factory process (:mod:`kale.kernels.forkserver`) for one ipykernel kernelspec:
    its Python, with the kernelspec's environment, forks kernels on request."""

    def __init__(self, name: str, python: str, module: str, env: Mapping[str, str],
                 cwd: Path) -> None:
        self.name, self.python, self.module = name, python, module
        self.env, self.cwd = dict(env), cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_kernel(cls, name: str, cwd: Path) -> KernelFactory | None:
        """A factory for kernelspec ``name`` if its command is ``PYTHON -m
        ipykernel_launcher -f {connection_file} ...`` (or ``-m ipykernel``) on Linux."""
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
            return None
        try:
            spec = KernelSpecManager().get_kernel_spec(name)
        except NoSuchKernel:
            return None
        argv = list(spec.argv)
        if len(argv) < 5 or argv[1] != "-m" or argv[2] not in _LAUNCHERS \
                or "{connection_file}" not in argv[3:]:
            return None
        if any("{" in str(v) for v in (spec.env or {}).values()):
            return None  # substitutions jupyter_client makes per kernel
        python = argv[0]
        if python in {"python", f"python{sys.version_info[0]}",
                      "python{}.{}".format(*sys.version_info[:2])}:
            python = sys.executable  # as jupyter_client resolves it
        env = {**os.environ, **(spec.env or {})}
        env.pop("PYTHONEXECUTABLE", None)
        return cls(name, python, argv[2], env, cwd)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.sock is not None

    def accepts(self, cmd: Sequence[str]) -> list[str] | None:
        """The kernel's own arguments (``-f FILE ...``) if ``cmd`` is this factory's kind
        of kernel, else None."""
        if len(cmd) >= 3 and cmd[0] == self.python and cmd[1] == "-m" and cmd[2] == self.module:
            return list(cmd[3:])
        return None

    async def start(self, timeout: float) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = procs.spawn(
                [self.python, "-c", _BOOTSTRAP, str(_FORKSERVER), str(child.fileno())],
                cwd=self.cwd, env=self.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=[child.fileno()])
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        try:
            doc, _ = await self._receive(timeout)
        except BaseException:
            await self.close()
            raise
        if "ready" not in doc:
            await self.close()
            raise KernelFailed(f"kernel factory for {self.name}: {doc.get('error')}")

    async def _receive(self, timeout: float) -> tuple[dict[str, Any], list[int]]:
        sock = self.sock
        if sock is None:
            raise KernelFailed("the kernel factory is closed")
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 1)
            except BlockingIOError:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(sock.fileno(), _set_done, readable)
                try:
                    await asyncio.wait_for(readable, timeout)
                except TimeoutError as e:
                    raise KernelFailed(f"the kernel factory for {self.name} did not "
                                       f"answer within {timeout:g} s") from e
                finally:
                    loop.remove_reader(sock.fileno())
                continue
            except OSError as e:
                raise KernelFailed(f"the kernel factory for {self.name}: {e}") from e
            if not data:
                raise KernelFailed(f"the kernel factory for {self.name} exited")
            doc = json.loads(data)
            return (doc if isinstance(doc, dict) else {}), list(fds)

    async def fork(self, argv: Sequence[str], env: Mapping[str, str], cwd: str,
                   timeout: float) -> _Forked:
        """A new kernel process running ``ipykernel_launcher ARGV``."""
        exchange = asyncio.ensure_future(self._exchange(argv, env, cwd, timeout))
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:
            # The factory answers anyway; read its answer (never leave it in the socket
            # for the next request) and kill the kernel nobody wants.
            def drop(task: asyncio.Future[_Forked]) -> None:
                if not task.cancelled() and task.exception() is None:
                    proc = task.result()
                    proc.kill()
                    proc.close()

            exchange.add_done_callback(drop)
            raise

    async def _exchange(self, argv: Sequence[str], env: Mapping[str, str], cwd: str,
                        timeout: float) -> _Forked:
        async with self._lock:
            if not self.alive or self.sock is None:
                raise KernelFailed(f"the kernel factory for {self.name} is not running")
            request = json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd})
            await asyncio.get_running_loop().sock_sendall(self.sock, request.encode())
            doc, fds = await self._receive(timeout)
        if "pid" not in doc or not fds:
            for fd in fds:
                os.close(fd)
            raise KernelFailed(f"the kernel factory for {self.name}: "
                               f"{doc.get('error', 'no kernel')}")
        return _Forked(int(doc["pid"]), fds[0])

    async def close(self) -> None:
        """End the factory (its kernels die with it: close them first)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        proc, self.proc = self.proc, None
        if proc is not None:
            await procs.terminate(proc, grace=1.0)


class _KernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager, launching through a :class:`KernelFactory` when it
    has one (and as usual when the factory cannot: it died, or the command differs)."""

    factory: KernelFactory | None = None

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        factory = self.factory
        argv = factory.accepts(kernel_cmd) if factory is not None else None
        prov: Any = self.provisioner
        if factory is None or argv is None or prov is None or not hasattr(prov, "process"):
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        env = dict(kw.get("env") or os.environ)
        env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
        try:
            self._zero_ports()
            proc = await factory.fork(argv, env, str(kw.get("cwd") or os.getcwd()),
                                      timeout=30.0)
        except (KernelFailed, OSError, ValueError) as e:
            log.warning("%s; starting the kernel without the factory", e)
            self._connection_file_written = False
            self.write_connection_file()  # with the ports jupyter_client picked
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        prov.process = proc
        prov.pid = proc.pid
        prov.pgid = None  # _Forked signals the group itself, while the kernel lives
        prov.cwd = kw.get("cwd")
        for port, number in (await self._kernel_ports(proc, timeout=30.0)).items():
            setattr(self, port, number)
        prov.connection_info = self.get_connection_info()
        self._reconcile_connection_info(prov.connection_info)

    def _zero_ports(self) -> None:
        """Let the kernel choose its own ports: jupyter_client picks free ports here and
        the kernel binds them later, so two processes starting kernels at once can pick
        the same port (the later kernel then dies: "Address already in use"). A kernel
        given port 0 binds a port the system picks, atomically, and writes the ports it
        got back to its connection file."""
        with open(self.connection_file, encoding="utf-8") as f:
            info = json.load(f)
        info.update(dict.fromkeys(_PORTS, 0))
        with open(self.connection_file, "w", encoding="utf-8") as f:  # keeps its 0600 mode
            json.dump(info, f)

    async def _kernel_ports(self, proc: _Forked, timeout: float) -> dict[str, int]:
        """The ports the kernel bound, once it wrote them to its connection file."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.connection_file, encoding="utf-8") as f:
                    info = json.load(f)
                if all(isinstance(info.get(p), int) and info[p] > 0 for p in _PORTS):
                    return {p: int(info[p]) for p in _PORTS}
            except (OSError, ValueError):
                pass  # being written
            if proc.poll() is not None:
                raise KernelFailed(f"kernel {self.kernel_name} died while starting")
            if time.monotonic() > deadline:
                raise KernelFailed(f"kernel {self.kernel_name} did not start within "
                                   f"{timeout:g} s")
            await asyncio.sleep(0.005)



class Kernel:
    """One running kernel: its manager (the process) and a client (the channels)."""

    def __init__(self, name: str, factory: KernelFactory | None = None) -> None:
        self.name = name
        self.km = _KernelManager(kernel_name=name)
        self.km.factory = factory
        self.kc: AsyncKernelClient | None = None
        self.uses = 0  # tasks it served (0: fresh)
        #: the user code its tasks loaded (path -> content hash), when it may be reused
        self.manifest: dict[str, str] | None = None
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
        await self._ready(timeout)
        kc.allow_stdin = False
        await self.execute(f"exec({_BOOT!r}, {{}})", timeout)
        reply = await kc.kernel_info(reply=True, timeout=timeout)
        self.language_info = dict(reply["content"].get("language_info") or {})
        if "kernel subshells" in (reply["content"].get("supported_features") or ()):
            await self._into_subshell(timeout)

    async def _ready(self, timeout: float) -> None:
        """Wait until the kernel answers on its shell channel and its IOPub messages reach
        this client (what ``wait_for_ready`` checks, without its fixed 0.2 s waits: a
        kernel started ahead of demand is ready sooner, so fewer are needed ahead)."""
        kc = self.client
        deadline = time.monotonic() + timeout
        while True:
            kc.kernel_info()
            try:
                msg = await kc.shell_channel.get_msg(timeout=1.0)
            except Empty:
                msg = None
            if msg is not None and msg["msg_type"] == "kernel_info_reply":
                try:  # its status messages arrive once IOPub is subscribed
                    await kc.iopub_channel.get_msg(timeout=0.05)
                except Empty:
                    pass
                else:
                    break
            elif not await self.km.is_alive():
                raise KernelFailed(f"kernel {self.name} died while starting")
            if time.monotonic() > deadline:
                raise KernelFailed(f"kernel {self.name} did not answer within {timeout:g} s")
        with contextlib.suppress(Empty):  # what is left of the replies' status messages
            while True:
                await kc.iopub_channel.get_msg(timeout=0)

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

    async def user_code(self, timeout: float = 30.0) -> dict[str, str] | None:
        """The manifest of the user code this kernel has loaded
        (:func:`kale.tasks.usercode.loaded`: file -> content hash); None for a kernel
        that is not Python. A Python kernel that cannot tell (Kale not importable in its
        environment, no answer) gives :data:`UNKNOWN_CODE`, which is never current: what
        it made is not reused, as its code cannot be checked."""
        if self.language_info.get("name", "python") != "python":
            return None
        manifest = await self._user_code(timeout)
        return UNKNOWN_CODE if manifest is None else manifest

    async def _user_code(self, timeout: float) -> dict[str, str] | None:
        try:
            reply = await self.client.execute(
                "", silent=True, store_history=False, allow_stdin=False,
                user_expressions={"manifest": _MANIFEST}, reply=True, timeout=timeout)
            got = reply["content"].get("user_expressions", {}).get("manifest", {})
            if got.get("status") != "ok":
                return None
            import ast

            manifest = ast.literal_eval(ast.literal_eval(got["data"]["text/plain"]))
        except Exception as e:  # a kernel that does not answer has no manifest to give
            log.debug("no user-code manifest from %r: %s", self, e)
            return None
        if not isinstance(manifest, dict):
            return None
        return {str(p): str(h) for p, h in manifest.items()}

    def kill_now(self) -> None:
        """SIGKILL the kernel's process group at once (no await: safe while cancelling)."""
        self.dead = True
        prov = self.km.provisioner
        proc = getattr(prov, "process", None)
        if isinstance(proc, _Forked):
            proc.kill()
            return
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
    """Kernels by kernelspec name, started ahead of demand.

    :meth:`acquire` hands out a fresh kernel (one no task used) and tops the pool up to
    ``ahead`` fresh kernels of that name (``start()`` does it for the default kernel before
    the first task); :meth:`release` discards it. A task that opted into reuse gets a reset
    kernel another such task used, when one is idle (or being reset) and none of the user
    modules it loaded changed on disk; otherwise a fresh one. At most ``size`` used kernels
    are kept, each for at most ``max_uses`` tasks.
    """

    def __init__(self, size: int = 1, *, default: str = DEFAULT_KERNEL,
                 ahead: int | None = None, max_uses: int = 20, startup_timeout: float = 60.0,
                 reset_timeout: float = 30.0, fork: bool = True) -> None:
        self.size = max(0, size)
        self.default = default
        #: fresh kernels kept ready beyond those in use; starting one takes 0.2-0.5 s, so a
        #: slot that finishes tasks faster than that needs more than one ready
        self.ahead = max(0, ahead if ahead is not None else self.size + min(self.size, 4))
        self.max_uses = max(1, max_uses)
        self.startup_timeout = startup_timeout
        self.reset_timeout = reset_timeout
        self.fork = fork and os.environ.get("KALE_KERNEL_FORK", "1").strip() != "0"
        self._all: set[Kernel] = set()
        self._fresh: dict[str, list[Kernel]] = {}      # started, never used
        self._used: dict[str, list[Kernel]] = {}       # reset, for tasks that reuse
        self._starting: dict[str, int] = {}
        self._resetting: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[Kernel]]] = {}  # for fresh ones
        self._reusers: dict[str, deque[asyncio.Future[Kernel | None]]] = {}
        self._wanted: set[str] = set()                 # names kept warm
        self._factories: dict[str, asyncio.Future[KernelFactory | None]] = {}
        self._background: set[asyncio.Task[Any]] = set()  # starts and resets
        self._stopping: set[asyncio.Task[None]] = set()    # shutdowns (never cancelled)
        self._closed = False
        self._neutral: Path | None = None  # see _home

    @property
    def _home(self) -> Path:
        """A neutral directory for kernels between tasks: never the caller's cwd (which
        may disappear), nor a shared one such as /tmp, where another user could put a
        module a starting kernel would import (a kernel's Python puts its working
        directory first on sys.path): a private one of this pool's (mode 700)."""
        if self._neutral is None:
            self._neutral = Path(tempfile.mkdtemp(prefix="kale-kernels-"))
        return self._neutral

    # -- kernel names --------------------------------------------------------------------
    def available(self, refresh: bool = False) -> list[str]:
        """Names of the installed kernelspecs."""
        return installed_kernels(refresh)

    def check(self, name: str, source: str = "") -> None:
        """Raise :class:`UnknownKernel` unless a kernelspec named ``name`` is installed."""
        check_kernel(name, source)

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start ``ahead`` kernels of the default kernel, and wait until they are ready."""
        self.check(self.default)
        self._wanted.add(self.default)
        missing = self.ahead - self._supply(self.default)
        if missing <= 0:
            return
        await self._factory(self.default)
        results = await asyncio.gather(*(self._launch(self.default) for _ in range(missing)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def close(self) -> None:
        """Shut every kernel down, idle or busy, and wait until they are gone."""
        self._closed = True
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        futures: list[asyncio.Future[Any]] = [
            *(f for w in self._waiting.values() for f in w),
            *(f for w in self._reusers.values() for f in w)]
        for fut in futures:
            if not fut.done():
                fut.set_exception(KernelFailed("the kernel pool is closed"))
        kernels = list(self._all)
        self._all.clear()
        self._fresh.clear()
        self._used.clear()
        await asyncio.gather(*(k.shutdown() for k in kernels), *self._stopping,
                             return_exceptions=True)
        factories = [f.result() for f in self._factories.values()
                     if f.done() and not f.cancelled() and f.exception() is None]
        for f in self._factories.values():
            f.cancel()
        await asyncio.gather(*(f.close() for f in factories if f is not None),
                             return_exceptions=True)
        if self._neutral is not None:
            import shutil

            shutil.rmtree(self._neutral, ignore_errors=True)
            self._neutral = None

    @property
    def kernels(self) -> list[Kernel]:
        """Every kernel the pool holds (idle, busy or being reset)."""
        return list(self._all)

    def idle(self, name: str | None = None) -> tuple[int, int]:
        """``(fresh, used)``: idle kernels of ``name`` (default: the default kernel)."""
        name = name or self.default
        return len(self._fresh.get(name, ())), len(self._used.get(name, ()))

    def _supply(self, name: str) -> int:
        """Fresh kernels of ``name`` ready or coming, beyond those already promised."""
        return (len(self._fresh.get(name, ())) + self._starting.get(name, 0)
                - len(self._waiting.get(name, ())))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieved)  # its failure was told where it matters

    def _top_up(self, name: str) -> None:
        """Start fresh kernels of ``name`` in the background until ``ahead`` are ready or
        coming, beyond the tasks waiting for one."""
        if self._closed:
            return
        for _ in range(self.ahead - self._supply(name)):
            self._spawn(self._launch(name, quiet=True))

    async def _factory(self, name: str) -> KernelFactory | None:
        """The running factory for kernel ``name``, started on first use; None when the
        kernelspec is not a plain ipykernel, forking is off, or the factory failed."""
        if not self.fork:
            return None
        fut = self._factories.get(name)
        if fut is not None and fut.done() and not fut.cancelled() \
                and fut.exception() is None:
            factory = fut.result()
            if factory is None or factory.alive:
                return factory
            log.warning("the kernel factory for %s exited; starting another", name)
            fut = None
        if fut is None:
            fut = self._factories[name] = asyncio.ensure_future(self._new_factory(name))
        try:
            return await asyncio.shield(fut)
        except Exception:
            return None

    async def _new_factory(self, name: str) -> KernelFactory | None:
        factory = KernelFactory.for_kernel(name, self._home)
        if factory is None:
            return None
        try:
            await factory.start(self.startup_timeout)
        except Exception as e:
            log.warning("no kernel factory for %s (kernels start without one): %s", name, e)
            return None
        return factory

    async def _launch(self, name: str, quiet: bool = False) -> Kernel:
        """Start a kernel of ``name`` for the pool: to the longest waiting task, else idle."""
        self._starting[name] = self._starting.get(name, 0) + 1
        try:
            kernel = await self._start(name, await self._factory(name))
        except BaseException as e:
            self._starting[name] -= 1
            if isinstance(e, Exception):
                waiter = self._first(self._waiting.get(name))
                if waiter is not None:  # the task that waits longest hears why
                    waiter.set_exception(e)
                elif quiet:
                    log.warning("starting a %s kernel failed: %s", name, e)
            raise
        self._starting[name] -= 1
        self._deliver(kernel)
        return kernel

    @staticmethod
    def _first(waiters: deque[Any] | None) -> Any:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                return fut
        return None

    async def _start(self, name: str, factory: KernelFactory | None) -> Kernel:
        """Start a kernel; again (twice at most) when it died while starting: a kernel
        jupyter_client launches binds ports picked before, which another process may have
        taken in between."""
        for attempt in range(3):
            try:
                return await self._start_once(name, factory)
            except KernelFailed as e:
                if "died while starting" not in str(e) or attempt == 2:
                    raise
                log.debug("%s; starting another", e)
        raise AssertionError("unreachable")

    async def _start_once(self, name: str, factory: KernelFactory | None) -> Kernel:
        if self._closed:
            raise KernelFailed("the kernel pool is closed")
        k = Kernel(name, factory)
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

    def _deliver(self, kernel: Kernel) -> None:
        if self._closed:
            self._stop(kernel)
            return
        waiter = self._first(self._waiting.get(kernel.name))
        if waiter is not None:
            waiter.set_result(kernel)
        else:
            self._fresh.setdefault(kernel.name, []).append(kernel)

    def _stop(self, kernel: Kernel) -> asyncio.Task[None]:
        """Shut ``kernel`` down in a task that close() waits for."""
        self._all.discard(kernel)
        log.debug("stopping %r", kernel)
        task = asyncio.ensure_future(kernel.shutdown())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    # -- acquire / release ---------------------------------------------------------------
    async def acquire(self, name: str | None = None, reuse: bool = False) -> Kernel:
        """A ready kernel of kernelspec ``name`` (default: the pool's default kernel):
        fresh, or with ``reuse`` one that served earlier tasks which also reused, if any
        may serve again."""
        name = name or self.default
        if self._closed:
            raise KernelFailed("the kernel pool is closed")
        self.check(name)
        self._wanted.add(name)
        kernel = await self._take_used(name) if reuse else None
        if kernel is None:
            kernel = await self._take_fresh(name)
        kernel.uses += 1
        return kernel

    async def _take_fresh(self, name: str) -> Kernel:
        idle = self._fresh.get(name)
        while idle:
            kernel = idle.pop(0)  # the oldest: kernels wait in the order they started
            if await kernel.km.is_alive():
                self._top_up(name)
                return kernel
            self._stop(kernel)  # died while idle (OOM killer...)
        fut: asyncio.Future[Kernel] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(name, deque())
        waiters.append(fut)
        self._top_up(name)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._deliver(fut.result())  # someone else's now
            raise
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(fut)

    async def _take_used(self, name: str) -> Kernel | None:
        """An idle used kernel that may serve again (alive, its user code unchanged), or
        one being reset; None if there is none."""
        while True:
            kernel: Kernel | None = None
            idle = self._used.get(name)
            if idle:
                kernel = idle.pop()  # the most recently used: its caches are warm
            elif self._resetting.get(name, 0) > len(self._reusers.get(name, ())):
                fut: asyncio.Future[Kernel | None] = \
                    asyncio.get_running_loop().create_future()
                waiters = self._reusers.setdefault(name, deque())
                waiters.append(fut)
                try:
                    kernel = await fut
                except asyncio.CancelledError:
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        got = fut.result()
                        if got is not None:
                            self._used_again(got)
                    raise
                finally:
                    with contextlib.suppress(ValueError):
                        waiters.remove(fut)
                if kernel is None:  # its reset failed
                    continue
            else:
                return None
            if not await kernel.km.is_alive():
                self._stop(kernel)
                continue
            changed = usercode.stale(kernel.manifest or {})
            if changed:
                log.info("not reusing %r: user code changed on disk: %s", kernel,
                         ", ".join(changed))
                self._stop(kernel)
                continue
            return kernel

    def release(self, kernel: Kernel, reusable: bool, reuse: bool = False) -> None:
        """Take ``kernel`` back after a task. It is discarded, unless the task opted into
        ``reuse`` and it is ``reusable`` (the task succeeded, its user code is known):
        then it is reset in the background for the next task that reuses."""
        if kernel not in self._all:
            return
        name = kernel.name
        keep = (reuse and reusable and not self._closed and not kernel.dead
                and kernel.manifest is not None and kernel.uses < self.max_uses
                and len(self._used.get(name, ())) + self._resetting.get(name, 0) < self.size)
        if not keep:
            self._stop(kernel)
            return
        self._resetting[name] = self._resetting.get(name, 0) + 1
        self._spawn(self._recycle(kernel))

    async def discard(self, kernel: Kernel) -> None:
        """Kill ``kernel`` now and wait until it is gone."""
        kernel.kill_now()
        if kernel not in self._all:
            return
        await asyncio.shield(self._stop(kernel))

    async def _recycle(self, kernel: Kernel) -> None:
        """Reset a used kernel for the next task that reuses (the caller counted it)."""
        name = kernel.name
        try:
            await kernel.reset(self.reset_timeout)
        except BaseException as e:
            self._resetting[name] -= 1
            if isinstance(e, Exception):
                log.warning("resetting %r failed (%s); discarding it", kernel, e)
            self._stop(kernel)
            waiter = self._first(self._reusers.get(name))
            if waiter is not None:
                waiter.set_result(None)
            if not isinstance(e, Exception):
                raise
            return
        self._resetting[name] -= 1
        self._used_again(kernel)

    def _used_again(self, kernel: Kernel) -> None:
        if self._closed:
            self._stop(kernel)
            return
        waiter = self._first(self._reusers.get(kernel.name))
        if waiter is not None:
            waiter.set_result(kernel)
        else:
            self._used.setdefault(kernel.name, []).append(kernel)
