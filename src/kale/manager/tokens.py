"""Token files of a Kale home (0600): the owner's user token and worker token. Kept apart
from :mod:`kale.manager.auth` (which also reads the store), so a client that only needs
its token does not import the database layer."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

TOKEN_FILE = "token"
WORKER_TOKEN_FILE = "worker-token"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token(home: Path, name: str = TOKEN_FILE) -> str:
    """A token file's token, created (0600, never group/world readable) if missing.

    Safe when two processes ensure the same file at once (two ``kale manager start``): the
    token is written to a private temporary file that is then hard-linked into place, so the
    file appears whole or not at all, and the process that loses the race reads the winner's
    token instead of failing or reading a half-written file."""
    try:
        return read_token(home, name)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=home)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        try:
            os.link(tmp, home / name)
        except FileExistsError:
            return read_token(home, name)
    finally:
        os.unlink(tmp)
    return token


def read_token(home: Path, name: str = TOKEN_FILE) -> str:
    path = home / name
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); "
                              f"run `chmod 600 {path}`")
    return path.read_text().strip()

