"""What every scheduler adapter gives: the user's batch queue and the partitions (queues),
in one normalized shape.

PSI/J submits, watches and cancels jobs, but it cannot list a queue or the partitions a
user may submit to. Each adapter here builds the scheduler's own listing command as an
argv list (never a shell string) and parses its output with *pure* functions, which the
tests feed with captured output.
"""

from __future__ import annotations

import abc
import re
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from kale.errors import SchedulerError

#: the normalized job states every adapter maps its scheduler's states to
STATES = ("PENDING", "RUNNING", "COMPLETING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
          "SUSPENDED", "HELD", "UNKNOWN")

#: how schedulers spell "no value" (a time not known yet, a limit not set)
NO_VALUE = frozenset({"", "-", "n/a", "none", "null", "unknown", "unlimited", "infinite",
                      "inf", "invalid", "not_set", "(null)"})

_DURATION = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


@dataclass(slots=True)
class QueueJob:
    """One job in the batch queue."""

    id: str
    name: str
    state: str                  # one of STATES
    reason: str | None          # why it waits (or was held), in the scheduler's words
    partition: str | None
    nodes: int | None
    user: str | None
    submitted: float | None     # epoch seconds
    start: float | None         # actual start if running, expected start if the scheduler gives one
    walltime: int | None        # seconds; None: no limit or not known
    native_state: str           # the scheduler's own state text

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Partition:
    """One partition (Slurm) or queue (PBS, LSF, Flux, Cobalt) jobs can be submitted to."""

    name: str
    available: bool             # accepts and starts jobs
    default: bool               # where a job goes when it names none
    nodes: int | None
    idle_nodes: int | None
    cpus: int | None
    idle_cpus: int | None
    max_walltime: int | None    # seconds; None: unlimited (or not known)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Scheduler(abc.ABC):
    """A scheduler's queue and partition listings. Subclasses give the argv builders and
    the pure parsers; :meth:`queue` and :meth:`partitions` run one and feed the other."""

    name: str
    psij_name: str              # name of the PSI/J executor ("slurm", "pbs", ...)
    #: texts in a failed command's stderr that only mean "there is nothing to list"
    empty_markers: tuple[str, ...] = ()
    timeout: float = 30

    @abc.abstractmethod
    def queue_argv(self, user: str | None) -> list[str]:
        """The command listing the queue: ``user``'s jobs, or everyone's when None."""

    @abc.abstractmethod
    def parse_queue(self, text: str) -> list[QueueJob]:
        """Parse what :meth:`queue_argv` printed."""

    @abc.abstractmethod
    def partitions_argv(self) -> list[str]:
        """The command listing partitions (queues)."""

    @abc.abstractmethod
    def parse_partitions(self, text: str) -> list[Partition]:
        """Parse what :meth:`partitions_argv` printed."""

    def queue(self, user: str | None = None) -> list[QueueJob]:
        """The jobs in the queue (``user``'s, or everyone's)."""
        return self.parse_queue(self.run(self.queue_argv(user)))

    def partitions(self) -> list[Partition]:
        return self.parse_partitions(self.run(self.partitions_argv()))

    def run(self, argv: list[str]) -> str:
        """Run a listing command; a failure whose stderr only says "nothing found" (see
        :attr:`empty_markers`) gives an empty output instead of an error."""
        try:
            return run_command(argv, self.timeout)
        except SchedulerError as e:
            if any(m in e.stderr for m in self.empty_markers):
                return ""
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def run_command(argv: list[str], timeout: float = 30) -> str:
    """Run ``argv`` (no shell) and return its stdout. Raises :class:`SchedulerError` when
    the command is missing, fails or times out (the last is ``transient``)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=timeout, check=False)
    except FileNotFoundError:
        raise SchedulerError(f"{argv[0]} failed: command not found", command=argv,
                             stderr="command not found") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{argv[0]} failed: no answer in {timeout:g} s", command=argv,
                             stderr="", transient=True) from None
    if done.returncode != 0:
        stderr = done.stderr.strip()
        lowered = stderr.lower()
        transient = "timed out" in lowered or "try again" in lowered
        raise SchedulerError(f"{argv[0]} failed (exit {done.returncode}): {stderr}",
                             command=argv, stderr=stderr, transient=transient)
    return done.stdout


def no_value(text: str | None) -> bool:
    """True if ``text`` is how a scheduler says "nothing here" (``N/A``, ``-``, ...)."""
    return text is None or text.strip().lower() in NO_VALUE


def parse_duration(text: str | None) -> int | None:
    """A walltime or limit as seconds: ``"1-02:03:04"``, ``"02:03:04"``, ``"03:04"``
    (minutes:seconds, as Slurm prints limits under an hour), ``"3600"`` or ``"3600.0"``
    (seconds, as Flux prints them). ``UNLIMITED``, ``INVALID``, ``N/A`` and friends give
    None. Anything else raises ValueError."""
    if no_value(text):
        return None
    assert text is not None
    s = text.strip()
    try:
        return round(float(s))
    except ValueError:
        pass
    m = _DURATION.fullmatch(s)
    if not m:
        raise ValueError(f"duration {text!r} is not like 1-02:03:04, 02:03:04 or 03:04")
    days, a, b, c = m.groups()
    if days is not None:         # D-H, D-H:M, D-H:M:S
        parts = [int(a), int(b or 0), int(c or 0)]
    elif c is not None:          # H:M:S
        parts = [int(a), int(b), int(c)]
    elif b is not None:          # M:S
        parts = [0, int(a), int(b)]
    else:                        # a bare integer was handled as seconds above
        raise ValueError(f"duration {text!r} is not like 1-02:03:04")
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def parse_int(text: str | int | None) -> int | None:
    """An integer field, or None for the scheduler's "no value" spellings."""
    if isinstance(text, int):
        return text
    if no_value(text):
        return None
    assert text is not None
    try:
        return int(float(text.strip()))
    except ValueError:
        return None


def local_time(text: str | None, fmt: str) -> float | None:
    """A time the scheduler printed in the local time zone (no zone in the text) as epoch
    seconds; None for "no value"."""
    if no_value(text):
        return None
    assert text is not None
    return datetime.strptime(text.strip(), fmt).timestamp()


def text_or_none(text: str | None) -> str | None:
    """``text`` stripped, or None for the scheduler's "no value" spellings."""
    if text is None or no_value(text):
        return None
    return text.strip()
