"""``kale.Client``: the notebook's and the CLI's view of a running manager (httpx)."""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from kale import tls
from kale.config import kale_home
from kale.errors import KaleError, TaskError
from kale.model.states import RunState, TaskState
from kale.model.workflow import Workflow

#: seconds to wait for the manager's answer about the batch queue
QUEUE_TIMEOUT = 75.0


class Client:
    """Talks to the manager of a Kale home (found through ``$KALE_HOME/manager.json`` and
    its token file), or to ``url`` with ``token``.

    On the manager's host, a home's client goes through its Unix socket. Elsewhere, and
    with ``url`` (``https://HOST:PORT``), it speaks TLS and trusts nothing but the
    manager's certificate: ``cert`` (a file, or the PEM text), by default the home's
    ``tls/manager.crt``. A server that fails that check gets no token: the client raises
    a :class:`KaleError` saying so."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 home: str | Path | None = None, timeout: float = 30.0,
                 cert: str | Path | None = None) -> None:
        from kale.manager import service
        from kale.manager.tokens import read_token

        path = kale_home(home)
        uds = None
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
        self._http = httpx.Client(base_url=base, timeout=timeout, transport=transport,
                                  headers={"Authorization":
                                           f"Bearer {token or read_token(path)}"})

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

    def submit(self, wf: Workflow, **options: Any) -> RemoteRun:
        """Send ``wf`` to the manager, which runs it; returns a handle to the run."""
        body = {"workflow": wf.to_dict(for_store=True), "base_dir": str(wf.base_dir),
                **{("from" if k == "from_" else k): v for k, v in options.items()}}
        response = self._check(self._http.post("/api/runs", content=json.dumps(body),
                                               headers={"Content-Type": "application/json"}))
        return RemoteRun(self, response.json()["id"])

    def run(self, run_id: str) -> RemoteRun:
        """Re-attach to a run by id."""
        return RemoteRun(self, self.status(run_id, tasks=False)["run"]["id"])

    def status(self, run_id: str, tasks: bool = True) -> dict[str, Any]:
        """``{"run", "counts"}`` (tasks per state) and, with ``tasks``, ``"tasks"``."""
        return dict(self._get(f"/api/runs/{run_id}", tasks=str(tasks).lower()))

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
              from_: list[str] | None = None, force: bool = False) -> RemoteRun:
        """Run a run's workflow again as a new run: the tasks that did not succeed
        (``failed=True``), a selection (``only``), or everything below ``from_``."""
        body = {"failed": failed, "only": only or [], "from": from_ or [], "force": force}
        response = self._check(self._http.post(f"/api/runs/{run_id}/rerun", json=body))
        return RemoteRun(self, response.json()["id"])

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

    def logs(self, run_id: str, task: str, stream: str = "stdout") -> str:
        return self._check(self._http.get(f"/api/runs/{run_id}/tasks/{task}/logs",
                                          params={"stream": stream})).text

    def events(self, run_id: str, after: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
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

    def __del__(self) -> None:
        # A client dropped without close() (a notebook cell re-run, a view's thread still
        # reading when its client went away) releases its connections, not the collector.
        http = getattr(self, "_http", None)
        if http is not None:
            with contextlib.suppress(Exception):
                http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _local_socket(doc: dict[str, Any]) -> str | None:
    """The manager's Unix socket, if it is on this host (the home may be on a shared file
    system, seen from other hosts too), as a path ``connect`` takes."""
    import os
    import socket

    where = doc.get("socket")
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
    request, its token with it, never left this process)."""

    def __init__(self, url: str, pinned: str, **options: Any) -> None:
        super().__init__(**options)
        self.url, self.pinned = url, pinned
        if options.get("uds"):
            self._pool = tls.unix_pool(options["uds"])

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError as e:
            why = tls.tls_failure(e) if self.pinned else None
            if why is not None:
                raise tls.NotTheManager(self.url, self.pinned, why) from None
            raise


class RemoteRun:
    """A run driven by the manager: survives the notebook that submitted it."""

    def __init__(self, client: Client, run_id: str, *, owns_client: bool = False) -> None:
        self.client, self.id = client, run_id
        self._owns_client = owns_client  # made for this run (``wf.run()``): closed with it

    def __del__(self) -> None:
        if getattr(self, "_owns_client", False):
            self.client.close()

    @property
    def state(self) -> RunState:
        return RunState(self.client.status(self.id, tasks=False)["run"]["state"])

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> RemoteRun:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state.terminal:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(poll)
        return self

    def status(self) -> dict[str, Any]:
        return self.client.status(self.id)

    def result(self, task: str) -> Any:
        return self.client.result(self.id, task)

    def logs(self, task: str, stream: str = "stdout") -> str:
        return self.client.logs(self.id, task, stream)

    def cancel(self) -> str:
        return self.client.cancel(self.id)

    def rerun(self, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None) -> RemoteRun:
        """This run's workflow again, as a new run (see :meth:`Client.rerun`)."""
        return self.client.rerun(self.id, failed=failed, only=only, from_=from_)

    def dashboard(self) -> Any:
        """A live :class:`kale.widgets.Dashboard` of this run (in Jupyter)."""
        from kale.widgets import Dashboard

        return Dashboard(self)

    def __getitem__(self, task: str) -> RemoteTask:
        return RemoteTask(self, task)

    def __repr__(self) -> str:
        return f"<RemoteRun {self.id} {self.state.value}>"


class RemoteTask:
    """One task of a manager run: ``run["simulate"].kernel()`` attaches to its kernel."""

    def __init__(self, run: RemoteRun, name: str) -> None:
        self.run, self.name = run, name

    @property
    def state(self) -> TaskState:
        doc = next(t for t in self.run.status()["tasks"] if t["name"] == self.name)
        return TaskState(doc["state"])

    def kernel(self, *, timeout: float = 10.0) -> Any:
        return self.run.client.kernel(self.run.id, self.name, timeout=timeout)

    def continue_(self) -> dict[str, Any]:
        """Mark this waiting step done: the workflow goes on with what it recorded."""
        return self.run.client.task_action(self.run.id, self.name, "continue")

    def reject(self, reason: str = "") -> dict[str, Any]:
        """Reject this waiting step: it fails and the tasks below it are skipped."""
        return self.run.client.task_action(self.run.id, self.name, "reject", reason or None)

    def result(self) -> Any:
        return self.run.result(self.name)

    def logs(self, stream: str = "stdout") -> str:
        return self.run.logs(self.name, stream)

    def __repr__(self) -> str:
        return f"<RemoteTask {self.run.id}/{self.name}>"
