"""How clients and workers reach the manager (issue "Safe on a shared login node", items 1
and 2): the home's Unix socket on the manager's host, TLS with a pinned certificate over
TCP everywhere else. Real processes, real sockets; the fakes are real servers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import socketserver
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, Manager, gate_sh, process_alive, wait_until
from kale import Client, KaleError, Workflow
from test_security import _listening_pid
from test_workers import ledger, ledger_workflow, states, wait_gone

CLI = [sys.executable, "-m", "kale.cli.main"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "KALE_HOME": str(home), "COLUMNS": "200", **extra}


def _connected(client: Client, worker_id: str) -> bool:
    return any(w["id"] == worker_id and w["connected"] for w in client.workers())


# -- the Unix socket ---------------------------------------------------------------------
def test_the_socket_is_private_in_the_home_and_local_clients_use_it(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    m = managers("--workers", "1", sticky=True)
    doc = m.doc
    sock = home / "manager.sock"
    assert doc["socket"] == str(sock)
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    # the certificate and its key: made at the first start, private, named in manager.json
    crt, key = home / "tls" / "manager.crt", home / "tls" / "manager.key"
    assert doc["cert"] == str(crt) and stat.S_IMODE(key.stat().st_mode) == 0o600
    der = ssl.PEM_cert_to_DER_cert(crt.read_text())
    assert doc["fingerprint"] == "sha256:" + hashlib.sha256(der).hexdigest()
    assert doc["url"] == f"https://127.0.0.1:{doc['port']}"
    # the CLI goes through it (a workflow run by the manager, on its local worker, which
    # the manager started on the socket too)
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: hello\ntasks:\n  hi:\n    shell: echo hi\n")
    out = kale("run", str(wf))
    assert out.returncode == 0, out.stdout + out.stderr
    with m.client() as client:
        assert client._http.base_url.host == "kale"  # the socket, no TCP address
        assert [r["state"] for r in client.runs()] == ["SUCCEEDED"]
        worker = client.workers()[0]
    cmd = Path(f"/proc/{worker['pid']}/cmdline").read_bytes().split(b"\0")
    assert f"unix:{sock}".encode() in cmd
    # nothing but the socket answers without TLS: plain HTTP on the TCP port is refused
    with socket.create_connection(("127.0.0.1", doc["port"]), timeout=30) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(30)
        answer = s.recv(100)
    assert b"200" not in answer


def test_the_certificate_and_port_stay_across_restarts(
        kale: Kale, home: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0", sticky=True)
    first = dict(m.doc)
    assert kale("manager", "stop").returncode == 0
    m.start()
    assert m.doc["port"] == first["port"] and m.doc["url"] == first["url"]
    assert m.doc["fingerprint"] == first["fingerprint"]
    with Client(url=m.url, token=(home / "token").read_text().strip(),
                cert=first["cert"]) as client:
        assert client.runs() == []


# -- the pin: a fake at the manager's address gets no token -------------------------------
class _Fake(socketserver.ThreadingTCPServer):
    """Another user's server at the manager's address: plain HTTP that answers 200 to
    everything, or TLS with a certificate of its own. It keeps every byte it is sent (what
    TLS lets it read, for the TLS one)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        self.received: list[bytes] = []
        self.connections = 0
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                fake.connections += 1
                conn.settimeout(10)
                try:
                    if context is not None:
                        conn = context.wrap_socket(conn, server_side=True)
                    chunk = conn.recv(65536)
                    fake.received.append(chunk)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                 b"Connection: close\r\n\r\n{}")
                    fake.received.append(conn.recv(65536))  # what more comes, if any
                except (OSError, ssl.SSLError):
                    return
                finally:
                    conn.close()  # the TLS wrapper owns the descriptor now

        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock


def _listen(port: int) -> socket.socket | None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
    except OSError:
        s.close()
        return None
    return s


@pytest.fixture
def fake_context(request: pytest.FixtureRequest, tmp_path: Path) -> ssl.SSLContext | None:
    if request.param == "plain":
        return None
    from kale import tls

    other = tmp_path / "other-home"
    other.mkdir(mode=0o700)
    tls.ensure_cert(other, "127.0.0.1")  # a Kale certificate, but not this home's
    return tls.server_context(other)


