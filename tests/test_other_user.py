"""Another user of the same login node (issue 13): what a second OS user, ``kale-other``,
sees of a Kale home that is not theirs. Real users, real files, a real manager.

The owner's home lies in a directory that every user may enter and list (as /home,
/scratch or /tmp are on a login node), so that whatever kale-other is refused, it is
refused by the Kale home itself, not by the test's own private temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Kale, Manager, OtherUser


@pytest.fixture
def shared_dir(other_user: OtherUser) -> Iterator[Path]:
    """A directory other users may enter and list (0755)."""
    path = Path(tempfile.mkdtemp(prefix="kale-shared-", dir="/tmp"))
    path.chmod(0o755)
    probe = other_user("ls", "-d", str(path))
    assert probe.returncode == 0, f"{other_user.name} cannot reach {path}: {probe.stderr}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home(shared_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The owner's Kale home, in the shared directory (overrides conftest's ``home``, so the
    ``kale`` and ``managers`` fixtures use it)."""
    path = shared_dir / "owner-kale-home"
    monkeypatch.setenv("KALE_HOME", str(path))
    monkeypatch.delenv("KALE_STORE_URL", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    return path


def _workflow(shared_dir: Path, secret: str) -> Path:
    """A workflow file anyone may read, whose task prints ``secret`` and writes it to a file."""
    wf = shared_dir / "wf.yaml"
    wf.write_text(f"name: secrets\ntasks:\n  t:\n    shell: echo {secret}; "
                  f"echo {secret} > result.txt\n    outputs: [result.txt]\n")
    wf.chmod(0o644)
    return wf


def _denied(out: subprocess.CompletedProcess[str]) -> bool:
    return out.returncode != 0 and "Permission denied" in out.stderr


def test_another_user_cannot_list_the_home_nor_read_tokens_store_or_results(
        other_user: OtherUser, kale: Kale, home: Path, managers: Callable[..., Manager],
        shared_dir: Path) -> None:
    managers("--workers", "1")
    secret = "owner-secret-4217"
    run = kale("run", str(_workflow(shared_dir, secret)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    files = {name: home / name for name in ("token", "worker-token", "kale.db", "manager.json",
                                            "tls/manager.key")}
    files["log"] = next(home.glob("runs/*/logs/t.1.out"))
    files["result"] = next(home.glob("runs/*/t/result.txt"))
    for path in files.values():  # the owner has them all
        assert path.is_file(), path
    assert secret in files["log"].read_text()

    # kale-other sees that the home exists (the shared directory lists it) ...
    listing = other_user("ls", str(shared_dir))
    assert listing.returncode == 0 and home.name in listing.stdout, listing.stderr
    # ... but cannot look inside it,
    out = other_user("ls", str(home))
    assert _denied(out), out
    # nor read any file in it by name: tokens, the manager's address, results, logs,
    for name, path in files.items():
        out = other_user("cat", str(path))
        assert _denied(out), (name, out)
        assert secret not in out.stdout
    # nor open the store.
    out = other_user("python3", "-c",
                     "import sqlite3, sys\n"
                     "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
                     "print(db.execute('SELECT count(*) FROM runs').fetchone())",
                     str(files["kale.db"]))
    assert out.returncode == 1 and "unable to open database file" in out.stderr, out
    assert out.stdout == ""
    # nor reach the manager's Unix socket, which the owner's own clients use.
    sock = home / "manager.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    connect = ("import socket, sys\n"
               "socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n"
               "print('connected')")
    assert subprocess.run([sys.executable, "-c", connect, str(sock)], capture_output=True,
                          text=True, timeout=60).stdout == "connected\n"  # the owner can
    out = other_user("python3", "-c", connect, str(sock))
    assert out.returncode == 1 and "PermissionError" in out.stderr, out
    assert out.stdout == ""


def test_kale_as_another_user_with_the_owners_home_is_a_message(
        other_user: OtherUser, kale: Kale, home: Path, managers: Callable[..., Manager],
        shared_dir: Path) -> None:
    m = managers("--workers", "1")
    token = (home / "token").read_text().strip()
    wf = _workflow(shared_dir, "from-kale-other")
    for args in (["run", str(wf)], ["runs"], ["status", "latest"], ["manager", "status"],
                 ["manager", "stop"], ["worker"]):
        out = other_user.kale(*args, home=home)
        said = out.stdout + out.stderr
        assert out.returncode == 2, (args, said)
        assert f"path '{home}' is not readable" in said, (args, said)
        assert "Traceback" not in said, (args, said)
        assert token not in said
    # the owner's manager still runs, and nothing was run for kale-other
    status = kale("manager", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["pid"] == m.doc["pid"]
    runs = kale("runs", "--json")
    assert runs.returncode == 0 and json.loads(runs.stdout) == [], runs.stdout


@pytest.mark.parametrize("where", ["inside the owner's home", "the owner's open home"])
def test_kale_as_another_user_with_a_home_it_cannot_write_is_a_message(
        other_user: OtherUser, kale: Kale, home: Path, shared_dir: Path, where: str) -> None:
    if where == "inside the owner's home":
        assert kale("runs").returncode == 0  # the owner's home exists (0700)
        target = home / "elsewhere"
    else:  # a directory of the owner's that others may read, but not write
        target = shared_dir / "open"
        target.mkdir(mode=0o755)
        target.chmod(0o755)
    out = other_user.kale("runs", home=target)
    said = out.stdout + out.stderr
    assert out.returncode == 2, said
    assert "Traceback" not in said, said
    assert str(target) in said, said


def test_an_existing_home_open_to_others_is_made_private_for_them(
        other_user: OtherUser, kale: Kale, home: Path) -> None:
    # A home made by hand (or by an older Kale) with the usual umask: others may enter it.
    home.mkdir()
    home.chmod(0o755)
    notes = home / "notes.txt"
    notes.write_text("owner's notes\n")
    notes.chmod(0o644)
    before = other_user("cat", str(notes))
    assert before.returncode == 0 and before.stdout == "owner's notes\n", before.stderr

    out = kale("runs")
    assert out.returncode == 0, out.stderr
    assert f"kale: {home} was readable by others (mode 755); made it private (700)" \
        in out.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for argv in (["cat", str(notes)], ["ls", str(home)], ["cat", str(home / "kale.db")]):
        after = other_user(*argv)
        assert _denied(after), (argv, after)
    # said once: a private home is left alone, silently
    again = kale("runs")
    assert again.returncode == 0 and "private" not in again.stderr, again.stderr


def test_kale_of_another_user_leaves_a_home_it_does_not_own_as_it_is(
        other_user: OtherUser, shared_dir: Path) -> None:
    """kale-other's Kale pointed at a home of the owner's that it may read changes
    nothing in it: it makes no store, no token, and does not change its mode (making a
    home private is for its owner)."""
    theirs = shared_dir / "open"
    theirs.mkdir()
    theirs.chmod(0o755)
    out = other_user.kale("runs", home=theirs)
    assert out.returncode != 0
    assert "made it private" not in out.stderr
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o755
    assert list(theirs.iterdir()) == []


def test_the_manager_refuses_another_user_who_has_no_token(
        other_user: OtherUser, managers: Callable[..., Manager]) -> None:
    """kale-other reaches the owner's manager over the network (any process may) but,
    without the owner's token, gets nothing but a refusal."""
    m = managers("--workers", "0")
    code = ("import sys, httpx\n"
            "url = sys.argv[1]\n"
            "for headers in ({}, {'Authorization': 'Bearer not-the-token'}):\n"
            "    for path in ('/api/runs', '/api/queue'):\n"
            "        r = httpx.get(url + path, headers=headers, verify=False, timeout=60)\n"
            "        print(path, r.status_code)\n")
    out = other_user("python3", "-c", code, m.url)
    assert out.returncode == 0, out.stderr
    codes = [line.split() for line in out.stdout.splitlines()]
    assert len(codes) == 4 and all(c[1] == "401" for c in codes), out.stdout


def test_the_helper_runs_as_another_user_with_a_clean_environment(
        other_user: OtherUser) -> None:
    out = other_user("python3", "-c",
                     "import os, sys; print(os.getuid(), os.getgid(), sys.executable); "
                     "print(sorted(os.environ)); print(os.environ['HOME'], os.getcwd())",
                     env={"KALE_HOME": "/nowhere"})
    assert out.returncode == 0, out.stderr
    ids, names, where = out.stdout.splitlines()
    uid, gid, exe = ids.split()
    assert (int(uid), int(gid)) == (other_user.uid, other_user.gid) != (os.getuid(), 0)
    assert os.path.dirname(exe) == other_user.python_bin
    assert "KALE_STORE_URL" not in names and "PYTEST_CURRENT_TEST" not in names
    assert "KALE_HOME" in names
    assert where.split() == [str(other_user.home)] * 2


_SQUATTER = """\
import socket, sys, time
port, log, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
for _ in range(600):  # until the killed manager's port is free
    try:
        s.bind(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.1)
s.listen()
open(ready, "w").close()
while True:
    conn, _ = s.accept()
    conn.settimeout(10)
    try:
        data = conn.recv(65536)
        with open(log, "ab") as f:
            f.write(data)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
    except OSError:
        pass
    finally:
        conn.close()
"""


def test_another_users_process_on_the_managers_port_gets_no_token(
        other_user: OtherUser, kale: Kale, home: Path, shared_dir: Path,
        managers: Callable[..., Manager]) -> None:
    """The manager dies; kale-other takes its TCP port and logs every byte it is sent.
    The owner's client, pinned to the home's certificate, sends it nothing of the token
    and says the server is not this home's manager."""
    import signal

    from conftest import wait_until
    from kale import Client
    from kale.errors import KaleError

    m = managers("--workers", "0")
    token = (home / "token").read_text().strip()
    spot = shared_dir / "squatter"
    spot.mkdir(mode=0o777)
    spot.chmod(0o777)
    script, log, ready = spot / "squat.py", spot / "received.bin", spot / "ready"
    script.write_text(_SQUATTER)
    script.chmod(0o644)
    pid, port = int(m.doc["pid"]), int(m.doc["port"])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the manager to be gone")
    err = shared_dir / "squatter.err"
    with open(err, "wb") as f:
        squatter = subprocess.Popen(
            ["setpriv", f"--reuid={other_user.uid}", f"--regid={other_user.gid}",
             "--init-groups", "--", "python3", str(script), str(port), str(log), str(ready)],
            env=other_user.env(), cwd=spot, stdout=subprocess.DEVNULL, stderr=f)
    try:
        wait_until(lambda: ready.exists() or squatter.poll() is not None,
                   what="kale-other to take the port")
        assert squatter.poll() is None, err.read_text()
        with Client(url=m.url, token=token, cert=m.doc["cert"]) as client, \
                pytest.raises(KaleError) as caught:
            client.runs()
        assert "is not this home's manager" in str(caught.value)
        assert "no token was sent" in str(caught.value)
        wait_until(lambda: log.exists(), what="the squatter to log the connection")
    finally:
        squatter.kill()
        squatter.wait(60)
    sent = log.read_bytes()
    assert sent  # it was reached: the TLS client hello, and nothing else
    assert token.encode() not in sent and b"Bearer" not in sent and b"uthorization" not in sent


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_two_users_of_one_store_each_reuse_and_list_only_their_own_runs(
        other_user: OtherUser, kale: Kale, shared_dir: Path, store_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two OS users run the same workflow, from the same folder, each with `kale run` (no
    manager), on one PostgreSQL store: the second does not reuse the first's result (a
    result of the owner's, made with the owner's files and rights), and each lists and
    reads as `latest` only their own run."""
    monkeypatch.setenv("KALE_STORE_URL", store_url)
    steps = shared_dir / "who.py"
    steps.write_text("import os, pwd\n\ndef who():\n"
                     "    return pwd.getpwuid(os.geteuid()).pw_name\n")
    wf = shared_dir / "who.yaml"
    wf.write_text("name: who\ntasks:\n  t: {python: 'who:who'}\n")
    for path in (steps, wf):
        path.chmod(0o644)
    mine = kale("run", str(wf))
    assert mine.returncode == 0, mine.stdout + mine.stderr
    mine_id = mine.stdout.split()[0]
    other_home = shared_dir / "other-home"
    other_home.mkdir(mode=0o777)
    other_home.chmod(0o777)

    def as_other(*args: str) -> subprocess.CompletedProcess[str]:
        return other_user("python3", "-m", "kale.cli.main", *args, cwd=shared_dir, env={
            "KALE_HOME": str(other_home / "home"), "KALE_STORE_URL": store_url})

    theirs = as_other("run", str(wf))
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    their_id = theirs.stdout.split()[0]
    task = json.loads(as_other("status", their_id, "t", "--json").stdout)["task"]
    assert task["reused_from"] is None, task  # ran again, as kale-other
    assert task["result"] == other_user.name
    listed = json.loads(as_other("runs", "--json").stdout)
    assert [r["id"] for r in listed] == [their_id]
    assert [r["id"] for r in json.loads(kale("runs", "--json").stdout)] == [mine_id]
    latest = json.loads(kale("status", "latest", "--json").stdout)
    assert latest["run"]["id"] == mine_id
    assert as_other("status", mine_id).returncode != 0  # not theirs: not found
    # each user's next run reuses their own result
    again = as_other("run", str(wf))
    again_id = again.stdout.split()[0]
    task = json.loads(as_other("status", again_id, "t", "--json").stdout)["task"]
    assert task["reused_from"] == their_id, task
