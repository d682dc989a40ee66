"""A Python task worker process: receives jobs over a socket, runs one at a time.

Started by :class:`kale.tasks.python.PythonRunner` as ``python -m kale.tasks._pyworker FD
CONTROL_FD``. A job is its number (8 bytes), its workflow folder, NUL and the pickled job
(the folder goes on ``sys.path`` before the job is unpickled: upstream results may be of
classes in modules there); each answer starts with the number of its job.

Jobs may arrive while one runs (the runner queues the next one ahead, so the process
starts it without waiting for the runner to hear of the last): they wait in the socket,
in order. Until this process takes one off the socket, the runner may take it back
(``revoke``, sent on the control socket and served by a thread of its own, answered on
the job socket, in order with the answers: taken back, it will not run here; or not, it
has started). A job is started, or taken back, never both (:class:`_Link`).

The process asks the scheduler to treat it as batch work (``SCHED_BATCH``): the same
share of the CPU as before, but a worker woken by its next job does not preempt the
process that sent it (on a machine with few cores, the engine was paused on every hand
over). Its tasks and what they start inherit it.
For each job it enters the task's directory, points fds 1 and 2 at the task's logs,
sets the task's environment, calls the function and sends back its return value, with the
manifest of the user code it has loaded (:mod:`kale.tasks.usercode`) and whether the task
recorded anything (``kale.record``: its records file exists).

A task's log files are made only once it writes something (:class:`_Logs`): fds 1 and 2
are pipes whose bytes go to the files, created on the first byte. Most tasks write nothing,
and on a disk where creating a file costs a few hundred microseconds of system time (a
cluster's shared filesystem, more) two files per task were most of a short task's cost.

A warm process must never run a task with code older than what is on disk: before each job
it checks the user modules it has loaded, and if any file changed it answers ``stale``
without running anything, to that job and every later one; the runner starts a fresh
process for them and stops this one.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import pickle
import select
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from kale.serial import dumps
from kale.tasks import usercode, wire
from kale.tasks.record import ENV as RECORDS_ENV

_funcs: dict[Any, Any] = {}


def _load(func: Any) -> Any:
    key = func if isinstance(func, str) else hash(func)
    if key not in _funcs:
        if isinstance(func, str):
            module, _, qualname = func.partition(":")
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            _funcs[key] = obj
        else:
            from kale.tasks import pickled

            _funcs[key] = pickled.loads(func)
    return _funcs[key]


_signatures: dict[Any, tuple[inspect.Signature, tuple[str, ...], bool]] = {}


def _signature(func: Any) -> tuple[inspect.Signature, tuple[str, ...], bool]:
    """``func``'s signature, the names of its parameters that take a keyword, and whether
    it takes ``**kwargs``; worked out once per function (``inspect.signature`` was a
    third of a warm worker's time per no-op task)."""
    try:
        return _signatures[func]
    except (KeyError, TypeError):  # (TypeError: an unhashable callable)
        pass
    sig = inspect.signature(func)
    params = sig.parameters.values()
    found = (sig, tuple(p.name for p in params if p.kind not in (p.VAR_POSITIONAL,
                                                                  p.VAR_KEYWORD)),
             any(p.kind is p.VAR_KEYWORD for p in params))
    with contextlib.suppress(TypeError):
        _signatures[func] = found
    return found


def bind(func: Any, inputs: dict[str, Any], upstream: dict[str, Any],
         params: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``func``: its parameters by name from the task's parameters,
    then upstream results, then workflow parameters."""
    sig, names, var_kw = _signature(func)
    kwargs: dict[str, Any] = {}
    for name in names:
        for source in (inputs, upstream, params):
            if name in source:
                kwargs[name] = source[name]
                break
    extra = [k for k in inputs if k not in kwargs]
    if extra:
        if not var_kw:
            raise TypeError(f"task parameter {extra[0]!r} is not an argument of "
                            f"{getattr(func, '__name__', func)}{sig}")
        kwargs.update({k: inputs[k] for k in extra})
    return kwargs




def _enter(workdir: str, records: str | None) -> None:
    """Make the task's directory (the runner leaves it to this process) and go in."""
    try:
        os.mkdir(workdir)
    except OSError:  # an earlier attempt's (or the run's folder is gone): the full way
        from kale.tasks.groups import prepare_workdir

        prepare_workdir(workdir, records or os.path.join(workdir, ".kale-records.pkl"))
    os.chdir(workdir)


def _job(msg: bytes) -> dict[str, Any]:
    """A job as the runner sends it (without its number): its workflow folder, NUL, the
    pickled job. The folder goes on ``sys.path`` first, as the job's upstream results
    and inputs may be of classes in modules there that this process has not imported."""
    folder, _, blob = msg.partition(b"\0")
    base_dir = folder.decode()
    if base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    job: dict[str, Any] = pickle.loads(blob)
    return job


def run_job(job: dict[str, Any]) -> tuple[Any, ...]:
    """Run one job: ``("ok", pickled result, code manifest)`` or ``("err", ...)``."""
    sys.stdout.flush()
    sys.stderr.flush()
    logs = _logs()
    logs.open(job["stdout"], job["stderr"])
    try:
        _enter(job["workdir"], job["env"].get(RECORDS_ENV))
        _set_env(job["env"])
        if job["base_dir"] not in sys.path:
            sys.path.insert(0, job["base_dir"])
        func = _load(job["func"])
        kwargs = bind(func, job["inputs"], job["upstream"], job["params"])
        result = func(**kwargs)
        records = job["env"].get(RECORDS_ENV)
        # Whether it recorded anything: the runner's caller opens no records file if not.
        recorded = os.path.exists(records) if records else None
        return ("ok", dumps(result), usercode.loaded(), recorded)
    except BaseException as e:  # the task's error, reported, never fatal to the worker
        tb = e.__traceback__
        # Drop this module's frames: the user sees their own code.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(e), e, tb))
        sys.stderr.write(text)
        return ("err", type(e).__name__, str(e), text)
    finally:
        usercode.loaded()  # note the code this job imported, as it is now
        sys.stdout.flush()
        sys.stderr.flush()
        logs.close()
        _restore_env(job["env"])


class _Stream:
    """One of a job's two pipes (its read end) and the log file its bytes go to, made on
    the first byte. Read under :attr:`lock` only, by whoever holds it (the job's thread
    when the job ends, else the pump), so the file receives the bytes in their order."""

    __slots__ = ("closed", "fd", "lock", "out", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd, self.path, self.out = fd, path, -1
        self.lock = threading.Lock()
        self.closed = False

    def drain(self) -> bool:
        """Move what the pipe holds to the file; True once every writer closed it (the
        pipe is then closed too). Caller holds :attr:`lock`."""
        while not self.closed:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            if not data:
                os.close(self.fd)
                if self.out >= 0:
                    os.close(self.out)
                self.closed = True
                break
            if self.out < 0:
                self.out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(self.out, view):]
        return True


class _Logs:
    """Where fds 1 and 2 of a job go: a fresh pipe each, whose bytes reach the job's log
    files (made on the first byte, so a job that writes nothing makes no file).

    Promises: when :meth:`close` returns, every byte this process wrote during the job is
    in its file; output of a process the job started and left running (it holds the pipe)
    keeps going to the job's file, not the next job's; while a job runs, its output
    reaches the file within :attr:`PERIOD` (``kale logs -f`` follows it; a pipe that
    fills up holds its writer that long at most). A job pays two pipes, no thread wake-up:
    the pump thread looks for streams to follow every :attr:`PERIOD`.

    Threads: :meth:`open` and :meth:`close` from the job's thread; the pump its own."""

    PERIOD = 0.02

    def __init__(self) -> None:
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._job: tuple[_Stream, _Stream] | None = None
        self._spare: list[tuple[int, int]] = []  # the next job's pipes, made ahead
        threading.Thread(target=self._pump, name="kale-logs", daemon=True).start()

    def prepare(self) -> None:
        """Make the next job's two pipes now, while the worker waits for it (their
        system calls are then off the path from the job's arrival to its answer)."""
        while len(self._spare) < 2:
            r, w = os.pipe()  # both ends close on exec; fd 1 and 2 are inherited
            os.set_blocking(r, False)
            self._spare.append((r, w))

    def open(self, stdout: str, stderr: str) -> None:
        self.prepare()  # (made ahead, but for the first job)
        pair = []
        for fd, path in ((1, stdout), (2, stderr)):
            r, w = self._spare.pop(0)
            os.dup2(w, fd)
            os.close(w)
            pair.append(_Stream(r, path))
        out, err = pair
        with self._lock:
            self._streams[out.fd] = out
            self._streams[err.fd] = err
        self._job = (out, err)

    def close(self) -> None:
        os.dup2(_NULL, 1)
        os.dup2(_NULL, 2)
        assert self._job is not None
        for stream in self._job:
            with stream.lock:
                done = stream.drain()
            if done:
                with self._lock:
                    self._streams.pop(stream.fd, None)
        self._job = None

    def _pump(self) -> None:
        while True:
            with self._lock:
                streams = list(self._streams.values())
            if not streams:
                time.sleep(self.PERIOD)
                continue
            poller = select.poll()
            for s in streams:
                poller.register(s.fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(self.PERIOD * 1000)}
            for s in streams:
                if s.fd not in ready:
                    continue
                with s.lock:
                    done = s.drain()
                if done:
                    with self._lock:
                        if self._streams.get(s.fd) is s:
                            del self._streams[s.fd]


_LOGS: _Logs | None = None


def _logs() -> _Logs:
    global _LOGS
    if _LOGS is None:
        _LOGS = _Logs()
    return _LOGS


_encode = str.encode  # (as os.environ encodes: TypeError for what is not a str)
_FS = sys.getfilesystemencoding()


def _set_env(env: dict[str, str]) -> None:
    """Set the job's variables, as ``os.environ.update`` does (for this process and the
    ones it starts) but straight on its bytes: the mapping's machinery per variable was a
    fifth of a no-op task's time in a worker."""
    data = os.environ._data  # type: ignore[attr-defined]
    for k, v in env.items():
        key, value = _encode(k, _FS, "surrogateescape"), _encode(v, _FS, "surrogateescape")
        if data.get(key) != value:
            os.putenv(key, value)  # (raises for a name with "=", as os.environ does)
            data[key] = value


def _restore_env(names: Iterable[str]) -> None:
    """Put the environment back as the worker started: first the variables the job set
    (``names``), then, only if the task changed others itself, everything."""
    data = os.environ._data  # type: ignore[attr-defined]
    for k in names:
        try:
            key = _encode(k, _FS, "surrogateescape")
        except (TypeError, UnicodeError):  # (never set)
            continue
        was = _BASELINE.get(key)
        if data.get(key) == was:
            continue
        if was is None:
            os.unsetenv(key)
            del data[key]
        else:
            os.putenv(key, was)
            data[key] = was
    if data != _BASELINE:  # a dict compare, no copy
        for k in set(os.environ) - set(_BASELINE_STR):
            del os.environ[k]
        for k, v in _BASELINE_STR.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the process that started this worker dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Link:
    """The job socket's sending end, shared by the main thread (answers) and the control
    thread (answers to ``revoke``), and which jobs have started and which the runner took
    back. Job numbers grow and jobs start in order, so a job has started once the last
    one started has a number as high.

    Promises: a job is either started (:meth:`start` true) or revoked (:meth:`revoke`
    true), never both, whichever asks first; the runner reads "taken back" before any
    answer of a job that started after it (it is sent under the lock that decides), so
    its one stream says in order what became of every job.

    Threads: :meth:`start` and :meth:`send` from the main thread, :meth:`revoke` from the
    control thread."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._last = 0  # the number of the last job started
        self._revoked: set[int] = set()

    def start(self, seq: int) -> bool:
        """Whether job ``seq`` may run now (False: the runner took it back)."""
        with self._lock:
            if seq in self._revoked:
                self._revoked.discard(seq)
                return False
            self._last = seq
            return True

    def send(self, data: bytes) -> None:
        with self._lock:
            self._conn.send_bytes(data)

    def revoke(self, seq: int) -> None:
        """Take job ``seq`` back unless it has started (or ended), and say which: its
        number and ``1`` (taken back: it will not run here) or ``0``."""
        with self._lock:
            taken = seq > self._last
            if taken:
                self._revoked.add(seq)
            self._conn.send_bytes(seq.to_bytes(8, "big") + (b"\1" if taken else b"\0"))


def _control(conn: Connection, link: _Link) -> None:
    """The control thread: serves the runner's ``revoke`` requests (8 bytes: the job's
    number), answered on the job socket."""
    while True:
        try:
            seq = int.from_bytes(conn.recv_bytes(), "big")
            link.revoke(seq)
        except (EOFError, OSError):
            return


def _messages(reader: wire.Reader) -> Iterator[bytes]:
    """The jobs (and anything else) the runner sends, in order, until it closes the link:
    one read takes what the socket holds, often a job and the one queued behind it."""
    while True:
        try:
            messages = reader.read()
        except (EOFError, OSError):
            return
        yield from messages


def _batch() -> None:
    """Linux: run as batch work (see the module's text); elsewhere nothing."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


_BASELINE: dict[bytes, bytes] = {}
_BASELINE_STR: dict[str, str] = {}
_NULL = -1


def main() -> None:
    global _BASELINE, _BASELINE_STR, _NULL
    _die_with_parent()
    _batch()
    usercode.guard_bytecode()
    # Started with -P (its working directory may be a shared one, such as /tmp, where
    # another user could leave a module named like one this process imports): the
    # directory comes back last, after the standard library and installed packages.
    with contextlib.suppress(OSError):  # (a directory since removed: none)
        sys.path.append(os.getcwd())
    _BASELINE = dict(os.environ._data)  # type: ignore[attr-defined]
    _BASELINE_STR = dict(os.environ)
    _NULL = os.open(os.devnull, os.O_WRONLY)
    conn = Connection(int(sys.argv[1]))
    link = _Link(conn)
    threading.Thread(target=_control, args=(Connection(int(sys.argv[2])), link),
                     name="kale-control", daemon=True).start()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    changed: list[str] = []
    for msg in _messages(wire.Reader(conn.fileno())):
        number, body = msg[:8], msg[8:]
        if not link.start(int.from_bytes(number, "big")):
            continue  # taken back: it runs elsewhere (the runner was told so)
        changed = changed or usercode.stale(usercode.loaded())
        if changed:
            # Code this process loaded was edited: it runs nothing more (a fresh process
            # runs the job), and says so to every job still sent to it until the runner
            # closes its socket.
            link.send(number + pickle.dumps(("stale", changed)))
            continue
        try:
            reply = run_job(_job(body))
            link.send(number + pickle.dumps(reply))
        except Exception as e:  # an unpicklable result, say
            link.send(number + pickle.dumps(("err", type(e).__name__, str(e),
                                             traceback.format_exc())))
        _logs().prepare()  # while the runner takes the answer and picks the next job


if __name__ == "__main__":
    main()
