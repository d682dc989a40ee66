"""The manager's status line: ``status.sock``, a process of its own that answers a live
run's summary from the status board and passes any other GET to ``manager.sock`` (a real
manager, real sockets, raw HTTP where the framing itself is what is tested, real faults:
the manager stopped or killed, the line killed)."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Kale, Manager, gate_sh, process_alive, wait_until
from kale import Workflow


def line(m: Manager, headers: dict[str, str] | None = None) -> httpx.Client:
    """An HTTP client of ``m``'s status line."""
    return httpx.Client(base_url="http://kale", headers=headers if headers is not None
                        else m.headers(), transport=httpx.HTTPTransport(
                            uds=str(m.home / "status.sock")), timeout=30)


def main(m: Manager) -> httpx.Client:
    """An HTTP client of ``m``'s own socket, ``manager.sock``."""
    return httpx.Client(base_url="http://kale", headers=m.headers(), timeout=30,
                        transport=httpx.HTTPTransport(uds=str(m.home / "manager.sock")))


def raw(m: Manager, request: bytes) -> bytes:
    """Send ``request`` as it is to the status line; everything it answers until it
    closes the connection."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(m.home / "status.sock"))
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_the_status_line_answers_what_manager_sock_answers(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """A live run's summary, a full status, a finished run, a run that is not there and a
    token that is not valid: the same status codes and documents on both sockets, and
    ``Client.status`` (which polls the status line) agrees."""
    m = managers("--workers", "1")
    assert m.doc["status_socket"] == str(home / "status.sock")
    assert (home / "status.sock").stat().st_mode & 0o777 == 0o600
    wf = Workflow("line")
    wf.shell("nap", gate_sh(tmp_path / "never"))  # runs until cancelled
    wf.shell("after", "true", after=["nap"])
    with m.client() as client, line(m) as fast, main(m) as slow:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id, tasks=False)["counts"].get("RUNNING") == 1,
                   what="nap RUNNING")
        here = fast.get(f"/api/runs/{run.id}", params={"tasks": "false"})
        there = slow.get(f"/api/runs/{run.id}", params={"tasks": "false"})
        assert here.status_code == there.status_code == 200
        assert here.json()["counts"] == there.json()["counts"] == {"RUNNING": 1, "PENDING": 1}
        assert here.json()["run"]["id"] == run.id and "tasks" not in here.json()
        full = fast.get(f"/api/runs/{run.id}")  # not the fast path: the app answers it
        assert sorted(t["name"] for t in full.json()["tasks"]) == ["after", "nap"]
        for bad in ({}, m.headers("worker-token"), {"Authorization": "Bearer nope"}):
            with line(m, bad) as other:
                got = other.get(f"/api/runs/{run.id}", params={"tasks": "false"})
                assert got.status_code == 401, got.text
        missing = fast.get("/api/runs/no-such-run", params={"tasks": "false"})
        assert missing.status_code == 404
        assert missing.json() == slow.get("/api/runs/no-such-run",
                                          params={"tasks": "false"}).json()
        run.cancel()
        done = fast.get(f"/api/runs/{run.id}", params={"tasks": "false"})
        assert done.json()["run"]["state"] == "CANCELLED"
        assert done.json() == client.status(run.id, tasks=False)
        assert fast.get("/health").json()["pid"] == m.doc["pid"]


def test_the_status_line_keeps_order_refuses_bodies_and_streams_what_the_app_streams(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """Two requests sent at once on one connection get their answers in order; a request
    with a body, a POST or a WebSocket upgrade is refused with a message that names
    manager.sock; a streamed answer (the run's events) arrives while it streams."""
    m = managers("--workers", "1")
    wf = Workflow("stream")
    wf.shell("hello", "echo hello-from-the-task")
    with m.client() as client:
        run = client.submit(wf)
        assert run.wait(120).state.value == "SUCCEEDED"
    auth = m.headers()["Authorization"].encode()
    two = (b"GET /api/runs/%s HTTP/1.1\r\nHost: kale\r\nAuthorization: %s\r\n\r\n"
           b"GET /health HTTP/1.1\r\nHost: kale\r\nConnection: close\r\n\r\n") % (
               run.id.encode(), auth)
    out = raw(m, two)
    first, second = out.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"200") and b'"hello"' in first
    assert second.startswith(b"200") and b'"status":"ok"' in second.replace(b" ", b"")
    for request in (b"POST /api/runs HTTP/1.1\r\nAuthorization: %s\r\n"
                    b"Content-Length: 2\r\n\r\n{}" % auth,
                    b"DELETE /api/runs/x HTTP/1.1\r\nAuthorization: %s\r\n\r\n" % auth,
                    b"GET /api/workers/link HTTP/1.1\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n",
                    b"NONSENSE\r\n\r\n",
                    b"GET /health HTTP/1.9\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
                    b"GET /health HTTP/1.1\nHost: kale\n\n",  # bare LF
                    b"GET /health HTTP/1.1\r\nX-Big: %s\r\n\r\n" % (b"x" * 30_000)):
        answer = raw(m, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"405", b"400", b"431"), answer[:200]
        if head.split(b" ")[1] == b"405":
            assert "manager.sock" in json.loads(body)["detail"]
    # HTTP/1.0 has no chunks: a streamed answer ends where the connection does
    old = raw(m, b"GET /api/runs/%s/events HTTP/1.0\r\nAuthorization: %s\r\n\r\n"
              % (run.id.encode(), auth))
    head, _, body = old.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert b"event: end" in body and b"SUCCEEDED" in body
    with line(m) as fast, fast.stream("GET", f"/api/runs/{run.id}/events") as events:
        assert events.status_code == 200
        assert events.headers["transfer-encoding"] == "chunked"
        seen = ""
        for text in events.iter_text():
            seen += text
            if "SUCCEEDED" in seen:
                break
    # the manager still answers on both sockets after a client left a stream midway
    with line(m) as fast, main(m) as slow:
        assert fast.get("/health").status_code == slow.get("/health").status_code == 200


