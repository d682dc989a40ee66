"""The manager as a real process: start/status/stop, token auth, submitting from Python,
and a run that outlives the process that submitted it."""

from __future__ import annotations

import json
import shlex
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Kale, gate_sh, wait_until
from kale import Client, Workflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def manager(kale: Kale, home: Path) -> Iterator[dict]:
    out = kale("manager", "start", "--port", str(free_port()))
    assert out.returncode == 0, out.stderr
    doc = json.loads(kale("manager", "status", "--json").stdout)
    yield doc
    kale("manager", "stop")


def test_start_status_stop_and_token_file(kale: Kale, home: Path, manager: dict) -> None:
    assert manager["url"].startswith("https://127.0.0.1:") and manager["pid"] > 0
    token = home / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    # a second start finds the running manager
    again = kale("manager", "start")
    assert again.returncode == 0 and again.stdout.strip() == manager["url"]
    assert kale("manager", "stop").stdout.strip() == "stopped"
    status = kale("manager", "status", "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["pid"] is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(manager["url"] + "/health", timeout=2, verify=_pinned(home))


def _pinned(home: Path) -> Any:
    from kale.tls import client_context

    return client_context((home / "tls" / "manager.crt").read_text())


def test_every_endpoint_but_health_needs_the_token(home: Path, manager: dict) -> None:
    url = manager["url"]
    # TLS, trusting this home's certificate
    with httpx.Client(verify=_pinned(home)) as http:
        assert http.get(url + "/health").json()["status"] == "ok"
        assert http.get(url + "/api/runs").status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert http.get(url + "/api/runs", headers=bad).status_code == 401
        assert http.post(url + "/api/runs", json={}, headers=bad).status_code == 401
        good = {"Authorization": "Bearer " + (home / "token").read_text().strip()}
        assert http.get(url + "/api/runs", headers=good).json() == []
        # malformed and oversized requests get 4xx with a message, never 5xx
        r = http.post(url + "/api/runs", json={"workflow": "x"}, headers=good)
        assert r.status_code == 422 and "detail" in r.json()
        r = http.post(url + "/api/runs", headers=good,
                      json={"workflow": {"name": "x", "tasks": {"a": {}}}, "base_dir": "/"})
        assert r.status_code == 422 and "needs one of" in r.json()["detail"]
        assert http.get(url + "/api/runs/nope", headers=good).status_code == 404
        r = http.post(url + "/api/runs", headers=good, content=b" " * (17 * 1024 * 1024))
        assert r.status_code == 413


def test_submit_from_python_and_read_results(home: Path, manager: dict, tmp_path: Path) -> None:
    with Client() as client:
        submit_and_read(client, tmp_path)


def test_submitting_a_task_instead_of_its_workflow_says_so(home: Path, manager: dict) -> None:
    """``client.submit(wf.shell(...))`` (the task, not the workflow) is a usage error that
    names what was given, not an AttributeError from deep inside; nothing is submitted."""
    from kale.errors import UsageError

    wf = Workflow("mistake")
    task = wf.shell("hello", "echo hello")
    with Client() as client:
        with pytest.raises(UsageError, match="submit takes a Workflow, not Task"):
            client.submit(task)  # type: ignore[arg-type]
        assert client.runs() == []


def submit_and_read(client: Client, tmp_path: Path) -> None:
    wf = Workflow("remote", base_dir=tmp_path)
    wf.shell("hello", "echo hello from the manager")

    @wf.python(after=["hello"])
    def numbers():
        return {"squares": [i * i for i in range(4)], "set": {1, 2}}

    run = client.submit(wf).wait(timeout=120)
    assert run.state.value == "SUCCEEDED", run.status()
    assert run.logs("hello") == "hello from the manager\n"
    assert run.result("numbers") == {"squares": [0, 1, 4, 9], "set": {1, 2}}
    assert [r["id"] for r in client.runs()] == [run.id]


def test_run_outlives_the_process_that_submitted_it(kale: Kale, home: Path, manager: dict,
                                                    tmp_path: Path) -> None:
    script = tmp_path / "submit.py"
    script.write_text(
        "import kale\n"
        "wf = kale.Workflow('detached')\n"
        "wf.shell('slow', 'sleep 1; echo done')\n"
        "with kale.Client() as client:\n"
        "    print(client.submit(wf).id)\n")
    out = subprocess.run([sys.executable, str(script)], env=kale.env(), capture_output=True,
                         text=True, timeout=120, check=True)
    run_id = out.stdout.strip()
    # the submitting process is gone; a new client re-attaches by id
    with Client() as client:
        run = client.run(run_id).wait(timeout=120)
        assert run.state.value == "SUCCEEDED"
        assert run.logs("slow") == "done\n"
    # the CLI sees the same store
    status = json.loads(kale("status", run_id, "--json").stdout)
    assert status["run"]["state"] == "SUCCEEDED"


def test_cancel_through_the_manager(home: Path, manager: dict, tmp_path: Path) -> None:
    with Client() as client:
        cancel_through(client, tmp_path)


def cancel_through(client: Client, tmp_path: Path) -> None:
    wf = Workflow("cancel-remote")
    wf.shell("nap", gate_sh(tmp_path / "never"))  # runs until cancelled
    run = client.submit(wf)
    wait_until(lambda: run.status()["tasks"][0]["state"] == "RUNNING", what="nap RUNNING")
    assert run.cancel() == "CANCELLED"
    assert run.status()["tasks"][0]["state"] == "CANCELLED"


def test_status_lists_only_the_tasks_in_the_states_asked_for(
        home: Path, manager: dict, tmp_path: Path) -> None:
    """`GET /api/runs/RUN?states=...` lists only the tasks in those states (what `kale
    status` of a big run asks for), with the counts of every task; an unknown state is a
    422 that names it."""
    gate = tmp_path / "gate"
    wf = Workflow("some-states")
    wf.shell("held", gate_sh(gate))
    wf.shell("ok", "true")
    wf.shell("broken", "exit 3")
    with Client() as client:
        run = client.submit(wf)
        want = {"held": "RUNNING", "ok": "SUCCEEDED", "broken": "FAILED"}
        wait_until(lambda: {t["name"]: t["state"] for t in run.status()["tasks"]} == want,
                   what="held running, ok succeeded, broken failed")
        doc = client.status(run.id, states=["RUNNING", "FAILED"])
        assert sorted(t["name"] for t in doc["tasks"]) == ["broken", "held"]
        assert doc["counts"] == {"RUNNING": 1, "SUCCEEDED": 1, "FAILED": 1}
        assert doc["maps"] == {}  # each map's members per state: this run has no map
        assert "maps" not in client.status(run.id)  # every task listed: they tell it
        assert client.status(run.id, states=[])["tasks"] == []
        first = client.status(run.id, states=["RUNNING", "SUCCEEDED", "FAILED"], limit=2)
        assert [t["name"] for t in first["tasks"]] == ["held", "ok"]
        assert first["counts"] == doc["counts"]
        whole = client.states(run.id)  # every state, and nothing else of the tasks
        assert (whole["states"], whole["conditions"]) == (want, {})
        assert whole["run"]["id"] == run.id and whole["last_event"] >= doc["last_event"]
        url = f"{manager['url']}/api/runs/{run.id}"
        good = {"Authorization": "Bearer " + (home / "token").read_text().strip()}
        with httpx.Client(verify=_pinned(home), headers=good) as http:
            r = http.get(url, params={"states": "succeeded"})
            assert [t["name"] for t in r.json()["tasks"]] == ["ok"]
            r = http.get(url, params={"states": "RUNNING,BOGUS"})
            assert r.status_code == 422, r.text
            assert "BOGUS" in r.json()["detail"] and "RUNNING" in r.json()["detail"]
            assert http.get(url, params={"limit": "-1"}).status_code == 422
        gate.touch()
        assert run.wait(timeout=120).state.value == "FAILED"


def test_event_stream_delivers_states_and_log_lines_while_the_task_runs(
        home: Path, manager: dict, tmp_path: Path) -> None:
    wf = Workflow("events")
    # After each line the task waits until the test has seen that line on the stream: it
    # ends only if every line is delivered while it runs (not, say, once it has ended).
    # (It gives up after 120 s, so that a failed test leaves no process behind.)
    seen = f"{shlex.quote(str(tmp_path))}/seen-$i"
    wf.shell("talk", f"for i in 1 2 3; do echo line $i; n=0; until [ -e {seen} ]; do "
                     "[ $n -lt 1200 ] || exit 99; n=$((n+1)); sleep 0.1; done; done")
    with Client() as client:
        run = client.submit(wf)
        states, lines, end = [], [], None
        for event, data in client.events(run.id):
            if event == "state" and data["task"] == "talk":
                states.append(data["new"])
            elif event == "log":
                lines.append(data["line"])
                (tmp_path / f"seen-{data['line'].split()[-1]}").touch()
            elif event == "end":
                end = data["state"]
    assert lines == ["line 1", "line 2", "line 3"]
    assert states == ["READY", "SUBMITTED", "RUNNING", "SUCCEEDED"]
    assert end == "SUCCEEDED"


def test_open_event_streams_do_not_hold_up_the_managers_stop(
        kale: Kale, home: Path, manager: dict, tmp_path: Path) -> None:
    """A dashboard's event stream and a following `kale run` are open when the manager is
    told to stop: it stops at once and cleanly (no SIGKILL, its files removed); the
    stream ends without the run's ``end`` (the run goes on when a manager is back), and
    `kale run` says it lost the manager instead of reporting a run that did not end."""
    import threading

    gate = tmp_path / "never"
    wf = tmp_path / "held.yaml"
    wf.write_text(f"name: held\ntasks:\n  nap:\n    shell: {shlex.quote(gate_sh(gate))}\n")
    with kale.popen("run", str(wf)) as follower, Client() as client:
        assert follower.stdout is not None
        run_id = follower.stdout.readline().strip()
        wait_until(lambda: client.status(run_id, tasks=False)["counts"].get("RUNNING") == 1,
                   what="nap RUNNING")
        seen: list[str] = []
        stream = threading.Thread(target=lambda: seen.extend(
            event for event, _ in client.events(run_id)), daemon=True)
        stream.start()
        wait_until(lambda: "state" in seen, what="the stream began")
        out = kale("manager", "stop")
        assert out.returncode == 0 and out.stdout.strip() == "stopped", out
        stream.join(30)
        assert not stream.is_alive() and "end" not in seen
        _, err = follower.communicate(timeout=60)
        assert follower.returncode == 1, err
        assert f"lost the manager while following run {run_id}" in err
    for left in ("manager.json", "manager.sock", "status.sock"):
        assert not (home / left).exists(), left
    assert json.loads(kale("status", run_id, "--json").stdout)["run"]["state"] == "RUNNING"


STARTER = """
import os, sys, time
from pathlib import Path
from kale.manager import service
home = Path(sys.argv[1])
first = service.start(home, workers=0)["pid"]
service.stop(home)
end = time.monotonic() + 60  # reaped by this process, which lives on: no zombie left
while os.path.exists(f"/proc/{first}") and time.monotonic() < end:
    time.sleep(0.05)
print("reaped" if not os.path.exists(f"/proc/{first}") else "zombie", flush=True)
print(service.start(home, workers=0)["pid"], flush=True)
"""


def test_a_process_that_starts_a_manager_reaps_it_and_exits_leaving_it_unremarked(
        tmp_path: Path) -> None:
    # A notebook that starts a manager and stops it keeps no zombie; one that exits while
    # its manager runs (the manager is meant to outlive it) says nothing about it
    # (a Popen object held until exit used to warn "subprocess N is still running").
    from kale.manager import service

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    out = subprocess.run([sys.executable, "-W", "always::ResourceWarning", "-c", STARTER,
                          str(home)], capture_output=True, text=True, timeout=180)
    try:
        assert out.returncode == 0, out.stderr
        said, pid = out.stdout.split()
        assert said == "reaped"
        assert "ResourceWarning" not in out.stderr and "still running" not in out.stderr
        doc = service.state(home)
        assert doc is not None and doc["pid"] == int(pid) and service.healthy(doc)
    finally:
        service.stop(home)
