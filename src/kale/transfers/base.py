"""The transfer interface: how a file tree made at one place (this machine, or a host
reached over the user's own ``ssh``) gets to another.

A :class:`Transfer` copies what is under one :class:`Endpoint` to another and says what it
did (:class:`TransferReport`), or raises :class:`TransferError`, which says whether trying
again may help. Kale's own is rsync over ssh (:mod:`kale.transfers.rsync`); others (Globus,
say) are plug-ins registered under the ``kale.transfers`` entry point.

Invariants every transfer keeps (a plug-in too):

- **Never a partial file at a final name.** A copy writes each file under a temporary
  name and renames it into place once whole: an interrupted copy (a dropped network, a
  killed process) leaves at the destination's final names nothing, or only whole files
  (from this attempt or an earlier one). Temporary names are dot-files beside their
  target or in a dot-directory of the destination (rsync: ``.NAME.XXXXXX`` and
  ``.rsync-partial/``); a receiver killed outright may leave one behind, never under a
  final name.
- **A retry completes the copy.** Calling :meth:`Transfer.copy` again with the same
  arguments after any failure ends with the destination holding the source's content.
- **Only changed files are sent.** A file whose size and modification time match at
  both ends is not sent again (the copy keeps modification times); the report counts
  what was sent.
- **Nothing is deleted at the destination**: files there that the source lacks stay.
- **Between two remote hosts the copy relays through this machine** (a private local
  temporary directory, removed afterwards) unless the transfer can do better (a service
  that moves data between the two sites itself).
- A copy never waits for a person: ssh runs with ``BatchMode`` and a connect timeout;
  an unreachable host is a :class:`TransferError` with ``transient=True``.
- :meth:`Transfer.cancel` (from another thread) stops the copies in progress; each
  raises :class:`TransferError` with ``cancelled`` set, the destination left as by any
  interruption.

An endpoint's ``ssh_args`` should reuse a master connection (``ControlPath`` with
``ControlMaster=no``), not start one: a master the copy's ssh started would belong to
the copy.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TextIO

from kale.errors import KaleError


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a copy: a directory on a host.

    ``host`` is None for this machine, else an ssh destination (an alias from
    ``~/.ssh/config``, or ``user@host``). ``path`` is absolute on that host, or relative
    to the login directory there (to the current directory for this machine).
    ``ssh_args`` are ssh's options, placed before the destination
    (``("-p", "2222", "-o", "ControlPath=/x/%C")``); ssh keeps the first value it is given
    for an option, so these win over a transfer's own defaults."""

    host: str | None
    path: str
    ssh_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("an endpoint's path must not be empty")
        if self.host is not None and (not self.host or self.host.startswith("-")):
            raise ValueError(f"not an ssh destination: {self.host!r}")

    @property
    def remote(self) -> bool:
        return self.host is not None

    def __str__(self) -> str:
        return f"{self.host}:{self.path}" if self.host is not None else self.path


@dataclass(frozen=True, slots=True)
class TransferReport:
    """What one copy did: ``files`` sent (regular files written at the destination),
    their total size in ``bytes`` (what the destination received; the wire may carry
    less, rsync sending only the differences of a changed file), the ``seconds`` it
    took, and the ``method`` (the transfer's name, ``"rsync"``, or ``"rsync (relayed)"``)."""

    files: int
    bytes: int
    seconds: float
    method: str


class TransferError(KaleError):
    """A copy failed. ``endpoint`` is the end at fault (None when it is this machine's
    own tooling, or unknown); ``transient`` says whether trying again later may help (a
    dropped or refused connection, a killed process: yes; a missing source, a refused
    login, a missing ``rsync``: no); ``stderr`` is what the tools said; ``cancelled``:
    :meth:`Transfer.cancel` stopped it (not transient)."""

    def __init__(self, message: str, *, endpoint: Endpoint | None = None,
                 transient: bool = False, stderr: str = "", cancelled: bool = False) -> None:
        super().__init__(message)
        self.endpoint, self.transient, self.stderr = endpoint, transient, stderr
        self.cancelled = cancelled


class Transfer(ABC):
    """A way to copy files between endpoints (module docstring: the invariants). A
    plug-in subclasses it, sets :attr:`name`, and is registered under the
    ``kale.transfers`` entry point; :func:`kale.transfers.get` makes one with no
    arguments. An instance may be used for many copies, from several threads."""

    #: the name it is registered under (a lower-case identifier)
    name: ClassVar[str] = ""

    @abstractmethod
    def copy(self, src: Endpoint, dst: Endpoint, paths: Sequence[str] | None = None,
             log: TextIO | None = None) -> TransferReport:
        """Copy ``paths`` (relative to ``src.path``: files or directories, directories
        with everything under them; None: everything under ``src.path``) to the same
        relative paths under ``dst.path`` (made if missing). Progress and the tools'
        output go to ``log`` when given. Raises :class:`TransferError`."""

    def cancel(self) -> None:
        """Stop every copy of this instance in progress (from other threads): each
        raises :class:`TransferError` with ``cancelled`` set, leaving the destination
        as an interrupted copy does (no partial file under a final name). A transfer
        that cannot stop a copy does not override this."""
        raise NotImplementedError(f"the {self.name or type(self).__name__} transfer "
                                  "cannot cancel a copy")


def check_paths(paths: Sequence[str] | None) -> list[str] | None:
    """``paths`` normalised (``a/./b/`` is ``a/b``), or a :class:`TransferError` for one
    that is empty, absolute or climbs out of the source directory (``..``)."""
    if paths is None:
        return None
    if isinstance(paths, str):
        raise TransferError(f"paths must be a list of paths, not the string {paths!r}")
    out: list[str] = []
    for p in paths:
        norm = posixpath.normpath(p) if p else ""
        if not norm or norm.startswith("/") or norm == ".." or norm.startswith("../") \
                or "\0" in norm or "\n" in norm:
            raise TransferError(f"not a path relative to the source directory: {p!r}")
        out.append(norm)
    return out