def test_a_client_that_stops_reading_does_not_hold_up_the_manager(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """A client holds a stream open on the status line and reads nothing: the manager
    still stops at once when told, exits cleanly and takes its sockets with it."""
    m = managers("--workers", "1")
    wf = Workflow("held")
    wf.shell("nap", gate_sh(tmp_path / "never"))  # runs until the manager stops
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id, tasks=False)["counts"].get("RUNNING") == 1,
                   what="nap RUNNING")
    auth = m.headers()["Authorization"].encode()
    with socket.socket(socket.AF_UNIX) as held:
        held.connect(str(home / "status.sock"))
        held.sendall(b"GET /api/runs/%s/events HTTP/1.1\r\nAuthorization: %s\r\n\r\n"
                     % (run.id.encode(), auth) + b"GET /health HTTP/1.1\r\n\r\n" * 100)
        wait_until(lambda: b"event: state" in held.recv(65536, socket.MSG_PEEK),
                   what="the stream began")
        out = kale("manager", "stop")
        assert out.returncode == 0 and out.stdout.strip() == "stopped", out
        for left in ("status.sock", "manager.sock", "manager.json", "status.board"):
            assert not (home / left).exists(), left
        assert "Traceback" not in (home / "manager.log").read_text()


def test_the_status_line_goes_with_its_manager(
        kale: Kale, home: Path, managers: Callable[..., Manager]) -> None:
    """A stopped manager leaves none of its sockets behind (it exits on SIGTERM after it
    cleaned up, not of the signal); the next one makes them again and its clients find
    them."""
    m = managers("--workers", "1")
    wf = Workflow("before")
    wf.shell("t", "true")
    with m.client() as client:
        assert client.submit(wf).wait(120).state.value == "SUCCEEDED"
    assert (home / "status.sock").exists()
    assert kale("manager", "stop").returncode == 0
    for left in ("status.sock", "manager.sock", "manager.json", "status.board"):
        assert not (home / left).exists(), left
    m.start()
    with m.client() as client:
        assert client.status("latest", tasks=False)["run"]["workflow"] == "before"
        with line(m) as fast:
            assert fast.get("/health").status_code == 200


