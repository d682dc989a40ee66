"""Safe on a shared login node (issue 13): what another user's process on the same host can
and cannot do to a Kale manager. Real processes, real sockets. (How clients and workers
reach the manager, the Unix socket and the pinned TLS certificate, and what a server at
the manager's address gets from them: tests/test_transport.py.)"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Kale, Manager, wait_until
from kale import Client, Workflow


class _Squatter(http.server.ThreadingHTTPServer):
    """Another user's server on a port: it answers everything and logs what it is sent."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        squatter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                squatter.seen.append(dict(self.headers))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def squatter() -> Iterator[_Squatter]:
    server = _Squatter()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_taken_port_is_an_error_and_no_token_reaches_its_holder(
        kale: Kale, home: Path, squatter: _Squatter) -> None:
    port = squatter.server_address[1]
    out = kale("manager", "start", "--port", str(port), "--workers", "0")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Address already in use" in out.stderr and "Traceback" not in out.stderr
    assert not (home / "manager.json").exists()
    assert kale("manager", "status").returncode != 0  # no manager is said to run
    # nothing was sent the user's token (nor anything at all)
    assert not any("Authorization" in h or "authorization" in h for h in squatter.seen)


def _home_env(home: Path) -> dict[str, str]:
    import os

    return {**os.environ, "KALE_HOME": str(home), "COLUMNS": "200"}


def test_starting_a_managers_home_twice_at_once_leaves_one_manager(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = [sys.executable, "-m", "kale.cli.main"]
    try:
        starts = [subprocess.Popen([*cli, "manager", "start", "--workers", "0"],
                                   env=_home_env(home), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in starts]
        assert [p.returncode for p in starts] == [0, 0], outs
        doc = json.loads((home / "manager.json").read_text())
        assert _managers_of(home) == [doc["pid"]]
    finally:
        subprocess.run([*cli, "manager", "stop"], env=_home_env(home), capture_output=True,
                       timeout=120)


def _ensure_at_once(home: Path, callers: int) -> tuple[list[str], list[BaseException]]:
    """``callers`` threads released together, each ensuring ``home``'s token."""
    from kale.manager.tokens import ensure_token

    start = threading.Barrier(callers)
    got: list[str] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        start.wait()
        try:
            got.append(ensure_token(home))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ensure) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got, errors


def test_tokens_ensured_at_once_by_many_are_one_whole_token(tmp_path: Path) -> None:
    """The race behind two managers started at once: every caller gets the same whole token,
    none fails on the file another created, and the file is private."""
    from kale.manager.tokens import token_path

    for round_ in range(20):
        home = tmp_path / str(round_)
        home.mkdir(mode=0o700)
        got, errors = _ensure_at_once(home, 8)
        assert errors == []
        assert len(got) == 8 and len(set(got)) == 1 and len(got[0]) >= 40
        assert token_path(home).read_text() == got[0] + "\n"
        assert token_path(home).stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in home.iterdir()) == ["token"]  # no temporary left


