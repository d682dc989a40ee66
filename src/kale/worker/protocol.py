"""The worker link: JSON messages over one WebSocket per worker (``/api/workers/link``).

A worker authenticates with a worker token (``Authorization: Bearer``), which can do
nothing but this. Messages are JSON objects with an ``op``:

worker -> manager
    ``hello``    ``{worker, slots, host, pid, provider, info, running: [key...],
                 reports: [report...]}``: first message on every connection; ``running``
                 lists the attempts it is running, ``reports`` every report not yet
                 acknowledged (so the manager reconciles both at once after a restart)
    ``sync``     ``{reports: [report...], credit: n, samples: [sample...], started:
                 [key...]}``: new reports, ``n`` more tasks it can take (a worker of short
                 tasks takes some beyond its free slots: they wait there for one),
                 resource samples, tasks sent ``queued`` that have now started; also the
                 heartbeat
manager -> worker
    ``welcome``  ``{manager, heartbeat, sample_interval, forget: [key...]}``: ``forget`` are
                 attempts the manager no longer wants (the worker kills them)
    ``batch``    ``{tasks: [{key, payload, queued}...], acks: [seq...], controls:
                 [{action, key}...]}``, each part present only when not empty. ``tasks``:
                 one per credit, ``payload`` the pickled :class:`~kale.tasks.base.
                 TaskContext` (base64), ``queued: true`` when the manager counts no free
                 slot for it there (it is not running yet: the worker says when it
                 starts); ``acks``: reports whose effects are committed, which the worker
                 then forgets (they may wait a few ms to go with tasks); ``controls``:
                 ``cancel``, ``suspend`` or ``resume`` an attempt

A key is ``[run_id, task, attempt]``. A report is ``{seq, key, how, ok, exit_code, error,
traceback, details, artifacts, result, records}``; ``seq`` numbers a worker's reports,
``how`` is ``done``, ``cancelled`` or ``interrupted``. ``result`` is None or a value:
``{"json": text}`` when the value survives JSON unchanged, else ``{"pickle": base64}``;
``records`` (what ``kale.record`` kept, read where the task ran) maps each name to such a
value, or is None when not read.

The manager never unpickles anything a worker sends: a pickled result or record reaches
the engine as a :class:`~kale.model.sealed.Sealed` value, stored as the bytes it is and
opened only by the owner's own processes. (The manager pickles the task contexts it
sends; the worker, which proved it talks to its own manager, opens them.)

Exactly-once: a report is applied only while its attempt is the one the engine awaits,
and acknowledged only after the resulting state change is committed; the worker resends
unacknowledged reports on every new connection. A duplicate therefore finds its attempt
already ended and is only acknowledged, and a manager killed between applying and
committing gets the report again.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any

from kale import serial
from kale.model.sealed import Sealed
from kale.tasks.base import Outcome, TaskContext

Key = tuple[str, str, int]
LINK_PATH = "/api/workers/link"
#: default seconds of silence after which the manager declares a worker lost
HEARTBEAT_TIMEOUT = 15.0


def key_of(value: Any) -> Key:
    run, task, attempt = value
    return (str(run), str(task), int(attempt))


def pack(obj: Any) -> str:
    return base64.b64encode(serial.dumps(obj)).decode("ascii")


def unpack(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def encode_context(ctx: TaskContext) -> str:
    return pack(ctx)


def decode_context(payload: str) -> TaskContext:
    ctx = unpack(payload)
    if not isinstance(ctx, TaskContext):
        raise TypeError(f"not a task context: {type(ctx).__name__}")
    return ctx


def report(seq: int, key: Key, how: str, outcome: Outcome | None) -> dict[str, Any]:
    """A report of an attempt (worker side)."""
    out = outcome or Outcome(ok=False)
    result: dict[str, str] | None = None
    records: dict[str, dict[str, str]] | None = None
    try:
        result = None if out.result is None else value_field(out.result)
        if out.records is not None:
            records = {str(k): value_field(v) for k, v in out.records.items()}
    except Exception as e:
        out = Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                      error=f"cannot send the result: {type(e).__name__}: {e}")
        result = records = None
    return {"seq": seq, "key": list(key), "how": how, "ok": out.ok,
            "exit_code": out.exit_code, "error": out.error, "traceback": out.traceback,
            "details": out.details, "artifacts": out.artifacts, "result": result,
            "records": records, "code": out.code}


def value_field(value: Any) -> dict[str, str]:
    """A value as a report carries it: JSON when it survives JSON unchanged (the manager
    may read it), else a pickle (the manager keeps it sealed)."""
    from kale.store.results import as_json

    text = as_json(value)
    return {"json": text} if text is not None else {"pickle": pack(value)}


def value_of(field: Any) -> Any:
    """A report's value (manager side): JSON is parsed; a pickle stays sealed."""
    import json

    if not isinstance(field, dict):
        raise ValueError("a value is {'json': text} or {'pickle': base64}")
    if "json" in field:
        return json.loads(field["json"])
    return Sealed(base64.b64decode(field["pickle"], validate=True))


def outcome_of(rep: dict[str, Any]) -> Outcome:
    """The outcome a report tells (manager side). Nothing in it is unpickled."""
    raw = rep.get("result")
    result = None if raw is None else value_of(raw)
    raw = rep.get("records")
    records = None if raw is None else {str(k): value_of(v) for k, v in dict(raw).items()}
    return Outcome(ok=bool(rep.get("ok")), result=result, exit_code=rep.get("exit_code"),
                   records=records,
                   error=rep.get("error"), traceback=rep.get("traceback"),
                   details=dict(rep.get("details") or {}),
                   artifacts=dict(rep.get("artifacts") or {}),
                   code=_code(rep.get("code")))


def _code(raw: Any) -> dict[str, str] | None:
    """A report's code manifest (file -> hash), checked: it decides later reuse."""
    if not isinstance(raw, dict):
        return None
    return {str(k): str(v) for k, v in raw.items()}
