"""The manager's ``/openapi.json`` is its contract. Every route declares what it answers
(a JSON schema for each status code it may give), and what a real manager answers real
requests, errors included, is what that document says: each answer is validated with
``jsonschema`` against the schema the served document publishes for its route and status.
A route that answers an undeclared status, a key its schema does not name, or a type it
does not say fails here; so does a route without a response schema, and a route of the app
missing from the document.

``/openapi.json`` (served without a token; ``/docs`` is off) is the document checked: it
is what clients and schemathesis (``test_api_fuzz.py``) read. It must equal
``app.openapi()`` of an app built in this process, whose routes are the ones checked for
being described."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from conftest import Manager, gate_sh, wait_until
from kale import Workflow
from test_attach import gate, loop_notebook, started

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: routes whose answer is not JSON: the media type their success is declared with (their
#: errors are JSON like every other route's)
NOT_JSON = {
    ("GET", "/api/runs/{run_id}/events"): "text/event-stream",  # server-sent events
    ("GET", "/api/runs/{run_id}/tasks/{task}/logs"): "text/plain",  # a log's bytes
}
#: routes of the app that OpenAPI does not describe: the document itself, and the worker
#: link, a WebSocket (OpenAPI has no words for one; kale.worker.protocol is its contract)
UNDESCRIBED = {"/openapi.json", "/api/workers/link"}
#: operations whose success needs a batch scheduler: test_batch_routes answers them
NEEDS_A_SCHEDULER = {("POST", "/api/jobs/{job_id}/cancel"), ("GET", "/api/queue")}


class Contract:
    """Sends requests, and checks each answer against the operation's declared response
    for its status code; remembers which operations answered with which statuses."""

    def __init__(self, http: httpx.Client, doc: dict[str, Any]) -> None:
        self.http, self.doc = http, doc
        self.answered: dict[tuple[str, str], set[int]] = {}

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for path, ops in self.doc["paths"].items():
            for method, op in ops.items():
                yield method.upper(), path, op

    def __call__(self, method: str, template: str, *, headers: dict[str, str] | None = None,
                 params: dict[str, Any] | None = None, json_body: Any = None,
                 content: bytes | None = None, **path: str) -> httpx.Response:
        r = self.http.request(method, template.format(**path), params=params, json=json_body,
                              content=content, headers=headers)
        self.check(method, template, r)
        return r

    def check(self, method: str, template: str, r: httpx.Response) -> None:
        op = self.doc["paths"].get(template, {}).get(method.lower())
        assert op is not None, f"{method} {template} is not in /openapi.json"
        declared = op["responses"].get(str(r.status_code))
        assert declared is not None, \
            f"{method} {template} answered {r.status_code}, which it does not declare: {r.text}"
        media = r.headers["content-type"].split(";")[0]
        content = declared.get("content", {})
        assert media in content, f"{method} {template} {r.status_code} answered {media}, " \
                                 f"declared {sorted(content)}"
        instance = r.json() if media == "application/json" else r.text
        # The schema's $refs (#/components/schemas/...) resolve against the document.
        schema = {**content[media]["schema"], "components": self.doc["components"]}
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance),
                        key=lambda e: list(e.absolute_path))
        assert not errors, f"{method} {template} {r.status_code}: " + "; ".join(
            f"at {list(e.absolute_path)}: {e.message}" for e in errors[:5])
        self.answered.setdefault((method, template), set()).add(r.status_code)


@pytest.fixture
def contract(managers: Callable[..., Manager]) -> Iterator[tuple[Manager, Contract]]:
    m = managers("--workers", "1", "--sample-interval", "0.2")
    with httpx.Client(base_url=m.url, verify=m.tls, headers=m.headers(),
                      timeout=60) as http:
        served = http.get("/openapi.json")
        assert served.status_code == 200
        yield m, Contract(http, served.json())


def test_every_route_of_the_app_is_described_with_a_response_schema(
        contract: tuple[Manager, Contract], tmp_path: Path) -> None:
    from kale.manager.app import Settings, create_app

    _m, c = contract
    app = create_app(Settings(home=tmp_path / "other-home"))
    try:
        assert json.loads(json.dumps(app.openapi())) == c.doc  # served: the same document
    finally:
        app.state.kale.store.close()
    described = {(method, path) for method, path, _op in c.operations()}
    for route in _flat(app.routes):
        path = getattr(route, "path", "")
        methods = getattr(route, "methods", None) or {"WEBSOCKET"}
        for method in methods - {"HEAD"}:
            assert (method, path) in described or path in UNDESCRIBED, \
                f"{method} {path} is a route of the app but not in /openapi.json"
    for method, path, op in c.operations():
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert len(ok) == 1, f"{method} {path} declares successes {ok}"
        content = op["responses"][ok[0]].get("content", {})
        media = NOT_JSON.get((method, path), "application/json")
        assert list(content) == [media], f"{method} {path} answers {sorted(content)}"
        assert content[media].get("schema"), f"{method} {path} has no response schema"
        for code in ("401", "404", "422") if path.startswith("/api/") else ():
            assert "application/json" in op["responses"][code]["content"], (method, path, code)


def _flat(routes: list[Any]) -> Iterator[Any]:
    """The app's routes, those of its routers included (FastAPI may list a router as one
    route, with the router's own routes inside)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


