"""One multiplexed SSH connection to a site, through the user's own ``ssh`` (their keys,
agent, ``~/.ssh/config``, jump hosts, known hosts).

:class:`SshLink` keeps one master connection per site (``ControlMaster``, its socket in
a private runtime directory), runs commands over it (argv lists, quoted for the remote
shell with :func:`shlex.join`; never a local shell), forwards a local Unix socket to a
remote one, and gives rsync the same ``ssh`` command. ``BatchMode`` is always on: ssh
never prompts, so nothing hangs waiting for a password; what ssh says when it fails is
turned into a :class:`~kale.errors.SiteError` (a dropped or refused connection, which
may pass) or a :class:`~kale.errors.SiteConfigError` (an unknown or changed host key, no
accepted key, an unknown host: the user must act; exit code 2).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import tempfile
from pathlib import Path

from kale.errors import SiteConfigError, SiteError
from kale.sites.registry import SiteConfig

#: seconds ssh may take to connect (then it gives up: a site that does not answer is an
#: error, never a hang)
CONNECT_TIMEOUT = 15
#: seconds an idle master connection stays (the next command within them is quick)
PERSIST = 600

#: what ssh prints when the user must act, and what to tell them
_NEEDS_USER = (
    ("host key verification failed", "its host key is unknown or has changed: check it, "
     "then log in once with `ssh {dest}` to record it in ~/.ssh/known_hosts"),
    ("remote host identification has changed", "its host key has CHANGED (a different "
     "machine, or an attack): check it with the site's administrators"),
    ("no ed25519 host key is known", "its host key is unknown: log in once with "
     "`ssh {dest}` to record it"),
    ("permission denied", "it refused the login: no key it accepts (add yours to the "
     "agent with ssh-add, or set IdentityFile in ~/.ssh/config)"),
    ("could not resolve hostname", "the host name is unknown (a typo, or an alias missing "
     "from ~/.ssh/config)"),
    ("bad configuration option", "ssh does not accept one of the site's options"),
)


def runtime_dir() -> Path:
    """A directory only this user can use, for the master's socket and forwarded
    sockets: ``$XDG_RUNTIME_DIR/kale``, else ``/tmp/kale-UID``. A directory of that name
    that is not ours, or that others can enter, is refused (another user of the login
    node could otherwise intercept the connection)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "kale" if base and os.path.isdir(base) else \
        Path(tempfile.gettempdir()) / f"kale-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise SiteError("*", f"cannot make {path}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SiteError("*", f"{path} is not a private directory of yours (owner uid "
                        f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); remove it")
    return path


