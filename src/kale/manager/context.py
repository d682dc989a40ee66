"""What the manager's routes share, and how they get it: one :class:`ManagerContext` per
app (the store, the tokens, the broker, the runs it drives, the workers it starts), found
by each request through the app (``app.state.kale``), and the caller's identity.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the
dependencies this module defines."""

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kale.manager.auth import Identity, Tokens
from kale.manager.coalesce import Coalescer

if TYPE_CHECKING:
    from kale.manager.batch import BatchWorkers
    from kale.manager.broker import Broker
    from kale.manager.host import RunHost
    from kale.manager.provider import LocalWorkers
    from kale.store.store import RunRecord, Store


@dataclass
class ManagerContext:
    """The manager's parts. ``local`` and ``batch`` are set while the app starts (its
    lifespan) and read by requests afterwards; everything else is fixed at creation."""

    home: Path
    store: "Store"
    tokens: Tokens
    broker: "Broker"
    host: "RunHost"
    local: "LocalWorkers | None" = None
    batch: "BatchWorkers | None" = None
    #: set when the manager starts to stop: event streams end (their clients reconnect
    #: to the next manager) instead of holding the server open
    stopping: threading.Event = field(default_factory=threading.Event)
    #: reads of the store that many clients make at once (a finished run's summary)
    reads: Coalescer = field(default_factory=Coalescer)

    def users_of(self, who: Identity) -> list[str | None]:
        """Whose runs ``who`` sees: their own, and for the home's owner also the runs made
        without a manager (`kale run`, a notebook), which are the owner's."""
        return self.store.own_users() if who.user == self.tokens.owner else [who.user]

    def own_run(self, who: Identity, run_id: str) -> "RunRecord":
        """A run of this user's (``latest`` and id prefixes look among theirs only;
        another user's run is not found, as if it did not exist)."""
        return self.store.get_run(run_id, users=self.users_of(who))


async def context(request: Request) -> ManagerContext:
    """(async, as :func:`identity`: a sync dependency would cost a thread hop per request)"""
    ctx: ManagerContext = request.app.state.kale
    return ctx


Ctx = Annotated[ManagerContext, Depends(context)]

_bearer = HTTPBearer(auto_error=False)


async def identity(ctx: Ctx, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
             ) -> Identity:
    """The caller, by a user token (a worker token opens only the worker link)."""
    who = ctx.tokens.identify(cred.credentials) if cred is not None else None
    if who is None or who.worker:
        raise HTTPException(401, "a valid user token is required (Authorization: Bearer "
                            "...)", headers={"WWW-Authenticate": "Bearer"})
    return who


User = Annotated[Identity, Depends(identity)]