def contract_workflow(tmp_path: Path) -> Workflow:
    """``loop``: a notebook that runs until the test opens its gate (a kernel to attach
    to, resource samples, a JSON result); ``hold``: a shell task the test suspends, resumes
    and cancels; ``frac``: a result that is not JSON (a pickle)."""
    wf = Workflow("contract", base_dir=tmp_path, description="the API's contract")
    wf.notebook("loop", str(loop_notebook(tmp_path)))
    wf.shell("hold", gate_sh(tmp_path / "hold-gate"))
    wf.python("fractions:Fraction", name="frac")
    return wf


def test_every_route_answers_what_its_schema_says(
        contract: tuple[Manager, Contract], tmp_path: Path) -> None:
    m, c = contract
    c("GET", "/health")
    c("GET", "/api/runs", headers={"Authorization": "Bearer nope"})  # 401
    c("GET", "/api/runs/{run_id}", run_id="nope")  # 404
    c("POST", "/api/runs", json_body={"workflow": "x"})  # 422, FastAPI's findings
    r = c("POST", "/api/runs", json_body={"workflow": {"name": "x", "tasks": {"a": {}}},
                                          "base_dir": "/"})  # 422, the workflow's problems
    assert r.json()["problems"]
    c("POST", "/api/runs", content=b" " * (17 * 1024 * 1024))  # 413

    wf = contract_workflow(tmp_path)
    run_id = c("POST", "/api/runs", json_body={
        "workflow": wf.to_dict(for_store=True), "base_dir": str(tmp_path)}).json()["id"]
    live_run_routes(c, m, run_id, tmp_path)
    worker_routes(c)
    gate(tmp_path).touch()
    wait_until(lambda: _ended(c.http, run_id), what="the run to end")
    finished_run_routes(c, run_id)

    unanswered = [(method, path) for method, path, _op in c.operations()
                  if not any(200 <= s < 300 for s in c.answered.get((method, path), ()))]
    assert set(unanswered) == NEEDS_A_SCHEDULER, unanswered


def live_run_routes(c: Contract, m: Manager, run_id: str, tmp_path: Path) -> None:
    """While ``loop`` runs in its kernel and ``hold`` waits at its gate."""
    wait_until(started(tmp_path).exists, what="the loop to start")
    wait_until(lambda: c.http.get(f"/api/runs/{run_id}/tasks/loop/kernel").status_code
               == 200, what="the kernel to be announced")
    c("GET", "/api/runs/{run_id}/tasks/{task}/kernel", run_id=run_id, task="loop")
    c("GET", "/api/runs/{run_id}/tasks/{task}/kernel", run_id=run_id, task="frac")  # 404
    c("GET", "/api/runs")
    c("GET", "/api/runs/{run_id}", run_id=run_id)  # every task, from the store
    c("GET", "/api/runs/{run_id}/states", run_id=run_id)
    c("GET", "/api/runs/{run_id}/states", run_id="nope")  # 404
    live = c("GET", "/api/runs/{run_id}", run_id=run_id, params={"tasks": "false"})
    assert "tasks" not in live.json()  # from memory (fastpath.py), the same document
    c("GET", "/api/runs/{run_id}/workflow", run_id=run_id)
    c("GET", "/api/runs/{run_id}/tasks/{task}", run_id=run_id, task="loop")
    wait_until(lambda: c.http.get(f"/api/runs/{run_id}/tasks/loop/resources").json(),
               what="a resource sample of the loop")
    samples = c("GET", "/api/runs/{run_id}/tasks/{task}/resources", run_id=run_id,
                task="loop")
    assert samples.json()
    c("GET", "/api/runs/{run_id}/tasks/{task}/logs", run_id=run_id, task="loop")
    c("GET", "/api/runs/{run_id}/tasks/{task}/result", run_id=run_id, task="loop")  # 409
    wait_until(lambda: _task(c.http, run_id, "hold")["state"] == "RUNNING",
               what="hold to run")
    for action in ("suspend", "resume", "continue", "cancel"):  # continue: 409, not WAITING
        c("POST", "/api/runs/{run_id}/tasks/{task}/{action}", run_id=run_id, task="hold",
          action=action)


