"""Where Kale's Slurm JWT comes from, and how it is renewed while a run goes on.

A token comes from ``token_file`` (re-read whenever the file changes: a cron job, the user,
or another tool may replace it) and/or from ``token_command`` (an argv list such as
``["scontrol", "token", "lifespan=600"]``, run when the token Kale holds is near its ``exp``
or was rejected). The failure this avoids is a run lost because its token expired while its
jobs ran (Balsam's issue #116): renewal happens before each request that needs it, and a
request refused for its token is tried once more with a fresh one.

The token itself never appears in a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kale.batch.slurm_rest import token_claims, token_from_text
from kale.errors import SchedulerError

log = logging.getLogger("kale.batch")

#: renew a token this many seconds before its ``exp`` (or at 10% of its life left, if less)
RENEW_BEFORE = 60.0
#: a token command that does not answer in this time has failed
COMMAND_TIMEOUT = 60.0


class TokenError(SchedulerError):
    """No usable Slurm token: the file is missing or empty, the command failed, or the token
    is expired and cannot be renewed. The message says which, never the token."""


class TokenSource:
    """The current Slurm JWT of one REST endpoint. Thread-safe: the submitting threads and
    the polling thread share one. Invariants: :meth:`token` never returns a token past its
    ``exp`` when it can get a fresher one; the file is read again only when its identity
    (inode, size, mtime) changed, or when asked to (:meth:`renew`)."""

    def __init__(self, token_file: str | None = None,
                 token_command: Sequence[str] | None = None) -> None:
        if not token_file and not token_command:
            raise TokenError("a Slurm REST endpoint needs token_file or token_command")
        self.path = Path(token_file).expanduser() if token_file else None
        self.command = list(token_command) if token_command else None
        self._lock = threading.Lock()
        self._token = ""
        self._stamp: tuple[int, int, int] | None = None
        self._from = ""     # where the current token came from (for messages)

    @property
    def where(self) -> str:
        """Where tokens come from, for messages."""
        parts = []
        if self.path is not None:
            parts.append(f"token_file {self.path}")
        if self.command:
            parts.append(f"token_command {' '.join(self.command)}")
        return " or ".join(parts)

    def token(self) -> str:
        """The token to send now: re-read from the file if it changed, renewed through the
        command when near its expiry."""
        with self._lock:
            self._read_file(force=False)
            if self.command and (not self._token or self._expiring()):
                self._run_command()
            if not self._token:
                self._read_file(force=True, required=True)
            return self._token

    def renew(self, rejected: str) -> str | None:
        """The token ``rejected`` was refused: a different one (the file's, if it changed;
        else the command's), or None when there is none to try."""
        with self._lock:
            if self._token != rejected:
                return self._token or None        # another thread renewed it already
            self._read_file(force=True)
            if self._token == rejected and self.command:
                self._run_command()
            return self._token if self._token and self._token != rejected else None

    def expired(self, token: str) -> float | None:
        """The ``exp`` of ``token`` if it is past; None if it is not (or not known)."""
        exp = token_claims(token).get("exp")
        return float(exp) if isinstance(exp, int | float) and exp <= time.time() else None

    def user(self, token: str) -> str | None:
        """The Slurm user the token is for (its ``sun`` claim)."""
        sun = token_claims(token).get("sun")
        return sun if isinstance(sun, str) and sun else None

    # -- under the lock ------------------------------------------------------------------
    def _expiring(self) -> bool:
        claims = token_claims(self._token)
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float):
            return False
        margin = RENEW_BEFORE
        if isinstance(iat, int | float) and exp > iat:
            margin = min(margin, (exp - iat) * 0.1)
        return time.time() >= exp - margin

    def _read_file(self, *, force: bool, required: bool = False) -> None:
        if self.path is None:
            if required:
                raise TokenError(f"no Slurm token: {self.where} gave none")
            return
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if not force and stamp == self._stamp:
                return
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            if required or not self._token:
                raise TokenError(f"cannot read the Slurm token file {self.path}: "
                                 f"{e.strerror or e}") from None
            log.warning("cannot read the Slurm token file %s: %s", self.path, e.strerror or e)
            return
        token = token_from_text(text)
        self._stamp = stamp
        if token and token != self._token:
            if self._token:
                log.info("read a new Slurm token from %s", self.path)
            self._token, self._from = token, str(self.path)
        elif not token and (required or not self._token):
            raise TokenError(f"the Slurm token file {self.path} holds no token")

    def _run_command(self) -> None:
        assert self.command is not None
        what = " ".join(self.command)
        try:
            done = subprocess.run(self.command, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
        except FileNotFoundError:
            raise TokenError(f"token_command {what} failed: {self.command[0]} not found") \
                from None
        except subprocess.TimeoutExpired:
            raise TokenError(f"token_command {what} gave no token in "
                             f"{COMMAND_TIMEOUT:g} s", transient=True) from None
        token = token_from_text(done.stdout) if done.returncode == 0 else ""
        if not token:
            why = done.stderr.strip().splitlines()
            raise TokenError(f"token_command {what} failed (exit {done.returncode})"
                             + (f": {why[-1]}" if why else ": it printed no token"),
                             stderr=done.stderr.strip())
        if self._token:
            log.info("renewed the Slurm token with %s", what)
        self._token, self._from = token, what
