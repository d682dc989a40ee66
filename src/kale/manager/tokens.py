"""Token files of a Kale home (0600): the owner's user token and worker token. Kept apart
from :mod:`kale.manager.auth` (which also reads the store), so a client that only needs
its token does not import the database layer."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"
WORKER_TOKEN_FILE = "worker-token"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token(home: Path, name: str = TOKEN_FILE) -> str:
    """A token file's token, created (0600, never group/world readable) if missing."""
    try:
        return read_token(home, name)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(home / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(home: Path, name: str = TOKEN_FILE) -> str:
    path = home / name
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); "
                              f"run `chmod 600 {path}`")
    return path.read_text().strip()

