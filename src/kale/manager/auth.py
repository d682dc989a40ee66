"""Tokens. The home's owner has a user token (``$KALE_HOME/token``) and a worker token
(``$KALE_HOME/worker-token``), both made at first start in 0600 files. A worker token can
only open the worker link, and a worker holding it gets only its user's tasks. A manager
on a shared PostgreSQL store can serve more users (``kale manager add-user``): their
tokens live in the store as SHA-256 hashes, so the store never holds a usable token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from kale.config import user_name
from kale.errors import UsageError
from kale.manager.tokens import (
    WORKER_TOKEN_FILE,
    ensure_token,
)
from kale.store import tables as T
from kale.store.store import Store


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def owner_name() -> str:
    return user_name()


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: a user's name, and whether the token is that user's worker
    token, which opens only the worker link (never the API). Immutable."""

    user: str
    worker: bool  # a worker token: only the worker link


class Tokens:
    """Who a token belongs to: the owner's two token files, then the store's users."""

    def __init__(self, home: Path, store: Store) -> None:
        self.store = store
        self.owner = owner_name()
        self._known = {digest(ensure_token(home)): Identity(self.owner, False),
                       digest(ensure_token(home, WORKER_TOKEN_FILE)): Identity(self.owner, True)}

    def identify(self, token: str) -> Identity | None:
        h = digest(token)
        hit = self._known.get(h)
        if hit is None:
            hit = self._lookup(h)
            if hit is not None:
                self._known[h] = hit
        return hit

    def users(self) -> dict[str, str]:
        """The digests of the tokens seen so far that are not worker tokens, and whose
        they are (what the status board is told)."""
        return {h: who.user for h, who in dict(self._known).items() if not who.worker}

    def _lookup(self, h: str) -> Identity | None:
        with self.store.engine.connect() as c:
            row = c.execute(sa.select(T.users.c.name, T.users.c.token_hash).where(
                (T.users.c.token_hash == h) | (T.users.c.worker_token_hash == h))).first()
        if row is None:
            return None
        return Identity(row[0], worker=row[1] != h)


def add_user(store: Store, name: str) -> dict[str, str]:
    """Create a manager user; returns its two tokens (shown once, stored only hashed)."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"user name {name!r}: use letters, digits, - and _ (at most 64)")
    if name == owner_name():
        raise UsageError(f"{name!r} is this home's owner; its tokens are in the home")
    token, worker = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with store.engine.begin() as c:
        if c.execute(sa.select(T.users.c.name).where(T.users.c.name == name)).first():
            raise UsageError(f"user {name!r} exists already")
        c.execute(T.users.insert().values(name=name, token_hash=digest(token),
                                          worker_token_hash=digest(worker),
                                          created_at=time.time()))
    return {"user": name, "token": token, "worker_token": worker}