def _listening_pid(port: int) -> int | None:
    """The pid of the process with a listening TCP socket on ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = str(fd.readlink())
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def _managers_of(home: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kale.manager.service" in cmd and str(home).encode() in cmd:
            found.append(int(proc.name))
    return found



@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_latest_and_reuse_are_each_users_own_on_a_shared_manager(
        kale: Kale, home: Path, managers: Callable[..., Manager], store_url: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KALE_STORE_URL", store_url)
    m = managers("--workers", "1")
    out = kale("manager", "add-user", "mallory")
    assert out.returncode == 0, out.stderr
    mallory = json.loads(out.stdout)
    token_file = tmp_path / "mallory-worker-token"
    token_file.write_text(mallory["worker_token"])
    worker = kale.popen("worker", "--token-file", str(token_file), "--id", "mallory-1")
    try:
        # mallory runs a workflow with the owner's workflow and task names first
        forged = Workflow("shared-name")
        forged.shell("value", "echo forged > value.txt", outputs=["value.txt"])
        with Client(url=m.url, token=mallory["token"], cert=m.doc["cert"]) as as_mallory:
            hers = as_mallory.submit(forged)
            assert hers.wait(120).state.value == "SUCCEEDED"
        real = Workflow("shared-name")
        real.shell("value", "echo forged > value.txt", outputs=["value.txt"])
        with m.client() as owner:
            own = owner.submit(real)
            assert own.wait(120).state.value == "SUCCEEDED"
            task = owner.task(own.id, "value")
            assert task["reused_from"] is None  # never another user's result
            assert owner.status("latest")["run"]["id"] == own.id
        with Client(url=m.url, token=mallory["token"], cert=m.doc["cert"]) as as_mallory:
            # her latest is her own run, although the owner's is newer
            assert as_mallory.status("latest")["run"]["id"] == hers.id
            with pytest.raises(Exception, match="404"):
                as_mallory.status(own.id[:-1])  # nor does a prefix find the owner's
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_an_added_users_tasks_run_only_on_that_users_own_workers(
        kale: Kale, home: Path, managers: Callable[..., Manager], store_url: str,
        slurm: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The manager's own workers and batch jobs run as its owner: bob's tasks wait, saying
    so, until a worker of bob's connects; no job is submitted for bob's batch task."""
    from kale.store import workers as wstore
    from kale.store.store import Store

    monkeypatch.setenv("KALE_STORE_URL", store_url)
    m = managers("--workers", "1")
    bob = json.loads(kale("manager", "add-user", "bob").stdout)
    wf = Workflow("bobs")
    wf.shell("plain", "echo bob")
    wf.shell("batch", "echo never", executor="slurm")
    with Client(url=m.url, token=bob["token"], cert=m.doc["cert"]) as as_bob:
        run = as_bob.submit(wf)
        said = wait_until(lambda: as_bob.status(run.id).get("problems"),
                          what="the run to say what it waits for")
        assert "waiting for a worker of bob's" in said[0], said
        # queued (the store may lag the engine's counts by a commit), and the owner's
        # worker takes neither
        wait_until(lambda: {t["name"]: t["state"] for t in as_bob.status(run.id)["tasks"]}
                   == {"plain": "SUBMITTED", "batch": "SUBMITTED"},
                   what="bob's tasks queued in the store")
        store = Store(store_url)
        try:
            assert wstore.jobs(store) == []  # nothing submitted to Slurm for bob
        finally:
            store.close()
        token_file = tmp_path / "bob-worker-token"
        token_file.write_text(bob["worker_token"])
        worker = kale.popen("worker", "--token-file", str(token_file), "--id", "bob-1")
        try:
            wait_until(lambda: as_bob.task(run.id, "plain")["state"] == "SUCCEEDED",
                       what="bob's task to run on bob's worker")
            attempts = as_bob.task(run.id, "plain")["attempt_rows"]
            assert [a["worker"] for a in attempts] == ["bob-1"], attempts
            assert as_bob.task(run.id, "batch")["state"] == "SUBMITTED"
            as_bob.cancel(run.id)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)
    with Client(url=m.url, token=bob["token"], cert=m.doc["cert"]) as as_bob, \
            pytest.raises(Exception, match="pilots this manager submits run as its owner"):
        as_bob.start_workers("slurm", count=1)
    # the owner's pilot is in the queue the owner sees, not in bob's
    with m.client() as owner, \
            Client(url=m.url, token=bob["token"], cert=m.doc["cert"]) as as_bob:
        job = owner.start_workers("slurm", count=1, walltime="00:01:00")["jobs"][0]
        try:
            wait_until(lambda: any((j.get("kale") or {}).get("id") == job
                                   for j in owner.queue()["jobs"]),
                       what="the owner's pilot in the owner's queue")
            assert as_bob.queue()["jobs"] == []
        finally:
            owner.cancel_job(job)


