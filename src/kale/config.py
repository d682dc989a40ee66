"""Where Kale keeps things: ``$KALE_HOME`` (default ``~/.kale``) holds the store, the run
directories and, later, tokens and manager state. Two homes never see each other."""

from __future__ import annotations

import os
from pathlib import Path

from kale.errors import UsageError


def kale_home(home: str | Path | None = None) -> Path:
    """The Kale home directory (created on first use, private to the user)."""
    path = Path(home or os.environ.get("KALE_HOME") or Path.home() / ".kale").expanduser()
    try:
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
        else:
            _make_private(path)
        st = path.stat()
    except OSError as e:
        raise UsageError(f"cannot use {path} as the Kale home: {e.strerror or e}; set "
                         "KALE_HOME to a directory of your own") from None
    if st.st_uid != os.getuid():
        raise UsageError(f"{path} belongs to another user; a Kale home holds your tokens "
                         "and results and must be your own: set KALE_HOME to a directory "
                         "of yours")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(f"cannot use {path} as the Kale home: it is not writable by you")
    return path.resolve()


_checked: set[Path] = set()


def _make_private(path: Path) -> None:
    """A home others can read or enter (tokens, results, logs) is made private, saying so."""
    if path in _checked:
        return
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        path.chmod(0o700)
        import sys

        print(f"kale: {path} was readable by others (mode {st.st_mode & 0o777:o}); made it "
              "private (700): it holds your tokens, results and logs", file=sys.stderr)
    _checked.add(path)


def store_url(home: Path) -> str:
    """``$KALE_STORE_URL`` if set (e.g. a PostgreSQL URL), else the SQLite file in the home."""
    return os.environ.get("KALE_STORE_URL") or f"sqlite:///{home / 'kale.db'}"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def user_name() -> str:
    """The operating-system user running Kale (by its user id, not by ``$USER``, which
    anyone may set): a home's owner, whose runs these are."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a user id with no entry (a container)
        return f"uid{os.geteuid()}"


def write_private(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` at once (a reader sees the old file or the new one,
    never half of it), readable by this user only (0600)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


#: the name Kale is installed under (pyproject.toml)
DISTRIBUTION = "kale-workflows"


def version() -> str:
    """The installed Kale's version; ``0+unknown`` in a source tree never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