@pytest.mark.parametrize("fake_context", ["plain", "other-cert"], indirect=True)
def test_a_fake_at_the_managers_address_gets_no_token_from_clients_or_workers(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path,
        fake_context: ssl.SSLContext | None) -> None:
    m = managers("--workers", "0", sticky=True)
    token, worker_token = (home / "token").read_text().strip(), \
        (home / "worker-token").read_text().strip()
    # a worker that reaches the manager over TCP, as a batch worker or another user's does
    log = tmp_path / "worker.log"
    with open(log, "wb") as f:
        worker = subprocess.Popen(
            [*CLI, "worker", "--manager", m.url, "--cert", m.doc["cert"], "--id", "tcp-1"],
            env=_env(home, KALE_WORKER_TOKEN=worker_token), stdout=f, stderr=f)
    try:
        with m.client() as client:
            wait_until(lambda: _connected(client, "tcp-1"), what="the TCP worker to connect")
        pid, port = int(m.doc["pid"]), int(m.doc["port"])
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        # the port, as soon as the kernel lets it go (the killed manager's connections)
        fake = _Fake(wait_until(lambda: _listen(port), what=f"port {port} to be free"),
                     fake_context)
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        try:
            # a client with the home's pin: refused before anything is sent
            with Client(url=m.url, token=token, cert=m.doc["cert"]) as client, \
                    pytest.raises(KaleError) as caught:
                client.runs()
            said = str(caught.value)
            assert f"the server at {m.url} is not this home's manager" in said, said
            assert m.doc["cert"] in said and "no token was sent" in said
            # the CLI, for a home whose manager.json names that address (a home on a
            # shared file system, read on another host): exit 1 and why, no traceback
            stale = {**m.doc, "pid": os.getpid(), "hostname": "another-host",
                     "identity": _identity(os.getpid())}
            (home / "manager.json").write_text(json.dumps(stale))
            wf = tmp_path / "wf.yaml"
            wf.write_text("name: hello\ntasks:\n  hi:\n    shell: echo hi\n")
            out = kale("run", str(wf))
            assert out.returncode == 1, out.stdout + out.stderr
            said = " ".join(out.stderr.split())
            assert "is not this home's manager" in said and "no token was sent" in said
            assert "Traceback" not in out.stderr
            # the worker tries the fake, says why it does not trust it, and goes on looking
            wait_until(lambda: "is not this home's manager" in log.read_text(),
                       what="the worker to refuse the fake")
            assert worker.poll() is None
            # the manager comes back elsewhere (the fake holds its port); the worker
            # finds it through the home's manager.json
            (home / "manager.json").unlink()
            m.start()
            assert m.doc["port"] != port
            with m.client() as client:
                wait_until(lambda: _connected(client, "tcp-1"),
                           what="the worker to find the restarted manager")
        finally:
            fake.shutdown()
            fake.server_close()
        sent = b"".join(fake.received)
        assert fake.connections > 0
        assert token.encode() not in sent and worker_token.encode() not in sent
        assert b"uthorization" not in sent and b"Bearer" not in sent
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)


def _identity(pid: int) -> Any:
    from kale.store.store import process_identity

    return process_identity(pid)


