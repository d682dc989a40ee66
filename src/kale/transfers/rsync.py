"""Kale's built-in transfer: ``rsync`` over the user's own ``ssh``.

rsync writes each file under a temporary dot-name beside its target and renames it into
place once whole, so a final name never holds a partial file; ``--partial-dir`` keeps
what an interrupted copy had received (in ``.rsync-partial/`` of the file's directory,
never under a final name) so that the retry sends only the rest; its quick check (size
and modification time, kept with ``-t``) sends only changed files. Between two remote
hosts the copy relays through this machine (:mod:`kale.transfers.relay`).

Invariants: commands are argv lists (never a local shell); the ssh command rsync runs
(``-e``) is one :func:`shlex.join` string of the endpoint's ssh options followed by
Kale's defaults (``BatchMode``, a connect timeout, keep-alives: ssh keeps the first value
given, so the endpoint's own win); rsync's output is read in the C locale; every failure
is a :class:`TransferError` naming the end at fault and whether a retry may help.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from kale.transfers.base import (
    Endpoint,
    Transfer,
    TransferError,
    TransferReport,
    check_paths,
)
from kale.transfers.relay import relay

#: seconds ssh may take to connect; seconds without any data before rsync gives up
CONNECT_TIMEOUT = 15
IO_TIMEOUT = 300
#: where an interrupted copy's partial files wait for the retry (relative: per directory)
PARTIAL_DIR = ".rsync-partial"

#: rsync exit codes a retry may cure: socket or protocol stream broken (a dropped
#: connection), killed by a signal, files vanished while being sent, I/O timeouts, ssh's
#: own failure
_TRANSIENT = {10, 12, 20, 24, 30, 35, 255}
#: what ssh says when the user must act (a retry cannot help)
_NEEDS_USER = ("host key verification failed", "remote host identification has changed",
               "permission denied (", "could not resolve hostname",
               "bad configuration option", "no such identity")
_STATS = {
    "files": re.compile(r"^Number of (?:regular )?files transferred: ([\d,]+)", re.M),
    "bytes": re.compile(r"^Total transferred file size: ([\d,]+)", re.M),
}
_MISSING = re.compile(r'(?:change_dir|link_stat) "(.*?)" failed: No such file or directory')


@dataclass(frozen=True, slots=True)
class Sent:
    """What one rsync run sent."""

    files: int
    bytes: int


class RsyncTransfer(Transfer):
    """rsync over ssh. ``rsync`` is the command here, ``remote_rsync`` the one run at the
    remote end (through its login shell); ``options`` are added to every rsync command
    (``("--bwlimit=1m",)``)."""

    name = "rsync"

    def __init__(self, rsync: str = "rsync", remote_rsync: str = "rsync",
                 options: Sequence[str] = (), connect_timeout: int = CONNECT_TIMEOUT,
                 io_timeout: int = IO_TIMEOUT) -> None:
        self.rsync, self.remote_rsync = rsync, remote_rsync
        self.options = tuple(options)
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()  # the rsync commands running
        self._epoch = 0  # how many times cancel() was called
        self._local = threading.local()  # the epoch the calling thread's copy began in

    def cancel(self) -> None:
        """Stop the copies in progress: their rsync commands get SIGTERM (rsync removes
        its temporary files, or keeps them for a retry in the partial directory), and a
        relay starts no further leg."""
        with self._lock:
            self._epoch += 1
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)

    def _check(self) -> None:
        """Raise if the calling thread's copy was cancelled."""
        if getattr(self._local, "epoch", self._epoch) != self._epoch:
            raise TransferError("the copy was cancelled", cancelled=True)

    def copy(self, src: Endpoint, dst: Endpoint, paths: Sequence[str] | None = None,
             log: TextIO | None = None) -> TransferReport:
        selected = check_paths(paths)
        start = time.monotonic()
        self._local.epoch = self._epoch
        if src.remote and dst.remote:
            sent = relay(self, src, dst, selected, log)
            method = f"{self.name} (relayed)"
        else:
            sent = self.run(src, dst, selected, log)
            method = self.name
        return TransferReport(sent.files, sent.bytes, time.monotonic() - start, method)

    # -- one rsync command (at most one end remote) ------------------------------------
    def run(self, src: Endpoint, dst: Endpoint, paths: list[str] | None,
            log: TextIO | None, extra: Sequence[str] = ()) -> Sent:
        """Copy with one rsync command; ``extra`` options go before the others."""
        if not dst.remote:
            try:
                os.makedirs(dst.path, exist_ok=True)
            except OSError as e:
                raise TransferError(f"cannot make the destination {dst}: "
                                    f"{e.strerror or e}", endpoint=dst) from None
        self._check()
        argv = self.argv(src, dst, paths is not None, extra)
        stdin = "".join(p + "\0" for p in paths) if paths is not None else None
        code, out, err = self.execute(argv, stdin, log)
        if code:
            raise self.failure(code, err, src, dst)
        return parse_stats(out)

    def argv(self, src: Endpoint, dst: Endpoint, listed: bool,
             extra: Sequence[str] = ()) -> list[str]:
        argv = [self.rsync, "-rlpt", *extra, f"--partial-dir={PARTIAL_DIR}", "--stats",
                "--no-human-readable", "--itemize-changes",
                f"--timeout={self.io_timeout}", *self.options]
        remote = src if src.remote else dst if dst.remote else None
        if remote is not None:
            argv += ["-e", self.rsh(remote)]
        if dst.remote:  # the destination directory is made by the remote login shell
            argv.append(f"--rsync-path=mkdir -p {remote_quote(dst.path)} && "
                        f"{self.remote_rsync}")
        elif src.remote:
            argv.append(f"--rsync-path={self.remote_rsync}")
        if listed:
            argv += ["--from0", "--files-from=-"]
        return [*argv, "--", spec(src), spec(dst)]

    def rsh(self, remote: Endpoint) -> str:
        """The ssh command for rsync's ``-e``: one string, quoted."""
        return shlex.join(["ssh", *remote.ssh_args, "-o", "BatchMode=yes",
                           "-o", f"ConnectTimeout={self.connect_timeout}",
                           "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"])

    def execute(self, argv: list[str], stdin: str | None,
                log: TextIO | None) -> tuple[int, str, str]:
        """Run ``argv``; its exit code (negative: the signal that killed it), stdout and
        stderr, both also written to ``log`` line by line as they come."""
        lock = threading.Lock()

        def say(line: str) -> None:
            if log is not None:
                with lock:
                    log.write(line)
                    log.flush()

        say(f"$ {shlex.join(argv)}\n")
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        try:  # its own process group: what it started ends with it (see below)
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env,
                                    errors="replace", start_new_session=True)
        except FileNotFoundError:
            raise TransferError(f"rsync is not installed on this machine ({self.rsync!r} "
                                "is not on PATH): install rsync", transient=False) from None
        out: list[str] = []
        errors: list[str] = []

        def drain(stream: TextIO, into: list[str]) -> None:
            for line in stream:
                into.append(line)
                say(line)

        with self._lock:
            self._procs.add(proc)
        if getattr(self._local, "epoch", self._epoch) != self._epoch:  # cancelled just now
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [threading.Thread(target=drain, args=(stream, into), daemon=True,
                                    name="rsync-output")
                   for stream, into in ((proc.stdout, out), (proc.stderr, errors))]
        for reader in readers:
            reader.start()
        with proc:
            if stdin is not None:
                assert proc.stdin is not None
                try:
                    proc.stdin.write(stdin)
                    proc.stdin.close()
                except BrokenPipeError:  # rsync ended early: its exit code says why
                    pass
            code = _wait_and_end_group(proc, readers)
            with self._lock:
                self._procs.discard(proc)
        return code, "".join(out), "".join(errors)

    def failure(self, code: int, stderr: str, src: Endpoint,
                dst: Endpoint) -> TransferError:
        """What a failed rsync means."""
        self._check()
        remote = src if src.remote else dst if dst.remote else None
        text = "; ".join(line.strip() for line in stderr.splitlines() if line.strip())
        said = text[-600:] or "no message"
        if code < 0:
            return TransferError(f"rsync {src} -> {dst} was killed by signal {-code}",
                                 endpoint=None, transient=True, stderr=stderr)
        if remote is not None and _remote_rsync_missing(stderr, self.remote_rsync):
            return TransferError(f"rsync is not installed on {remote.host} "
                                 f"({self.remote_rsync!r} not found there): install it "
                                 f"there (ssh said: {said})", endpoint=remote,
                                 stderr=stderr)
        missing = _MISSING.findall(stderr)
        if missing and "[sender]" in stderr:
            return TransferError(f"no such file or directory at the source {src}: "
                                 f"{', '.join(missing)}", endpoint=src, stderr=stderr)
        if remote is not None and ("ssh:" in stderr or code == 255):
            lowered = text.lower()
            needs_user = any(n in lowered for n in _NEEDS_USER)
            return TransferError(f"ssh {remote.host} failed (rsync exit "
                                 f"{code}): {said}", endpoint=remote,
                                 transient=not needs_user, stderr=stderr)
        at = dst if any(w in stderr for w in ("[receiver]", "[Receiver]", "[generator]")) \
            else src
        return TransferError(f"rsync {src} -> {dst} failed (exit {code}): {said}",
                             endpoint=at, transient=code in _TRANSIENT, stderr=stderr)


