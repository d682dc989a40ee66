"""The manager's implementation of the run interface: :class:`Client` speaks the manager's
HTTP API (httpx), :class:`ManagerSource` is the run interface over it, and the run
handles a client gives are the same :class:`~kale.client.run.Run` as embedded runs."""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import ssl
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from kale import tls
from kale.client.run import Run
from kale.client.source import Event
from kale.config import kale_home
from kale.errors import KaleError, TaskError, UsageError
from kale.model.options import RunOptions
from kale.model.states import RunState
from kale.model.workflow import Workflow

if TYPE_CHECKING:
    from kale.client.local import EmbeddedSource

#: seconds to wait for the manager's answer about the batch queue
QUEUE_TIMEOUT = 75.0


#: seconds a submit waits for the manager's answer per task, beyond the client's timeout
SUBMIT_WAIT_PER_TASK = 0.005


class Client:
    """Talks to the manager of a Kale home (found through ``$KALE_HOME/manager.json`` and
    its token file), or to ``url`` with ``token``.

    On the manager's host, a home's client goes through its Unix socket. Elsewhere, and
    with ``url`` (``https://HOST:PORT``), it speaks TLS and trusts nothing but the
    manager's certificate: ``cert`` (a file, or the PEM text), by default the home's
    ``tls/manager.crt``. A server that fails that check gets no token: the client raises
    a :class:`KaleError` saying so.

    ``run(id)`` and ``submit(wf)`` give :class:`~kale.client.run.Run` handles (the
    class in :attr:`handle`)."""

    #: the class of the run handles this client gives
    handle: type[Run] = Run

    def __init__(self, url: str | None = None, token: str | None = None,
                 home: str | Path | None = None, timeout: float = 30.0,
                 cert: str | Path | None = None, *, socket: str | Path | None = None,
                 on_drop: Callable[[], None] | None = None, where: str | None = None
                 ) -> None:
        from kale.manager import service
        from kale.manager.tokens import read_token

        #: the manager's status line (``status.sock``), for status reads, when local
        self._status: httpx.Client | None = None
        if socket is not None:  # a manager's socket forwarded here (a site, over SSH)
            if not token:
                raise KaleError("a manager reached through a socket needs its token")
            self.url = where or f"unix:{socket}"
            self._http = httpx.Client(
                base_url="http://kale", timeout=timeout,
                transport=_Transport(self.url, "", uds=tls.unix_path(Path(socket)),
                                     on_drop=on_drop),
                headers={"Authorization": f"Bearer {token}"})
            return
        path = kale_home(home)
        uds, doc = None, None
        if url is None:
            doc = service.state(path)
            if doc is None:
                raise KaleError(f"no manager is running for {path}; `kale manager start`")
            url = str(doc["url"])
            uds = _local_socket(doc)
        self.url = url.rstrip("/")
        if uds is not None:
            transport: httpx.HTTPTransport = _Transport(self.url, "", uds=uds)
            base = "http://kale"  # the socket is the address; the name is only a Host header
        else:
            if not self.url.startswith("https://"):
                raise KaleError(f"{url!r} is not a Kale manager's address: managers speak "
                                "TLS, at https://HOST:PORT (`kale manager status` shows it)")
            pem, pinned = _pin(path, cert)
            transport = _Transport(self.url, pinned, verify=tls.client_context(pem))
            base = self.url
        auth = {"Authorization": f"Bearer {token or read_token(path)}"}
        self._http = httpx.Client(base_url=base, timeout=timeout, transport=transport,
                                  headers=auth)
        line = None if doc is None or uds is None else _local_socket(doc, "status_socket")
        if line is not None:  # answered on a thread of its own (kale.manager.statusline)
            self._status = httpx.Client(base_url=base, timeout=timeout, headers=auth,
                                        transport=_Transport(self.url, "", uds=line))

    def _get(self, path: str, **params: Any) -> Any:
        return self._check(self._http.get(path, params=params)).json()

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise KaleError(f"manager: {response.status_code}: {detail}")
        return response

    def health(self) -> dict[str, Any]:
        return dict(self._check(self._http.get("/health")).json())

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(self._get("/api/runs", limit=limit))

    def submit(self, wf: Workflow, options: RunOptions | None = None, **given: Any) -> Run:
        """Send ``wf`` to the manager, which runs it; returns a handle to the run.
        ``options`` (or the same as keywords: ``params``, ``only``, ``force``...)."""
        if not isinstance(wf, Workflow):
            raise UsageError(f"submit takes a Workflow, not {type(wf).__name__} {wf!r}")
        return self.handle(ManagerSource(self), self.submit_id(wf, options or
                                                              RunOptions.of(**given)))

    def submit_id(self, wf: Workflow, options: RunOptions, *,
                  base_dir: str | None = None) -> str:
        """Submit; the run's id. ``base_dir``: where the workflow's files are on the
        manager's host (by default where they are here)."""
        body = {"workflow": wf.to_dict(for_store=True), "base_dir": base_dir or str(wf.base_dir),
                **options.to_json()}
        # The manager answers once the run and all its tasks are recorded: a workflow of
        # 100,000 tasks takes it tens of seconds on a busy machine, so the wait grows with it.
        given = self._http.timeout
        wait = httpx.Timeout(connect=given.connect, write=given.write, pool=given.pool,
                             read=None if given.read is None
                             else given.read + SUBMIT_WAIT_PER_TASK * len(wf.tasks))
        response = self._check(self._http.post("/api/runs", content=json.dumps(body),
                                               headers={"Content-Type": "application/json"},
                                               timeout=wait))
        return str(response.json()["id"])

    def run(self, run_id: str) -> Run:
        """Re-attach to a run by id (a unique prefix, or ``latest``)."""
        return self.handle(ManagerSource(self), self.status(run_id, tasks=False)["run"]["id"])

    def status(self, run_id: str, tasks: bool = True,
               states: Collection[str] | None = None,
               limit: int | None = None) -> dict[str, Any]:
        """``{"run", "counts"}`` (tasks per state) and, with ``tasks``, ``"tasks"`` (only
        those in ``states`` when given, the first ``limit`` of them)."""
        line = self._status
        if not tasks and line is not None:  # what dashboards poll: the status line
            try:
                return dict(self._check(line.get(f"/api/runs/{run_id}",
                                                 params={"tasks": "false"})).json())
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                # it went away (the manager gave up starting it again): the manager's
                # own socket answers the same
                self._status = None
                line.close()
        params: dict[str, Any] = {"tasks": str(tasks).lower()}  # alone: the fast path
        if tasks and states is not None:
            params["states"] = ",".join(str(s) for s in states)
        if tasks and limit is not None:
            params["limit"] = limit
        return dict(self._get(f"/api/runs/{run_id}", **params))

    def states(self, run_id: str) -> dict[str, Any]:
        """Every task's state by name, and the reasons of the tasks a condition skipped
        (:meth:`kale.client.source.RunSource.states`)."""
        return dict(self._get(f"/api/runs/{run_id}/states"))

    def task_action(self, run_id: str, task: str, action: str,
                    reason: str | None = None) -> dict[str, Any]:
        """``cancel``, ``suspend`` or ``resume`` one task of a run; ``continue`` or
        ``reject`` an interactive step that waits for a person."""
        params = {"reason": reason} if reason else None
        return dict(self._check(self._http.post(
            f"/api/runs/{run_id}/tasks/{task}/{action}", params=params)).json())

    def resources(self, run_id: str, task: str) -> list[dict[str, Any]]:
        """Resource samples of a task: ``ts``, ``cpu`` (%), ``rss``, I/O bytes, ``gpu``."""
        return list(self._get(f"/api/runs/{run_id}/tasks/{task}/resources"))

    def workers(self) -> list[dict[str, Any]]:
        return list(self._get("/api/workers"))

    def workflow(self, run_id: str) -> dict[str, Any]:
        """The workflow a run was made from, as its canonical dict."""
        return dict(self._get(f"/api/runs/{run_id}/workflow"))

    def task(self, run_id: str, task: str) -> dict[str, Any]:
        """One task: its record, its description and parameters from the workflow, and
        ``attempt_rows`` (state, times, exit code, error and worker of each attempt)."""
        return dict(self._get(f"/api/runs/{run_id}/tasks/{task}"))

    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None, force: bool = False) -> str:
        """Run a run's workflow again as a new run: the tasks that did not succeed
        (``failed=True``), a selection (``only``), or everything below ``from_``; its id."""
        body = {"failed": failed, "only": only or [], "from": from_ or [], "force": force}
        response = self._check(self._http.post(f"/api/runs/{run_id}/rerun", json=body))
        return str(response.json()["id"])

    def start_workers(self, kind: str = "local", count: int = 1, **options: Any
                      ) -> dict[str, Any]:
        """Start ``count`` local workers (``slots``), or ``count`` pilot jobs of a batch
        scheduler (``kind="slurm"``, with ``nodes``, ``walltime``, ``queue``, ``account``,
        ``slots``)."""
        body = {"kind": kind, "count": count, **options}
        return dict(self._check(self._http.post("/api/workers", json=body)).json())

    def stop_worker(self, worker_id: str) -> dict[str, Any]:
        """Stop a worker (its tasks are handed back and run elsewhere)."""
        return dict(self._check(self._http.post(f"/api/workers/{worker_id}/stop")).json())

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The batch jobs the manager submitted for you (pilots and jobs per task)."""
        return list(self._get("/api/jobs", limit=limit))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._check(self._http.post(f"/api/jobs/{job_id}/cancel")).json())

    def kernel_info(self, run_id: str, task: str) -> dict[str, Any]:
        """Connection info of the kernel a running task executes in (with its HMAC key)."""
        return dict(self._get(f"/api/runs/{run_id}/tasks/{task}/kernel"))

    def kernel(self, run_id: str, task: str, *, timeout: float = 10.0) -> Any:
        """A started ``jupyter_client.BlockingKernelClient`` on the running task's kernel:
        ``execute_interactive("print(x)")`` reads the task's variables, assignments steer
        it. The task itself runs in a subshell of that kernel, so answers come while it
        runs. A kernel on another host is reached through an SSH tunnel to that host."""
        from kale.kernels.attach import connect

        return connect(self.kernel_info(run_id, task), timeout=timeout)

    def queue(self, scheduler: str | None = None) -> dict[str, Any]:
        """The batch queue: ``{"scheduler", "jobs", "partitions", "errors"}``; jobs Kale
        submitted carry ``kale`` (the task or pilot they are for)."""
        params = {"scheduler": scheduler} if scheduler else {}
        # A scheduler that does not answer takes the manager its command's timeout (30 s)
        # to say so: wait for that answer rather than give up first.
        return dict(self._check(self._http.get("/api/queue", params=params,
                                               timeout=QUEUE_TIMEOUT)).json())

    def cancel(self, run_id: str) -> str:
        return str(self._check(self._http.post(f"/api/runs/{run_id}/cancel")).json()["state"])

    def result(self, run_id: str, task: str) -> Any:
        response = self._http.get(f"/api/runs/{run_id}/tasks/{task}/result")
        if response.status_code == 409:
            raise TaskError(task, response.json()["detail"])
        doc = self._check(response).json()
        if "pickle" in doc:
            return pickle.loads(base64.b64decode(doc["pickle"]))
        return json.loads(doc["json"]) if doc["json"] is not None else None

    def logs(self, run_id: str, task: str, stream: str = "stdout", offset: int = 0) -> str:
        return self._check(self._http.get(f"/api/runs/{run_id}/tasks/{task}/logs",
                                          params={"stream": stream, "offset": offset})).text

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        """Live ``(event, data)`` pairs of a run: ``state`` changes, ``log`` lines, and a
        final ``end``."""
        with self._http.stream("GET", f"/api/runs/{run_id}/events", params={"after": after},
                               timeout=httpx.Timeout(30.0, read=None)) as response:
            self._check(response)
            event, data = "", ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and event:
                    yield event, json.loads(data)
                    if event == "end":
                        return
                    event, data = "", ""

    def close(self) -> None:
        self._http.close()
        if self._status is not None:
            self._status.close()

    def __del__(self) -> None:
        # A client dropped without close() (a notebook cell re-run, a view's thread still
        # reading when its client went away) releases its connections, not the collector.
        for name in ("_http", "_status"):
            http = getattr(self, name, None)
            if http is not None:
                with contextlib.suppress(Exception):
                    http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _local_socket(doc: dict[str, Any], which: str = "socket") -> str | None:
    """The manager's Unix socket (``which``: ``socket``, or ``status_socket`` for its
    status line), if it is on this host (the home may be on a shared file system, seen
    from other hosts too), as a path ``connect`` takes."""
    import os
    import socket

    where = doc.get(which)
    if not where or doc.get("hostname") != socket.gethostname() or not os.path.exists(where):
        return None
    return tls.unix_path(Path(where))


def _pin(home: Path, cert: str | Path | None) -> tuple[str, str]:
    """The certificate to trust (PEM) and where it came from (for messages)."""
    if cert is None:
        cert = tls.cert_path(home)
        if not cert.exists():
            raise KaleError("give the manager's certificate (cert=FILE or its PEM text; it is "
                            "$KALE_HOME/tls/manager.crt on the manager's host): "
                            f"{cert} does not exist")
    pinned = "the certificate given" if "-----BEGIN" in str(cert) else str(cert)
    return tls.load_pin(cert), pinned


class _Transport(httpx.HTTPTransport):
    """httpx's transport; a failed TLS check is a :class:`tls.NotTheManager` (the
    request, its token with it, never left this process).

    With ``on_drop`` (a site's manager, through a forwarded socket), a request that
    finds the connection gone calls it (which re-establishes the connection, and starts
    the manager there if it died) and is sent again: always when nothing was sent (the
    connect failed), and for reads (GET) in any case. A POST cut off after it was sent
    is not repeated (it may have been done): the caller gets a :class:`KaleError` that
    says so, and the next request goes through the new connection."""

    def __init__(self, url: str, pinned: str, on_drop: Callable[[], None] | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self.url, self.pinned, self.on_drop = url, pinned, on_drop
        verify = options.get("verify")
        if options.get("uds") or isinstance(verify, ssl.SSLContext):  # (closes its sockets)
            self._pool = tls.owned_pool(uds=options.get("uds"), ssl_context=verify)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError as e:
            why = tls.tls_failure(e) if self.pinned else None
            if why is not None:
                raise tls.NotTheManager(self.url, self.pinned, why) from None
            if self.on_drop is None:
                raise
            self.on_drop()
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if self.on_drop is None:
                raise
            self.on_drop()
            if request.method not in ("GET", "HEAD"):
                raise KaleError(f"{self.url}: the connection dropped during {request.method} "
                                f"{request.url.path}; whether it was done is unknown (look "
                                "with `kale runs`/`kale status`); the connection is back"
                                ) from None
        return super().handle_request(request)


class ManagerSource:
    """A manager, through its API (:class:`~kale.client.source.RunSource`): runs that
    outlive the notebook, workers, batch jobs, kernels to attach to."""

    def __init__(self, client: Client, *, owns_client: bool = False) -> None:
        self.client = client
        self.owns_client = owns_client  # made for this source: closed with it
        self.where = f"the manager at {client.url}"

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    def submit(self, wf: Workflow, options: RunOptions) -> str:
        return self.client.submit_id(wf, options)

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.client.runs(limit)

    def status(self, run_id: str, tasks: bool = True,
               states: Collection[str] | None = None,
               limit: int | None = None) -> dict[str, Any]:
        return self.client.status(run_id, tasks, states, limit)

    def states(self, run_id: str) -> dict[str, Any]:
        return self.client.states(run_id)

    def workflow(self, run_id: str) -> dict[str, Any]:
        return self.client.workflow(run_id)

    def wait(self, run_id: str, timeout: float | None = None) -> RunState:
        """The run's state once it ended, or when ``timeout`` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.02  # a short run is seen ending at once; a long one costs a look per POLL
        while True:
            state = RunState(self.client.status(run_id, tasks=False)["run"]["state"])
            if state.terminal or (deadline is not None and time.monotonic() > deadline):
                return state
            time.sleep(pause)
            pause = min(POLL, pause * 1.5)

    def cancel(self, run_id: str) -> RunState:
        return RunState(self.client.cancel(run_id))

    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None, force: bool = False) -> str:
        return self.client.rerun(run_id, failed=failed, only=only, from_=from_, force=force)

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        return self.client.events(run_id, after)

    def task(self, run_id: str, task: str) -> dict[str, Any]:
        return self.client.task(run_id, task)

    def result(self, run_id: str, task: str) -> Any:
        return self.client.result(run_id, task)

    def logs(self, run_id: str, task: str, stream: str = "stdout", offset: int = 0) -> str:
        return self.client.logs(run_id, task, stream, offset)

    def task_action(self, run_id: str, task: str, action: str,
                    reason: str | None = None) -> dict[str, Any]:
        return self.client.task_action(run_id, task, action, reason)

    def fetch(self, run_id: str, task: str, dest: Path) -> list[Path]:
        """Copy the task's declared outputs into ``dest`` (the manager's files are on
        this machine: a manager elsewhere is a site's, whose source copies over SSH)."""
        from kale.client.outputs import copy_outputs, output_paths

        return copy_outputs(*output_paths(self, run_id, task), dest)

    def kernel(self, run_id: str, task: str, *, timeout: float = 10.0) -> Any:
        return self.client.kernel(run_id, task, timeout=timeout)

    def queue(self, scheduler: str | None = None) -> dict[str, Any]:
        return self.client.queue(scheduler)

    def workers(self) -> list[dict[str, Any]]:
        return self.client.workers()

    def jobs(self) -> list[dict[str, Any]]:
        return self.client.jobs()

    def start_workers(self, kind: str, count: int, **options: Any) -> dict[str, Any]:
        return self.client.start_workers(kind, count, **options)

    def stop_worker(self, worker_id: str) -> None:
        self.client.stop_worker(worker_id)

    def cancel_job(self, job_id: str) -> None:
        self.client.cancel_job(job_id)

    def __repr__(self) -> str:
        return f"<ManagerSource {self.client.url}>"


#: seconds between two status polls while waiting for a run
POLL = 0.2


def open_source(home: str | Path | None = None, *, manager: bool | None = None
                ) -> ManagerSource | EmbeddedSource:
    """The run interface of a Kale home: its manager when one runs (``manager=None``), or
    always (``True``: started if need be), or never (``False``: its store)."""
    from kale.client.local import EmbeddedSource
    from kale.manager import service

    path = kale_home(home)
    if manager is None:
        manager = service.state(path) is not None
    elif manager:
        service.start(path)
    if not manager:
        return EmbeddedSource(path)
    return ManagerSource(Client(home=path), owns_client=True)
