"""The runs a manager drives: one engine thread per run, its tasks sent to workers through
the broker. At start the manager resumes the runs a previous manager left unfinished; at a
clean stop it detaches from them (their tasks go on in the workers)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any

from kale.client.local import driving
from kale.engine.engine import Engine
from kale.engine.runs import create_run, load_workflow
from kale.errors import StoreWriteError
from kale.executors import check_no_engines, default_spec, for_run
from kale.manager.board import Board
from kale.manager.broker import Broker
from kale.manager.executor import WorkerExecutor
from kale.model.options import RunOptions
from kale.model.states import RunState
from kale.model.workflow import Workflow
from kale.store.store import RunRecord, Store

log = logging.getLogger("kale.manager")


class RunHost:
    """The runs this manager drives: one :class:`Engine` per run, each on an event loop of its
    own in a thread of its own (``kale-run-RUN``), its attempts sent to workers by a
    :class:`WorkerExecutor`.

    Promises: ``engines``, ``records`` and ``threads`` hold exactly the runs whose engine
    thread is alive (an engine's thread takes its run out as it ends); a run is resumed only
    if no live process drives it; :meth:`resume_all` returns once each resumed run has
    adopted its running attempts (or a minute passed), and then lets the broker judge the
    attempts no worker claimed; :meth:`detach_all` lets every engine go without cancelling
    anything (the workers keep running the tasks); a run stopped by a store that refused a
    write keeps its reason in ``failures`` until the manager stops.

    Threads: :meth:`submit` from API request threads, :meth:`resume_all` and
    :meth:`detach_all` from the manager's start and drain (threads off the server loop);
    :meth:`engine` and :meth:`live` from any thread. The three maps are read and changed
    under :attr:`lock`. ``on_submit`` hooks run in the submitting thread."""

    def __init__(self, store: Store, home: Path, broker: Broker, owner: str) -> None:
        self.store, self.home, self.broker, self.owner = store, home, broker, owner
        self.engines: dict[str, Engine] = {}
        #: runs whose engine stopped because the store refused a write: why (their status
        #: says it, since the store itself could not record it)
        self.failures: dict[str, str] = {}
        self.records: dict[str, RunRecord] = {}  # of the live runs, without their spec
        self.threads: dict[str, threading.Thread] = {}
        self.lock = threading.Lock()
        self.on_submit: list[Any] = []
        #: where the status line reads the live runs' summaries (set by the app)
        self.board: Board | None = None

    def submit(self, wf: Workflow, opts: RunOptions) -> RunRecord:
        """Record a run of ``wf`` for ``opts.submitted_by`` and start driving it. Raises
        :class:`~kale.errors.UsageError` (nothing recorded) for a run of an added user's
        that names a workflow engine (:meth:`engines_refused`)."""
        why = self.engines_refused(opts.submitted_by)
        if why is not None:
            check_no_engines(wf, default_spec(wf, opts.executor), why)
        rec = create_run(self.store, self.home, wf, opts)
        self._drive(rec, wf)  # `wf` was made for this request: no copy needed
        for hook in self.on_submit:
            hook()
        _give_back_memory()
        return rec

    def resume_all(self) -> list[str]:
        """Resume the runs a previous manager of this store left unfinished; returns
        their ids once each has adopted its running attempts."""
        resumed = []
        for rec in self.store.runs(limit=100_000):
            if rec.state is RunState.RUNNING and rec.options.get("manager") \
                    and not rec.owner_alive():
                try:
                    engine = self._drive(rec)
                except Exception:
                    log.exception("cannot resume run %s", rec.id)
                    continue
                engine.loaded.wait(60)
                resumed.append(rec.id)
        self.broker.resumed()
        return resumed

    def _drive(self, rec: RunRecord, wf: Workflow | None = None) -> Engine:
        wf = wf or load_workflow(rec)
        chosen = rec.options.get("executor")
        workers = WorkerExecutor(self.broker, rec.submitted_by or self.owner, rec.id,
                                 jobs=rec.options.get("jobs"),
                                 default=default_spec(wf, chosen))
        user = rec.submitted_by or self.owner
        executor = for_run(workers, wf, chosen, Path(rec.run_dir), rec.options.get("jobs"),
                           refuse_engines=self.engines_refused(user))
        # The home's owner also reuses the results of the runs made without the manager
        # (which record the same user name, or none before runs did, on SQLite only)
        users: list[str | None] = self.store.own_users() if user == self.owner else [user]
        live = dataclasses.replace(rec, owner_pid=os.getpid())
        board = self.board
        counts = None if board is None else board.open(rec.id, live.to_json(alive=True),
                                                       rec.submitted_by)
        try:
            engine = Engine(self.store, rec, wf, executor,
                            force=bool(rec.options.get("force")), reuse_users=users,
                            counts=counts)
        except BaseException:
            if board is not None:
                board.close(rec.id)
            raise

        def target() -> None:
            try:
                with driving(self.store):
                    asyncio.run(engine.run())
            except StoreWriteError as e:  # said by the run's status until the manager stops
                if board is not None:  # (the board would not say it)
                    board.close(rec.id)
                self.failures[rec.id] = str(e)
                log.error("run %s stopped: %s", rec.id, e)
            except BaseException:
                log.exception("run %s stopped", rec.id)
            finally:
                if board is not None:  # off the board first: never live there alone
                    board.close(rec.id)
                with self.lock:
                    self.engines.pop(rec.id, None)
                    self.records.pop(rec.id, None)
                    self.threads.pop(rec.id, None)

        thread = threading.Thread(target=target, name=f"kale-run-{rec.id}", daemon=True)
        with self.lock:
            self.records[rec.id] = live
            self.engines[rec.id] = engine
            self.threads[rec.id] = thread
        thread.start()
        return engine

    def engines_refused(self, user: str | None) -> str | None:
        """Why ``user``'s runs may not use a workflow engine (None: they may). A Dask or
        Parsl executor runs in this manager, as its owner: its workers would run another
        user's code as the owner, import her ``config:`` file here and unpickle what her
        tasks send back (docs/security.md 5). Only the owner's runs use them."""
        if user is None or user == self.owner:
            return None
        return (f"workflow engines (Dask, Parsl) run as this manager's owner "
                f"({self.owner}), so only the owner's runs may use them; run it with a "
                f"manager of your own")

    def engine(self, run_id: str) -> Engine | None:
        with self.lock:
            return self.engines.get(run_id)

    def live(self, run_id: str) -> tuple[RunRecord, Engine] | None:
        """A run this manager drives now (by exact id), with its engine: what a status
        request can answer from memory."""
        with self.lock:
            rec, engine = self.records.get(run_id), self.engines.get(run_id)
        return None if rec is None or engine is None else (rec, engine)

    def join(self, run_id: str, timeout: float) -> None:
        """Wait until the run is no longer live here (its engine's thread ended)."""
        with self.lock:
            thread = self.threads.get(run_id)
        if thread is not None:
            thread.join(timeout)

    def detach_all(self, timeout: float = 10.0) -> None:
        with self.lock:
            engines = list(self.engines.values())
            threads = list(self.threads.values())
        for e in engines:
            e.detach()
        for t in threads:
            t.join(timeout)


def _give_back_memory() -> None:
    """Reading and recording a large workflow takes tens of MB for a moment; glibc keeps
    freed memory for reuse unless asked to return it (a long-lived manager should)."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):  # not glibc
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