def _wait_and_end_group(proc: subprocess.Popen[str], readers: list[threading.Thread],
                        grace: float = 30.0) -> int:
    """Wait for ``proc`` to end; if a signal killed it, end what is left of its process
    group: rsync killed outright leaves its forked half and its ssh running, which
    would go on writing and hold its output open. They get SIGTERM (rsync then removes its
    temporary file, or keeps it in the partial directory for the retry), and SIGKILL
    after ``grace`` seconds; they are gone when the ``readers`` of the output they held
    are done. ``proc`` is reaped last, so that the group's id cannot have been reused.
    Its exit code (negative: the signal that killed it)."""
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    killed = info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
    # rsync that exits (even on failure) has waited for its own children; the group may
    # hold an ssh master the endpoint's options started (ControlPersist): left alone
    for sig in (signal.SIGTERM, signal.SIGKILL) if killed else ():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for reader in readers:
            reader.join(grace if sig == signal.SIGTERM else None)
        if not any(reader.is_alive() for reader in readers):
            break
    for reader in readers:
        reader.join()
    return proc.wait()


def _remote_rsync_missing(stderr: str, command: str) -> bool:
    """The remote shell could not find ``command`` (rsync then saw no answer at all)."""
    if "0 bytes received so far" not in stderr:
        return False
    name = re.escape(command)
    return re.search(rf"{name}: (?:command )?not found|{name}: No such file or directory",
                     stderr) is not None


def parse_stats(text: str) -> Sent:
    """The files and bytes an rsync ``--stats`` output says were transferred."""
    found = {}
    for key, pattern in _STATS.items():
        m = pattern.search(text)
        found[key] = int(m.group(1).replace(",", "")) if m else 0
    return Sent(found["files"], found["bytes"])


def spec(end: Endpoint) -> str:
    """``end`` as an rsync argument naming its directory's contents (a trailing
    ``/``); a local relative path starts with ``./`` (so a ``:`` in it never reads as a
    host)."""
    path = end.path.rstrip("/") + "/" if end.path.strip("/") else "/"
    if end.host is not None:
        return f"{end.host}:{path}"
    return path if path.startswith("/") else "./" + path


def remote_quote(path: str) -> str:
    """``path`` quoted for the remote shell, a leading ``~/`` left for it to expand."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:]) if len(path) > 2 else "~"
    return shlex.quote(path)
