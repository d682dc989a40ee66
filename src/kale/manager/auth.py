"""The manager's token: made at first start, kept in a 0600 file in the Kale home."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token(home: Path) -> str:
    """The user's token, created (0600, never group/world readable) if it does not exist."""
    path = token_path(home)
    try:
        return read_token(home)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(home: Path) -> str:
    path = token_path(home)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); "
                              f"run `chmod 600 {path}`")
    return path.read_text().strip()


def same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