# -- bad input stays bad input ----------------------------------------------------------
def test_a_billion_laughs_file_is_refused(kale: Kale, tmp_path: Path) -> None:
    lines = ["name: lol", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    lines += ["tasks:", "  t:", "    shell: echo", "    parameters: {p: *a9}"]
    wf = tmp_path / "laughs.yaml"
    wf.write_text("\n".join(lines) + "\n")  # 10^10 values once expanded
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert "aliases expand this document to more than" in out.stderr
    assert "Traceback" not in out.stderr


def test_deep_nesting_is_a_message_not_a_traceback(kale: Kale, tmp_path: Path) -> None:
    for depth in (100, 5000):
        wf = tmp_path / f"deep{depth}.yaml"
        wf.write_text("name: deep\ntasks:\n  t:\n    shell: echo\n    parameters: {p: "
                      + "[" * depth + "]" * depth + "}\n")
        out = kale("validate", str(wf))
        assert out.returncode == 2, out.stderr
        assert "nested more than 64 levels deep" in out.stderr
        assert "Traceback" not in out.stderr


def test_api_docs_are_off_and_huge_offsets_are_4xx(
        kale: Kale, managers: Callable[..., Manager], tmp_path: Path) -> None:
    import httpx

    m = managers("--workers", "1")
    for page in ("/docs", "/redoc"):
        assert httpx.get(m.url + page, verify=m.tls).status_code == 404
    wf = Workflow("logs")
    wf.shell("hi", "echo hi")
    with m.client() as client:
        run = client.submit(wf)
        assert run.wait(120).state.value == "SUCCEEDED"
    for path, query in ((f"/api/runs/{run.id}/tasks/hi/logs", "offset"),
                        (f"/api/runs/{run.id}/tasks/hi/resources", "after"),
                        (f"/api/runs/{run.id}/events", "after")):
        for value in ("99999999999999999999999", "-1"):
            r = httpx.get(m.url + path, params={query: value}, headers=m.headers(),
                          verify=m.tls)
            assert r.status_code == 422, (path, value, r.status_code, r.text)


def test_an_existing_home_readable_by_others_is_made_private(tmp_path: Path) -> None:
    import os

    home = tmp_path / "open-home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    out = subprocess.run([sys.executable, "-m", "kale.cli.main", "runs"], env=_home_env(home),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert os.stat(home).st_mode & 0o777 == 0o700
    assert "made it private" in out.stderr


# -- users kept apart in a shared manager --------------------------------------------------
ADDS_ON_DASK = """
import kale


def plan():
    sub = kale.Workflow("more")
    sub.python(square, name="sq", parameters={"x": 7}, executor="dask")
    kale.add_tasks(sub)


def square(x):
    return x * x
"""


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_an_added_user_cannot_run_on_the_owners_workflow_engines(
        kale: Kale, home: Path, managers: Callable[..., Manager], store_url: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Dask or Parsl executor runs in the manager, as its owner: bob's run that names
    one is refused with a message and nothing recorded (a task of his, the run's
    executor, a rerun); a task of his that adds a task on Dask fails, saying why."""
    monkeypatch.setenv("KALE_STORE_URL", store_url)
    (tmp_path / "eng.py").write_text(ADDS_ON_DASK)
    m = managers("--workers", "0")
    bob = json.loads(kale("manager", "add-user", "bob").stdout)
    on_task = Workflow("on-task", base_dir=tmp_path)
    on_task.shell("plain", "echo bob")
    on_task.python("eng:square", name="sq", parameters={"x": 2}, executor="parsl")
    plain = Workflow("plain", base_dir=tmp_path)
    plain.python("eng:plan", name="plan")
    with Client(url=m.url, token=bob["token"], cert=m.doc["cert"]) as as_bob:
        with pytest.raises(Exception, match=r"names the engine parsl \(sq\): workflow "
                                            r"engines .* run as this manager's owner"):
            as_bob.submit(on_task)
        with pytest.raises(Exception, match=r"names the engine dask \(plan\)"):
            as_bob.submit(plain, executor="dask")
        assert as_bob.runs() == []  # nothing recorded
        token_file = tmp_path / "bob-worker-token"
        token_file.write_text(bob["worker_token"])
        worker = kale.popen("worker", "--token-file", str(token_file), "--id", "bob-1")
        try:
            run = as_bob.submit(plain)
            wait_until(lambda: as_bob.task(run.id, "plan")["state"] == "FAILED",
                       what="bob's task that adds a task on Dask to fail")
            error = as_bob.task(run.id, "plan")["error"]
            assert "names the engine dask (plan[sq])" in error, error
            assert "only the owner's runs may use them" in error, error
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_another_users_worker_cannot_finish_claim_or_speak_for_the_owners_task(
        kale: Kale, home: Path, managers: Callable[..., Manager], store_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bob's worker speaks the worker protocol for the owner's queued attempt: a claim, a
    SUCCEEDED report, kernel info, samples. None of it counts."""
    import time

    from websockets.sync.client import connect

    monkeypatch.setenv("KALE_STORE_URL", store_url)
    m = managers("--workers", "0")
    bob = json.loads(kale("manager", "add-user", "bob").stdout)
    wf = Workflow("owners")
    wf.shell("a", "echo a")
    with m.client() as owner:
        run = owner.submit(wf)
        key = [run.id, "a", 1]
        wait_until(lambda: owner.task(run.id, "a")["state"] == "SUBMITTED",
                   what="the owner's attempt to be queued")
        headers = {"Authorization": "Bearer " + bob["worker_token"]}
        with connect(m.ws_url, additional_headers=headers, ssl=m.tls) as ws:
            ws.send(json.dumps({"op": "hello", "worker": "bob-1", "slots": 1, "running": [key],
                                "reports": []}))
            assert json.loads(ws.recv(timeout=60))["op"] == "welcome"
            forged = {"seq": 1, "key": key, "how": "done", "ok": True, "exit_code": 0,
                      "result": None}
            ws.send(json.dumps({
                "op": "sync", "reports": [forged], "credit": 0,
                "kernels": [{"key": key, "info": {"ip": "127.0.0.1", "shell_port": 1,
                                                  "key": "planted"}}],
                "samples": [{"key": key, "ts": time.time(), "cpu": 99.0, "rss": 1}]}))
            # the manager acknowledges the report (so bob stops sending it), and applies
            # nothing of it
            deadline = time.monotonic() + 60
            while True:
                msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                if 1 in (msg.get("acks") or []):
                    break
        task = owner.task(run.id, "a")
        assert task["state"] == "SUBMITTED", task  # still waiting for one of the owner's
        with pytest.raises(Exception, match=r"404|409"):
            owner.kernel_info(run.id, "a")
        assert owner.resources(run.id, "a") == []
        owner.cancel(run.id)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_nul_anywhere_in_a_submitted_workflow_is_refused_and_leaves_nothing(
        home: Path, managers: Callable[..., Manager], store_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setenv("KALE_STORE_URL", store_url)
    m = managers("--workers", "0")
    for doc in ({"name": "a\x00b", "tasks": {"t": {"shell": "echo"}}},
                {"name": "ok", "description": "x\x00", "tasks": {"t": {"shell": "echo"}}},
                {"name": "ok", "tasks": {"t": {"shell": "echo", "tags": ["a\x00"]}}},
                {"name": "ok", "parameters": {"p": "v\x00"}, "tasks": {"t": {"shell": "echo"}}}):
        r = httpx.post(m.url + "/api/runs", headers=m.headers(), verify=m.tls,
                       json={"workflow": doc, "base_dir": str(home)})
        assert 400 <= r.status_code < 500, (doc, r.status_code, r.text)
        assert "NUL" in r.text
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    with m.client() as client:
        assert client.runs() == []


def test_a_port_out_of_range_is_a_message(kale: Kale) -> None:
    for port in ("70000", "-1"):
        out = kale("manager", "start", "--port", port, "--workers", "0")
        assert out.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "0-65535" in out.stderr
        assert "Traceback" not in out.stderr


def _plant(folder: Path, module: str) -> Path:
    """A module another user could leave in a shared folder, named like one Python
    imports at start; it says so in a file (and then gets out of the way)."""
    said = folder / f"{module}-was-imported"
    (folder / f"{module}.py").write_text(
        f"open({str(said)!r}, 'w').close()\n"
        "import sys\n"
        f"sys.modules.pop({module!r}, None)\n"
        f"sys.path[:] = [p for p in sys.path if p not in ('', {str(folder)!r})]\n"
        f"import {module} as _real\n"
        f"sys.modules[__name__] = _real\n")
    return said


def test_a_module_planted_in_the_working_directory_is_not_what_a_python_worker_imports(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A scientist runs Kale from a shared folder (/tmp); another user left json.py there.
    shared = tmp_path / "shared"
    shared.mkdir()
    said = _plant(shared, "inspect")  # (the worker imports it as it starts)
    monkeypatch.chdir(shared)
    monkeypatch.setenv("KALE_WARM_SECONDS", "0")

    def answer() -> int:
        return 42

    wf = Workflow("planted", base_dir=tmp_path)
    wf.python(answer, name="answer")
    run = wf.run().wait()
    assert run.result("answer") == 42
    assert not said.exists()


def test_a_module_planted_where_the_manager_starts_is_not_what_its_processes_import(
        home: Path, tmp_path: Path) -> None:
    """``kale manager start`` from a shared folder: neither the manager nor its status
    line's process imports what another user left there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    said = [_plant(shared, m) for m in ("hashlib", "mmap", "zlib")]  # the status line's
    env = {**os.environ, "KALE_HOME": str(home)}
    cli = [sys.executable, "-P", "-m", "kale.cli.main"]  # the CLI itself: not the test
    started = subprocess.run([*cli, "manager", "start", "--workers", "0"], cwd=shared,
                             env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        token = (home / "token").read_text().strip()
        with httpx.Client(base_url="http://kale", transport=httpx.HTTPTransport(
                uds=str(home / "status.sock")), timeout=30,
                headers={"Authorization": f"Bearer {token}"}) as line:
            assert line.get("/api/runs").status_code == 200  # the line is up, and relays
    finally:
        subprocess.run([*cli, "manager", "stop"], cwd=shared, env=env, timeout=120)
    assert [p.name for p in said if p.exists()] == []


def test_a_module_planted_in_the_shared_temp_folder_is_not_what_a_kernel_imports(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Kernels wait between tasks in a folder of their own, not in /tmp, where another
    # user could leave json.py for the next kernel to start.
    import tempfile

    import nbformat

    shared = tmp_path / "tmp"
    shared.mkdir()
    said = _plant(shared, "json")
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, str(tmp_path / "nb.ipynb"))
    wf = Workflow("planted-kernel", base_dir=tmp_path)
    wf.notebook("nb", "nb.ipynb")
    run = wf.run().wait()
    assert run.state.value == "SUCCEEDED", [t.error for t in run.tasks]
    assert not said.exists()