class SshLink:
    """The SSH connection to one site. Invariants: at most one master per site and
    user (its socket's name is a digest of the destination, port and options); every
    command runs with ``BatchMode=yes`` and a connect timeout; a command runs over the
    master when it is up, and directly otherwise (never starting a master of its own:
    only :meth:`connect` does). Safe to use from several threads (each call is its own
    ``ssh`` process)."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        key = "\0".join([config.destination, str(config.port), *config.options])
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        self.control = runtime_dir() / f"{digest}.ssh"

    # -- argv --------------------------------------------------------------------------
    def ssh_args(self, master: bool = False) -> list[str]:
        """ssh's options for this site (what goes between ``ssh`` and the destination):
        a client of the master, or (``master``) the master itself. (ssh keeps the first
        value it is given for an option: the site's own options come last.)"""
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", f"ControlPath={self.control}"]
        # The master binds the forwarded sockets: its own options say how (0600, and a
        # stale socket file of a master that died is replaced).
        args += ["-o", "ControlMaster=yes", "-o", f"ControlPersist={PERSIST}",
                 "-o", "StreamLocalBindUnlink=yes", "-o", "StreamLocalBindMask=0177"] \
            if master else ["-o", "ControlMaster=no"]
        if self.config.port:
            args += ["-p", str(self.config.port)]
        for option in self.config.options:
            args += ["-o", option]
        return args

    def rsh(self) -> str:
        """The ``ssh`` command for rsync's ``-e`` (one string, quoted for rsync)."""
        return shlex.join(["ssh", *self.ssh_args()])

    # -- the master --------------------------------------------------------------------
    def _check(self) -> subprocess.CompletedProcess[str]:
        """``ssh -O check``: exit 0 and ``Master running (pid=N)`` when the master is up."""
        return subprocess.run(["ssh", *self.ssh_args(), "-O", "check",
                               self.config.destination], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)

    def alive(self) -> bool:
        """Whether the master connection is up."""
        return self._check().returncode == 0

    def master_pid(self) -> int | None:
        done = self._check()
        text = done.stderr + done.stdout
        if done.returncode or "pid=" not in text:
            return None
        return int(text.split("pid=", 1)[1].split(")", 1)[0])

    def connect(self) -> None:
        """Bring the master connection up (a no-op when it is). Processes that connect
        to the same site at once take turns (a lock beside the master's socket), so the
        one that finds no master never removes the socket another just made."""
        import fcntl

        if self.alive():
            return
        fd = os.open(self.control.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not self.alive():
                self._start_master()
        finally:
            os.close(fd)

    def _start_master(self) -> None:
        # A master that died leaves its socket, and those of its forwards
        for stale in self.control.parent.glob(f"{self.control.stem}*"):
            if stale.suffix != ".lock":
                stale.unlink(missing_ok=True)
        argv = ["ssh", *self.ssh_args(master=True), self.config.destination, "true"]
        # The master goes on in the background with ssh's stderr: a file, not a pipe
        # that would stay open (and a reader blocked) as long as the master lives.
        with tempfile.TemporaryFile() as err:
            try:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err,
                                      timeout=CONNECT_TIMEOUT * 4)
            except subprocess.TimeoutExpired:
                raise SiteError(self.config.name, f"ssh {self.config.destination} did not "
                                f"connect within {CONNECT_TIMEOUT * 4} s",
                                transient=True) from None
            err.seek(0)
            text = err.read().decode(errors="replace")
        if done.returncode:
            raise self.failure(text, done.returncode)

    def close(self) -> None:
        """Close the master connection (and every forward through it)."""
        subprocess.run(["ssh", *self.ssh_args(), "-O", "exit", self.config.destination],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    # -- commands and forwards ---------------------------------------------------------
    def run(self, argv: list[str], *, input: str | None = None, timeout: float = 120.0,
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` at the site; its exit code and output (an ssh failure, exit 255,
        raises). ``input`` is its stdin."""
        command = ["ssh", *self.ssh_args(), "--", self.config.destination, remote_join(argv)]
        try:
            done = subprocess.run(command, input=input, capture_output=True, text=True,
                                  timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SiteError(self.config.name, f"`{shlex.join(argv)}` did not end within "
                            f"{timeout:g} s", transient=True) from None
        if done.returncode == 255 and _from_ssh(done.stderr):
            raise self.failure(done.stderr, 255)
        return done

    def forward(self, local: Path, remote: str) -> None:
        """Forward the local Unix socket ``local`` (named after the master's socket) to
        the socket ``remote`` at the site, through the master (brought up if need be).
        The master creates it 0600 in our private directory; asking again for a forward
        the master has is a no-op."""
        self.connect()
        argv = ["ssh", *self.ssh_args(), "-O", "forward",
                "-L", f"{local}:{remote}", self.config.destination]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        if done.returncode:
            raise SiteError(self.config.name, f"cannot forward {local} to {remote}: "
                            f"{done.stderr.strip()}", transient=True)

    def failure(self, stderr: str, code: int) -> SiteError:
        """What an ssh failure means, for the user."""
        text = " ".join(stderr.split())
        lowered = text.lower()
        for needle, advice in _NEEDS_USER:
            if needle in lowered:
                return SiteConfigError(
                    self.config.name,
                    f"ssh {self.config.destination}: {advice.format(dest=self.config.destination)}"
                    f" (ssh said: {text[-300:]})", stderr=stderr)
        return SiteError(self.config.name, f"ssh {self.config.destination} failed "
                         f"(exit {code}): {text[-500:] or 'no message'}", transient=True,
                         stderr=stderr)


def remote_join(argv: list[str]) -> str:
    """``argv`` as one command line for the remote shell: every word quoted, except a
    leading ``~/``, which the remote shell expands to the remote user's home (so a site's
    ``--python ~/venv/bin/python`` means the home there)."""
    return " ".join("~/" + shlex.quote(a[2:]) if a.startswith("~/") and len(a) > 2
                    else shlex.quote(a) for a in argv)


def _from_ssh(stderr: str) -> bool:
    """Whether exit 255 came from ssh itself (the remote command may exit 255 too)."""
    lowered = stderr.lower()
    return any(w in lowered for w in ("ssh:", "ssh_exchange", "connection", "permission "
                                      "denied", "host key", "could not resolve", "kex_",
                                      "mux_client", "control socket", "port ")) or not stderr