def line_pid(m: Manager) -> int | None:
    """The pid of ``m``'s status line process (None: there is none)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"kale.manager.statusline" in cmd and ppid == int(m.doc["pid"]):
            return int(entry.name)
    return None


def summary(m: Manager, run_id: str) -> dict[str, int]:
    with line(m) as fast:
        got = fast.get(f"/api/runs/{run_id}", params={"tasks": "false"})
        assert got.status_code == 200, got.text
        counts: dict[str, int] = got.json()["counts"]
        return counts


def test_the_status_line_answers_while_the_manager_cannot(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """The manager's process is stopped (SIGSTOP: its interpreter answers nothing): the
    status line still answers a live run's summary, from the board the run's engine
    counts into, and follows the run once the manager goes on. A token the board does
    not know gets the manager's own answer (a 401), not another user's run."""
    m = managers("--workers", "1")
    gate = tmp_path / "gate"
    wf = Workflow("steady")
    wf.shell("nap", gate_sh(gate))
    wf.shell("after", "true", after=["nap"])
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id, tasks=False)["counts"].get("RUNNING") == 1,
                   what="nap RUNNING")
        pid = int(m.doc["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            assert summary(m, run.id) == {"RUNNING": 1, "PENDING": 1}
            assert client.status(run.id, tasks=False)["counts"] == {"RUNNING": 1,
                                                                    "PENDING": 1}
        finally:
            os.kill(pid, signal.SIGCONT)
        with line(m, {"Authorization": "Bearer nope"}) as other:
            assert other.get(f"/api/runs/{run.id}",
                             params={"tasks": "false"}).status_code == 401
        gate.touch()
        assert run.wait(120).state.value == "SUCCEEDED"
        assert client.status(run.id, tasks=False)["counts"] == {"SUCCEEDED": 2}


def test_a_killed_status_line_is_started_again_and_a_killed_manager_takes_it_along(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """SIGKILL the status line's process: the manager starts it again, on the same
    socket, and it answers from the board as before. SIGKILL the manager: the line ends
    too (no process is left holding the socket)."""
    m = managers("--workers", "1")
    wf = Workflow("again")
    wf.shell("nap", gate_sh(tmp_path / "never"))
    first = wait_until(lambda: line_pid(m), what="the status line's process")
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id, tasks=False)["counts"].get("RUNNING") == 1,
                   what="nap RUNNING")
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: (line_pid(m) or first) != first and line_pid(m),
                            what="a new status line")
        assert summary(m, run.id) == {"RUNNING": 1}
        assert "starting it again" in (home / "manager.log").read_text()
    os.kill(int(m.doc["pid"]), signal.SIGKILL)
    wait_until(lambda: not process_alive(second), what="the status line to end")


def test_a_status_line_that_keeps_dying_is_given_up_and_clients_use_the_manager(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """The line's process is SIGKILLed each time it starts again: after five restarts
    within a minute the manager gives up, closes and removes status.sock, and a client
    that polled through it goes on through manager.sock, with the same answers."""
    m = managers("--workers", "1")
    wf = Workflow("dying")
    wf.shell("nap", gate_sh(tmp_path / "never"))
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id, tasks=False)["counts"].get("RUNNING") == 1,
                   what="nap RUNNING (through the status line)")
        killed: set[int] = set()
        while (home / "status.sock").exists():
            pid = line_pid(m)
            if pid is not None and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            wait_until(lambda: not (home / "status.sock").exists()
                       or (line_pid(m) or 0) not in killed | {0},
                       what="a new status line, or none")
        assert len(killed) == 6
        assert client.status(run.id, tasks=False)["counts"] == {"RUNNING": 1}
        assert "clients use manager.sock" in (home / "manager.log").read_text()
        run.cancel()
        assert client.status(run.id, tasks=False)["run"]["state"] == "CANCELLED"