def test_a_worker_without_the_certificate_is_told_what_to_give(
        kale: Kale, tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "worker", "--manager", "https://127.0.0.1:1"],
                         env=_env(tmp_path / "empty-home"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "--cert" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    out = kale("worker", "--manager", "https://127.0.0.1:1", "--cert", str(bad))
    assert out.returncode == 2 and "is not a PEM certificate" in out.stderr
    out = kale("worker", "--manager", "http://127.0.0.1:1")
    assert out.returncode == 2 and "managers speak TLS" in out.stderr
    with pytest.raises(KaleError, match="managers speak TLS"):
        Client(url="http://127.0.0.1:1", token="x")


def test_login_with_a_certificate_given_as_pem_and_a_wrong_one(
        home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    from kale import tls
    from kale import widgets as kw

    m = managers("--workers", "0")
    pem = (home / "tls" / "manager.crt").read_text()
    login = kw.Login()
    login._on_custom(login, {"action": "connect", "form": {
        "method": "token", "url": m.url, "token_file": str(home / "token"), "cert": pem}}, [])
    assert not login.error and login.connected == f"manager at {m.url}"
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    login._on_custom(login, {"action": "connect", "form": {
        "method": "token", "url": m.url, "token_file": str(home / "token"),
        "cert": str(tls.ensure_cert(other, "127.0.0.1"))}}, [])
    assert "is not this home's manager" in login.error and "no token was sent" in login.error
    login.close()


# -- ports ---------------------------------------------------------------------------------
def test_a_squatted_port_given_with_port_is_an_error(kale: Kale, home: Path) -> None:
    squatter = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys\ns = socket.socket()\n"
         "s.bind(('127.0.0.1', 0)); s.listen()\nprint(s.getsockname()[1], flush=True)\n"
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None
        port = int(squatter.stdout.readline())
        out = kale("manager", "start", "--port", str(port), "--workers", "0")
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
        assert "Address already in use" in out.stderr and "Traceback" not in out.stderr
        assert not (home / "manager.json").exists()
    finally:
        squatter.kill()
        squatter.communicate(timeout=60)


def test_two_homes_start_default_managers_at_once_and_both_run(tmp_path: Path) -> None:
    homes = [tmp_path / "alice", tmp_path / "bob"]
    try:
        starts = [subprocess.Popen([*CLI, "manager", "start", "--workers", "1"], env=_env(h),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for h in homes]
        for p in starts:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        docs = [json.loads((h / "manager.json").read_text()) for h in homes]
        assert docs[0]["port"] != docs[1]["port"]
        assert docs[0]["socket"] != docs[1]["socket"]
        assert docs[0]["fingerprint"] != docs[1]["fingerprint"]
        assert all(d["port"] != 8765 for d in docs)  # no well-known port
        for h, doc in zip(homes, docs, strict=True):
            assert doc["url"].startswith("https://")
            # the port in manager.json is the one this manager's process listens on
            assert _listening_pid(doc["port"]) == doc["pid"]
            wf = h / "wf.yaml"
            wf.write_text("name: hello\ntasks:\n  hi:\n    shell: echo hi\n")
            run = subprocess.run([*CLI, "run", str(wf)], env=_env(h), capture_output=True,
                                 text=True, timeout=300)
            assert run.returncode == 0, run.stdout + run.stderr
        # each home's client trusts its own manager only
        other = Client(url=docs[1]["url"], token=(homes[0] / "token").read_text().strip(),
                       cert=docs[0]["cert"])
        with other, pytest.raises(KaleError, match="is not this home's manager"):
            other.runs()
    finally:
        for h in homes:
            subprocess.run([*CLI, "manager", "stop"], env=_env(h), capture_output=True,
                           timeout=120)


# -- local workers outlive a SIGKILLed manager ----------------------------------------------
def test_a_local_worker_reconnects_through_the_socket_to_the_restarted_manager(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    ran, gate = tmp_path / "ran.txt", tmp_path / "gate"
    m = managers("--workers", "1", "--worker-slots", "2", sticky=True)
    wf = ledger_workflow("outlive", ran, gate, 3, quick=1)
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: len(ledger(ran)) == 1
                   and list(states(client, run.id).values()).count("RUNNING") == 2,
                   what="one task done and two running")
        (worker,) = client.workers()
    pid = int(m.doc["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    gate.touch()  # the running tasks finish while there is no manager
    wait_until(lambda: len(ledger(ran)) == 3, what="the running tasks to finish")
    assert process_alive(int(worker["pid"]))
    m.start()
    with m.client() as client:
        wait_until(lambda: _connected(client, worker["id"]),
                   what="the local worker to reconnect through the socket")
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"
        tasks = client.status(run.id)["tasks"]
    assert all(t["attempts"] == 1 for t in tasks), [(t["name"], t["attempts"]) for t in tasks]
    assert sorted(ledger(ran)) == ["t0", "t1", "t2"]


def test_kale_workflow_through_the_socket_from_python(
        home: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1", sticky=True)
    wf = Workflow("py")
    wf.shell("hi", "echo hi")
    with Client(home=home) as client:
        run = client.submit(wf)
        assert run.wait(120).state.value == "SUCCEEDED"
        assert client.logs(run.id, "hi").strip() == "hi"
        events = [e for e, _ in client.events(run.id)]
    assert events[-1] == "end"
    assert m.doc["socket"] == str(home / "manager.sock")


@pytest.mark.parametrize("way", ["unix", "tls"])
def test_closing_a_client_ends_the_event_stream_another_thread_follows(
        way: str, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    # A view's feed reads a run's events in a thread of its own; closing the client
    # (a notebook's `with` block ending) must end that read, not leave it until the
    # run's next event, holding a connection no one closes any more; on the home's
    # socket and over TLS (a laptop's client) alike.
    gate = tmp_path / "gate"
    m = managers("--workers", "1", sticky=True)
    wf = Workflow("slow")
    wf.shell("wait", gate_sh(gate))
    seen: list[str] = []
    ended: list[BaseException | None] = []
    client = Client(home=home) if way == "unix" else \
        Client(m.url, home=home, cert=str(home / "tls" / "manager.crt"))
    run = client.submit(wf)

    def follow() -> None:
        try:
            for event, data in client.events(run.id):
                seen.append(f"{event}:{data.get('task')}:{data.get('new')}")
            ended.append(None)
        except Exception as e:  # the connection, shut under it
            ended.append(e)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_until(lambda: "state:wait:RUNNING" in seen, what="the task running, seen on the stream")
    client.close()
    wait_until(lambda: not reader.is_alive(), what="the reader to stop once its client closed")
    assert not [e for e in seen if e.startswith("end:")] and ended and ended[0] is not None
    gate.touch()
    with Client(home=home) as again:
        assert again.run(run.id).wait(120).state.value == "SUCCEEDED"


def test_a_connect_after_its_pool_closed_fails_and_leaves_no_socket_open(
        managers: Callable[..., Manager]) -> None:
    # A request that was still connecting when another thread closed the client used to
    # get a connection that nobody would close (a ResourceWarning much later, in whatever
    # code the garbage collector happened to run).
    import gc

    import httpcore

    from kale import tls

    m = managers("--workers", "0", sticky=True)
    pool = tls.owned_pool(uds=tls.unix_path(Path(m.doc["socket"])))
    assert pool.request("GET", "http://kale/health").status == 200
    pool.close()
    with pytest.raises(httpcore.ConnectError, match="the client was closed"):
        pool.request("GET", "http://kale/health")
    gc.collect()  # (an unclosed socket would warn here, failing this test)


def test_over_tls_too_a_connect_after_its_pool_closed_fails_and_leaves_no_socket_open(
        managers: Callable[..., Manager]) -> None:
    # A client on a laptop reaches its manager over TCP and TLS: the same promise (and
    # the pool still checks the manager's certificate).
    import gc

    import httpcore

    from kale import tls

    m = managers("--workers", "0", sticky=True)
    pool = tls.owned_pool(ssl_context=m.tls)
    assert pool.request("GET", f"{m.url}/health").status == 200
    pool.close()
    with pytest.raises(httpcore.ConnectError, match="the client was closed"):
        pool.request("GET", f"{m.url}/health")
    gc.collect()  # (an unclosed socket would warn here, failing this test)
    elsewhere = m.home / "elsewhere"
    elsewhere.mkdir()
    stranger = tls.owned_pool(ssl_context=tls.client_context(
        tls.ensure_cert(elsewhere, "127.0.0.1").read_text()))
    with pytest.raises(httpcore.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        stranger.request("GET", f"{m.url}/health")
    stranger.close()
    gc.collect()


@pytest.fixture(autouse=True)
def _no_stray(home: Path) -> Iterator[None]:
    yield
    from conftest import _kill_workers

    _kill_workers(home)