def worker_routes(c: Contract) -> None:
    """Workers: list, start a local one, stop it; batch jobs and the queue without a
    scheduler (their errors)."""
    started_ = c("POST", "/api/workers", json_body={"kind": "local", "count": 1}).json()
    pid = started_["pids"][0]
    worker = wait_until(lambda: next((w for w in c.http.get("/api/workers").json()
                                      if w["pid"] == pid and w["connected"]), None),
                        what="the new worker to connect")
    c("GET", "/api/workers")
    c("POST", "/api/workers/{worker_id}/stop", worker_id=worker["id"])
    c("POST", "/api/workers/{worker_id}/stop", worker_id="nope")  # 404
    c("GET", "/api/jobs")
    c("POST", "/api/jobs/{job_id}/cancel", job_id="nope")  # 404
    c("GET", "/api/queue", params={"scheduler": "nope"})  # 400


def finished_run_routes(c: Contract, run_id: str) -> None:
    for task in ("loop", "frac"):  # JSON, and a pickle
        c("GET", "/api/runs/{run_id}/tasks/{task}/result", run_id=run_id, task=task)
    c("GET", "/api/runs/{run_id}", run_id=run_id)
    c("GET", "/api/runs/{run_id}/tasks/{task}", run_id=run_id, task="hold")
    c("GET", "/api/runs/{run_id}/tasks/{task}/logs", run_id=run_id, task="loop",
      params={"stream": "nope"})  # 422
    events = c("GET", "/api/runs/{run_id}/events", run_id=run_id)  # ended: all, then end
    data = [json.loads(line[6:]) for line in events.text.splitlines()
            if line.startswith("data: ")]
    assert data and "event: end" in events.text
    again = c("POST", "/api/runs/{run_id}/rerun", run_id=run_id,
              json_body={"failed": True}).json()["id"]
    c("POST", "/api/runs/{run_id}/cancel", run_id=again)


def _ended(http: httpx.Client, run_id: str) -> dict[str, Any] | None:
    doc: dict[str, Any] = http.get(f"/api/runs/{run_id}", params={"tasks": "false"}).json()
    return doc if doc["run"]["state"] != "RUNNING" else None


def _task(http: httpx.Client, run_id: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = http.get(f"/api/runs/{run_id}/tasks/{name}").json()
    return doc


def test_batch_routes_answer_what_their_schemas_say(
        slurm: str, managers: Callable[..., Manager]) -> None:
    """A pilot job on the real Slurm: the jobs list, the queue (the pilot in it, with what
    Kale submitted it for) and cancelling it."""
    m = managers("--workers", "0")
    with httpx.Client(base_url=m.url, verify=m.tls, headers=m.headers(),
                      timeout=90) as http:
        c = Contract(http, http.get("/openapi.json").json())
        job = c("POST", "/api/workers", json_body={
            "kind": "slurm", "count": 1, "walltime": "00:05:00"}).json()["jobs"][0]
        wait_until(lambda: any(j["id"] == job and j["native_id"]
                               for j in http.get("/api/jobs").json()),
                   what="the pilot to be queued")
        c("GET", "/api/jobs")
        queue = c("GET", "/api/queue", params={"scheduler": "slurm"}).json()
        assert any(j.get("kale", {}).get("id") == job for j in queue["jobs"]), queue
        c("POST", "/api/jobs/{job_id}/cancel", job_id=job)
        assert c.answered.keys() >= NEEDS_A_SCHEDULER
