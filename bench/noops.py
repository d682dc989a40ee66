"""Task bodies shared by every peer. They live in a module (not ``__main__``) so worker
processes of Kale, Parsl and Dask can import them by name."""

from __future__ import annotations


def noop(*_args: object) -> None:
    """Does nothing; takes any positional arguments so it can also be a chain link."""
    return None


def nap(seconds: float = 0.0) -> None:
    """Sleeps ``seconds``: a task that paces a run (``dashboard.py --big --pace``)."""
    import time

    time.sleep(seconds)


def true_cmd() -> str:
    """The command line of a Parsl ``bash_app``: run ``true``."""
    return "true"
