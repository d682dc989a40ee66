"""Manager and workers as real processes: tasks run on workers, resources are sampled,
tasks are suspended and resumed, and the faults the issue names are real faults: a
SIGKILLed worker, a SIGKILLed manager, a manager frozen (SIGSTOP) for 30 s."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Kale, Manager, busy_py, gate_sh, process_alive, wait_until
from kale import Client, Workflow
from kale.worker.protocol import HEARTBEAT_TIMEOUT

pytestmark = pytest.mark.slow


def task(client: Client, run_id: str, name: str) -> dict[str, Any]:
    return next(t for t in client.status(run_id)["tasks"] if t["name"] == name)


def states(client: Client, run_id: str) -> dict[str, str]:
    return {t["name"]: t["state"] for t in client.status(run_id)["tasks"]}


def task_processes(run_id: str, name: str) -> list[int]:
    """The live processes of task ``name`` of run ``run_id``: every task process carries
    KALE_RUN_ID and KALE_TASK in its environment."""
    want = {f"KALE_RUN_ID={run_id}".encode(), f"KALE_TASK={name}".encode()}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= env:
            pids.append(int(entry.name))
    return pids


def proc_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (R, S, T stopped, Z...); "gone" if it ended."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def ledger_workflow(name: str, path: Path, gate: Path, tasks: int,
                    quick: int = 0) -> Workflow:
    """Tasks ``t0``, ``t1``, ... that write their name to the ledger ``path`` when they end: the
    ledger shows which tasks finished, and a task that ran twice shows twice. The first
    ``quick`` tasks end at once; the others wait until the test creates ``gate``, so they
    are still running whenever the test acts on them, however slow the machine."""
    wf = Workflow(name)
    for i in range(tasks):
        wait = "" if i < quick else gate_sh(gate) + "; "
        wf.shell(f"t{i}", f"{wait}echo t{i} >> {path}")
    return wf


def ledger(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait_gone(pid: int) -> None:
    """Until process ``pid`` has ended (a killed manager, say, releasing its port)."""
    wait_until(lambda: not process_alive(pid), 60, f"process {pid} to end")


def test_default_heartbeat_timeout_is_at_most_15_s() -> None:
    assert HEARTBEAT_TIMEOUT <= 15


def test_tasks_run_on_a_worker_with_resource_samples(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    m = managers("--workers", "0", "--sample-interval", "0.3")
    worker = kale.popen("worker", "--slots", "2", "--id", "w-one")
    gate = tmp_path / "gate"
    try:
        wf = Workflow("on-workers", base_dir=tmp_path)
        # Busy until the test has seen it sampled busy (how much CPU a loaded machine gives
        # it in a fixed time is not up to the test).
        wf.shell("burn", [sys.executable, "-c",
                          f"x = bytearray(60_000_000)\n{busy_py(gate)}print('burnt')"])

        @wf.python(after=["burn"])
        def double(n: int = 21) -> int:
            return 2 * n

        with m.client() as client:
            run = client.submit(wf)
            wait_until(lambda: any(s["cpu"] > 30 and s["rss"] > 50_000_000
                                   for s in client.resources(run.id, "burn")),
                       what="a sample of the busy task, busy and holding its 60 MB")
            gate.touch()
            assert run.wait(120).state.value == "SUCCEEDED", client.status(run.id)
            assert run.result("double") == 42
            assert run.logs("burn").strip() == "burnt"
            workers = client.workers()
            assert [w["id"] for w in workers] == ["w-one"] and workers[0]["connected"]
            samples = client.resources(run.id, "burn")
            streamed = [d for e, d in client.events(run.id)
                        if e == "resources" and d["task"] == "burn"]
        assert [s["id"] for s in streamed] == [s["id"] for s in samples]  # also on the stream
        assert max(s["cpu"] for s in samples) > 30
        assert max(s["rss"] for s in samples) > 50_000_000
        assert all(s["procs"] >= 1 and s["attempt"] == 1 for s in samples)
        assert kale.attempts(run.id, "burn")[0]["worker"] == "w-one"
    finally:
        gate.touch()
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=60)
        assert worker.returncode == 0, log


def test_worker_tokens_only_open_the_worker_link(
        kale: Kale, home: Path, managers: Callable[..., Manager]) -> None:
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    m = managers("--workers", "0")
    assert httpx.get(m.url + "/api/runs", headers=m.headers("worker-token"),
                     verify=m.tls).status_code == 401
    assert httpx.get(m.url + "/api/runs", headers=m.headers(), verify=m.tls).status_code == 200

    async def link(headers: dict[str, str]) -> str:
        try:
            async with connect(m.ws_url, additional_headers=headers, ssl=m.tls) as ws:
                await ws.send(json.dumps({"op": "hello", "worker": "probe", "slots": 0}))
                return str(json.loads(await ws.recv())["op"])
        except (InvalidStatus, WebSocketException) as e:
            return f"refused: {e}"

    assert asyncio.run(link(m.headers("worker-token"))) == "welcome"
    assert asyncio.run(link(m.headers())).startswith("refused")
    assert asyncio.run(link({})).startswith("refused")


def test_suspend_and_resume_a_task(kale: Kale, home: Path, tmp_path: Path,
                                   managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    gate = tmp_path / "gate"
    wf = Workflow("pause")
    # Counts until the test opens the gate: it is still counting whenever the test acts.
    # (It gives up after 3000 lines, so that a failed test leaves no process behind.)
    wf.shell("count", f"i=0; until [ -e {gate} ] || [ $i -ge 3000 ]; do echo $i; "
                      "i=$((i+1)); sleep 0.1; done")

    def lines() -> int:
        return client.logs(run.id, "count").count("\n")

    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: task(client, run.id, "count")["state"] == "RUNNING", what="RUNNING")
        wait_until(lambda: lines() >= 3, what="output")
        out = kale("suspend", run.id, "count")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: task(client, run.id, "count")["state"] == "SUSPENDED",
                   what="SUSPENDED")
        # Every process of the task is stopped (or already a zombie): none can write now.
        wait_until(lambda: (pids := task_processes(run.id, "count"))
                   and all(proc_state(p) in ("T", "Z", "gone") for p in pids),
                   60, "the task's processes to stop")
        # So its log stays as it is. (A short look: a slow machine can only make it pass
        # without proving much, never fail, since a stopped process cannot write.)
        before = client.logs(run.id, "count")
        time.sleep(0.5)
        assert client.logs(run.id, "count") == before
        out = kale("resume", run.id, "count")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: lines() > before.count("\n"), what="counting again after resume")
        gate.touch()
        assert run.wait(120).state.value == "SUCCEEDED"
        counted = client.logs(run.id, "count").split()
        assert counted == [str(i) for i in range(len(counted))]  # nothing lost or repeated
        states = [e["new"] for e in _events(m, run.id) if e["task"] == "count"]
        assert "SUSPENDED" in states and states[-1] == "SUCCEEDED"


def _events(m: Manager, run_id: str) -> list[dict[str, Any]]:
    with m.client() as client:
        return [d for e, d in client.events(run_id) if e == "state"]


def test_cancel_one_task_skips_the_tasks_below(kale: Kale, home: Path, tmp_path: Path,
                                               managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    wf = Workflow("cancel-one")
    wf.shell("slow", gate_sh(tmp_path / "never"))  # runs until cancelled
    wf.shell("after", "echo never", after=["slow"])
    wf.shell("other", "echo fine")
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: task(client, run.id, "slow")["state"] == "RUNNING", what="RUNNING")
        out = kale("cancel", run.id, "slow")
        assert out.returncode == 0, out.stderr
        assert run.wait(120).state.value != "RUNNING"
        final = states(client, run.id)
    assert final == {"slow": "CANCELLED", "after": "SKIPPED", "other": "SUCCEEDED"}


def test_sigkill_a_worker_mid_task_retries_it_on_another(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    m = managers("--workers", "2", "--worker-slots", "1", "--heartbeat-timeout", "3")
    marker, gate = tmp_path / "first-attempt", tmp_path / "gate"
    wf = Workflow("lose-a-worker")
    # The first attempt runs until the test opens the gate (it is still running when its
    # worker is killed, however slow the machine); the retry ends at once.
    wf.shell("long", f"if [ -e {marker} ]; then echo done; exit 0; fi; touch {marker}; "
                     f"{gate_sh(gate)}; echo orphan", retries=1)
    try:
        with m.client() as client:
            run = client.submit(wf)
            first = kale.sigkill_worker_of(client, run.id, "long", marker.exists)
            wait_until(lambda: task(client, run.id, "long")["attempts"] == 2, what="the retry")
            assert run.wait(120).state.value == "SUCCEEDED"
            tries = kale.attempts(run.id, "long")
            assert client.logs(run.id, "long").split() == ["done"]
    finally:
        gate.touch()  # the killed worker's task process, if it outlived it, ends
    assert [a["state"] for a in tries] == ["LOST", "SUCCEEDED"]
    assert tries[1]["worker"] != first and "lost" in tries[0]["error"]


def test_sigkill_the_manager_mid_run_loses_nothing_and_reruns_nothing(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path,
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALE_STORE_URL", store_url)  # SQLite and PostgreSQL
    ran, gate = tmp_path / "ran.txt", tmp_path / "gate"
    m = managers("--workers", "2", "--worker-slots", "2")
    # t0 and t1 end at once; t2..t7 wait for the gate: at the kill, two tasks are done,
    # four (as many as there are slots) are running and two wait for a slot (at the
    # manager, or at a worker that took them ahead: those run without the manager too).
    wf = ledger_workflow("survive-the-manager", ran, gate, 8, quick=2)
    wf.shell("last", f"echo last >> {ran}", after=[f"t{i}" for i in range(8)])
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: len(ledger(ran)) == 2
                   and list(states(client, run.id).values()).count("RUNNING") == 4,
                   what="two tasks done and four running")
    pid = int(m.doc["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    gate.touch()  # the running tasks finish while there is no manager
    wait_until(lambda: len(ledger(ran)) >= 6, what="the four running tasks to finish")
    m.start()  # their workers kept the reports; the new manager gets them
    with m.client() as client:
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"
        tasks = client.status(run.id)["tasks"]
    assert sorted(ledger(ran)) == sorted([f"t{i}" for i in range(8)] + ["last"]), ledger(ran)
    assert all(t["attempts"] == 1 for t in tasks), [(t["name"], t["attempts"]) for t in tasks]


def test_a_slow_manager_start_judges_no_worker_lost_before_it_listens(tmp_path: Path) -> None:
    """A restarted manager resumes its runs (from a busy database, say) before it accepts
    connections; its old workers cannot reach it until then, so the heartbeat timeout
    counts from when it listens, not from when it began to start."""
    import asyncio

    from kale.manager.broker import Broker
    from kale.store import workers as wstore
    from kale.store.store import Store

    store = Store(f"sqlite:///{tmp_path / 'kale.db'}")
    wstore.save_worker(store, {"id": "w-old", "user": "alice", "host": "here", "pid": 1,
                               "provider": "local", "slots": 1, "state": "ACTIVE",
                               "started_at": time.time(), "last_seen": time.time(),
                               "info": {}})

    async def restart() -> str:
        broker = Broker(store, heartbeat_timeout=0.2)
        await broker.start()
        # The fault: starting takes ten heartbeat timeouts (runs to resume, a slow store).
        await asyncio.sleep(2.0)
        broker.open()
        state = broker.workers["w-old"].state
        await broker.stop()
        return state

    assert asyncio.run(restart()) == "ACTIVE"


@pytest.mark.timeout(300)
def test_manager_unreachable_for_30_s_the_run_still_completes(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    ran, gate = tmp_path / "ran.txt", tmp_path / "gate"
    m = managers("--workers", "1", "--worker-slots", "2")
    wf = ledger_workflow("frozen-manager", ran, gate, 4)
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: list(states(client, run.id).values()).count("RUNNING") == 2,
                   what="both slots busy")
    pid = int(m.doc["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        gate.touch()  # two tasks end while the manager is frozen: their reports wait
        wait_until(lambda: len(ledger(ran)) == 2, what="the running tasks to finish")
        # The fault itself: frozen for 30 s, twice the heartbeat timeout (the length of
        # the freeze is what is tested here, not a wait for something to happen).
        time.sleep(30)
    finally:
        os.kill(pid, signal.SIGCONT)
    with m.client() as client:
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"
        tasks = client.status(run.id)["tasks"]
    assert sorted(ledger(ran)) == [f"t{i}" for i in range(4)]
    assert all(t["attempts"] == 1 for t in tasks)


def test_kale_run_submits_to_the_running_manager(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    managers("--workers", "1")
    spec = tmp_path / "wf.yaml"
    spec.write_text("name: via-manager\ntasks:\n  hello:\n    shell: echo hi\n"
                    "  bye:\n    shell: echo bye\n    after: [hello]\n")
    out = kale("run", str(spec))
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert "hello RUNNING" in out.stderr and "SUCCEEDED" in out.stderr
    assert kale.attempts(run_id, "bye")[0]["worker"]  # ran on a worker
    out = kale("run", str(spec), "--embedded", "--force")
    assert out.returncode == 0, out.stderr
    assert kale.attempts(out.stdout.strip(), "bye")[0]["worker"] is None


def test_worker_command_errors_are_clear(kale: Kale, home: Path) -> None:
    out = kale("worker")
    assert out.returncode == 2 and "no manager is running" in out.stderr
    out = kale("worker", "--manager", "localhost:1")
    assert out.returncode == 2 and "expected an https://" in out.stderr


def test_chunked_oversized_body_is_refused(managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * (1024 * 1024)

    r = httpx.post(m.url + "/api/runs", headers=m.headers(), content=chunks(), verify=m.tls)
    assert r.status_code == 413 and "over" in r.json()["detail"]



def _link(m: Manager, token: str = "worker-token") -> Any:
    from websockets.sync.client import connect

    return connect(m.ws_url, additional_headers=m.headers(token), ssl=m.tls)


_backlog: list[dict[str, Any]] = []


def _recv(ws: Any, part: str, timeout: float = 60) -> Any:
    """The next ``welcome`` message, or part (``tasks``, ``acks``) of a ``batch``; other
    parts wait in a backlog for their turn."""
    for i, (name, value) in enumerate(_backlog):
        if name == part:
            del _backlog[i]
            return value
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if msg["op"] == part:
            return msg
        found = None
        for name, value in msg.items():
            if name == part and found is None:
                found = value
            elif name != "op":
                _backlog.append((name, value))
        if found is not None:
            return found


def test_a_report_delivered_twice_is_applied_once(
        kale: Kale, home: Path, managers: Callable[..., Manager]) -> None:
    """The test speaks the worker protocol itself, to deliver a report three times: twice
    at once, and once more after the manager acknowledged it."""
    m = managers("--workers", "0")
    _backlog.clear()
    with _link(m) as ws:
        ws.send(json.dumps({"op": "hello", "worker": "twice", "slots": 1, "running": [],
                            "reports": []}))
        assert _recv(ws, "welcome")["forget"] == []
        wf = Workflow("twice")
        wf.shell("a", "echo a")
        wf.shell("b", "echo b", after=["a"])
        with m.client() as client:
            run = client.submit(wf)
            offered = _recv(ws, "tasks")
            assert [i["key"] for i in offered] == [[run.id, "a", 1]]
            report = {"seq": 1, "key": [run.id, "a", 1], "how": "done", "ok": True,
                      "exit_code": 0, "result": None}
            ws.send(json.dumps({"op": "sync", "reports": [report, report], "credit": 1}))
            assert 1 in _recv(ws, "acks")
            ws.send(json.dumps({"op": "sync", "reports": [report], "credit": 0}))
            assert 1 in _recv(ws, "acks")  # acknowledged again, applied never
            # a report for an attempt that never was is acknowledged and ignored
            stale = {**report, "seq": 2, "key": [run.id, "a", 7], "ok": False}
            ws.send(json.dumps({"op": "sync", "reports": [stale], "credit": 0}))
            assert 2 in _recv(ws, "acks")
            offered = _recv(ws, "tasks")
            assert [i["key"] for i in offered] == [[run.id, "b", 1]]
            done_b = {**report, "seq": 3, "key": [run.id, "b", 1]}
            ws.send(json.dumps({"op": "sync", "reports": [done_b], "credit": 1}))
            assert run.wait(120).state.value == "SUCCEEDED"
            a_states = [d["new"] for e, d in client.events(run.id)
                        if e == "state" and d["task"] == "a"]
        assert a_states.count("SUCCEEDED") == 1
        assert [t["attempts"] for t in client_status(m, run.id)] == [1, 1]


def client_status(m: Manager, run_id: str) -> list[dict[str, Any]]:
    with m.client() as client:
        return list(client.status(run_id)["tasks"])


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_two_users_on_one_postgresql_manager_see_only_their_own_runs(
        kale: Kale, home: Path, managers: Callable[..., Manager], store_url: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KALE_STORE_URL", store_url)
    m = managers("--workers", "1")
    out = kale("manager", "add-user", "alice")
    assert out.returncode == 0, out.stderr
    alice = json.loads(out.stdout)
    assert kale("manager", "add-user", "alice").returncode == 2  # exists already
    wf = Workflow("mine")
    wf.shell("hi", "echo owner")
    with m.client() as owner:
        own = owner.submit(wf)
        assert own.wait(120).state.value == "SUCCEEDED"
    token_file = tmp_path / "alice-worker-token"
    token_file.write_text(alice["worker_token"])
    worker = kale.popen("worker", "--token-file", str(token_file), "--id", "alice-1")
    try:
        with Client(url=m.url, token=alice["token"],
                    cert=home / "tls" / "manager.crt") as as_alice:
            hers = Workflow("hers")
            hers.shell("hi", "echo alice")
            theirs = as_alice.submit(hers)
            assert theirs.wait(120).state.value == "SUCCEEDED"
            assert [r["id"] for r in as_alice.runs()] == [theirs.id]
            with pytest.raises(Exception, match="404"):
                as_alice.status(own.id)
            assert [w["id"] for w in as_alice.workers()] == ["alice-1"]
            assert as_alice.logs(theirs.id, "hi").strip() == "alice"
            # What the dashboard does, she may do only to her own runs and workers.
            for call in (lambda: as_alice.rerun(own.id, failed=True),
                         lambda: as_alice.workflow(own.id),
                         lambda: as_alice.task(own.id, "hi")):
                with pytest.raises(Exception, match="404"):
                    call()
            with m.client() as owner:
                owners_worker = next(w["id"] for w in owner.workers())
            with pytest.raises(Exception, match="404"):
                as_alice.stop_worker(owners_worker)
            with pytest.raises(Exception, match="409: this manager starts no local"):
                as_alice.start_workers("local", 1)  # the owner's machine, not hers
            assert as_alice.workflow(theirs.id)["tasks"]["hi"] == {"shell": "echo alice"}
            # alice's task ran on alice's worker (the owner's `kale status` on this
            # store does not list her run: it is not his)
            assert as_alice.task(theirs.id, "hi")["attempt_rows"][0]["worker"] == "alice-1"
            assert kale("status", theirs.id).returncode == 2
        with m.client() as owner:
            assert [r["id"] for r in owner.runs()] == [own.id]
            with pytest.raises(Exception, match="404"):
                owner.status(theirs.id)
        # the owner's task ran on the owner's worker
        assert kale.attempts(own.id, "hi")[0]["worker"] != "alice-1"
        # her user token is no worker token, and her worker token opens no API
        assert httpx.get(m.url + "/api/runs", verify=m.tls, headers={
            "Authorization": "Bearer " + alice["worker_token"]}).status_code == 401
        assert httpx.post(m.url + "/api/workers", json={"kind": "local"}, verify=m.tls,
                          headers={"Authorization": "Bearer " + alice["worker_token"]}
                          ).status_code == 401
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)


def test_manager_stop_hands_tasks_back_and_start_resumes_the_run(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    ran, gate = tmp_path / "ran.txt", tmp_path / "gate"
    m = managers("--workers", "1", "--worker-slots", "2")
    wf = ledger_workflow("stop-start", ran, gate, 4)  # running until the test opens the gate
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: task(client, run.id, "t0")["state"] == "RUNNING", what="t0 RUNNING")
    assert kale("manager", "stop").returncode == 0
    doc = json.loads(kale("status", run.id, "--json").stdout)
    assert doc["run"]["state"] == "RUNNING"  # kept for the next manager
    assert not any(t["state"] == "SUCCEEDED" for t in doc["tasks"])
    # The next manager's attempts end at once; an attempt handed back but left running
    # would write to the ledger too (twice in all).
    gate.touch()
    m.start()
    with m.client() as client:
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"
    assert sorted(ledger(ran)) == [f"t{i}" for i in range(4)]
    tries = kale.attempts(run.id, "t0")
    assert [a["state"] for a in tries] == ["INTERRUPTED", "SUCCEEDED"]


def test_live_run_summary_answers_only_its_owner(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """The summary progress bars poll (answered from memory, ahead of the framework)
    says the same as the full status, and refuses whoever does not own the run."""
    m = managers("--workers", "1")
    wf = Workflow("summary")
    wf.shell("nap", gate_sh(tmp_path / "never"))  # runs until cancelled
    wf.shell("after", "true", after=["nap"])
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: task(client, run.id, "nap")["state"] == "RUNNING", what="RUNNING")
        url = f"{m.url}/api/runs/{run.id}?tasks=false"
        fast = httpx.get(url, headers=m.headers(), verify=m.tls)
        assert fast.status_code == 200
        assert fast.json()["counts"] == {"RUNNING": 1, "PENDING": 1}
        assert fast.json()["run"]["id"] == run.id and "tasks" not in fast.json()
        full = client.status(run.id)
        assert {t["state"] for t in full["tasks"]} == {"RUNNING", "PENDING"}
        assert full["counts"] == fast.json()["counts"]
        for bad in ({}, m.headers("worker-token"), {"Authorization": "Bearer nope"}):
            assert httpx.get(url, headers=bad, verify=m.tls).status_code == 401
        run.cancel()


def test_a_one_slot_worker_taking_short_tasks_ahead_runs_one_at_a_time_each_once(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    """A worker of short tasks is sent some beyond its free slots (they wait there for
    one): still never two at once on one slot, every task once, and all succeed."""
    m = managers("--workers", "0")
    worker = kale.popen("worker", "--slots", "1", "--id", "w-single")
    lock, ran = tmp_path / "lock", tmp_path / "ran.txt"
    wf = Workflow("one-slot", base_dir=tmp_path)
    for i in range(40):  # mkdir fails if another task holds the lock: two at once
        wf.shell(f"t{i}", f"mkdir {lock} || exit 9; echo t{i} >> {ran}; rmdir {lock}")
    try:
        with m.client() as client:
            run = client.submit(wf)
            assert run.wait(300).state.value == "SUCCEEDED", client.status(run.id)
            tasks = client.status(run.id)["tasks"]
        assert all(t["state"] == "SUCCEEDED" and t["attempts"] == 1 for t in tasks)
        assert sorted(ledger(ran)) == sorted(f"t{i}" for i in range(40))
        assert {kale.attempts(run.id, f"t{i}")[0]["worker"] for i in (0, 39)} == {"w-single"}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=60)
        assert worker.returncode == 0, log


def test_a_task_context_crosses_the_worker_link_whole(tmp_path: Path) -> None:
    """The context the engine sends a worker for an attempt arrives as it left: the same
    task, paths (as Paths), inputs, upstream results, parameters, environment and pids;
    callbacks set where it was made travel too (pickled by value when they must be)."""
    from kale.tasks.base import TaskContext
    from kale.worker.protocol import decode_context, encode_context

    wf = Workflow("w")
    task = wf.shell("t", "echo ${x}", parameters={"x": 1}, env={"A": "b"})
    seen: list[Any] = []
    ctx = TaskContext(run_id="r1", task=task, attempt=3, workdir=tmp_path / "t",
                      stdout_path=tmp_path / ".logs" / "t.3.out",
                      stderr_path=tmp_path / ".logs" / "t.3.err", base_dir=tmp_path,
                      inputs={"x": 1}, upstream={"u": [1, "two"]}, params={"p": 2.5},
                      env={"A": "b", "KALE_TASK": "t"}, pids=[12], on_kernel=seen.append)
    back = decode_context(encode_context(ctx))
    assert isinstance(back.workdir, Path) and isinstance(back.stderr_path, Path)
    assert back.on_kernel is not None
    back.on_kernel({"k": 1})  # a copy of the callback: it appends to a copy of the list
    back.on_kernel, ctx.on_kernel = None, None
    assert (back.task.name, back.task.target, back.task.parameters, back.task.env) == (
        "t", "echo ${x}", {"x": 1}, {"A": "b"})
    back.task = task  # a Task compares by identity
    assert back == ctx
