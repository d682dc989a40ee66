"""Copies between this machine and hosts reached over the real local sshd (alias
``kale-ssh-test``, root; and ``kale-site-test``, the second OS user: a second "site"),
with Kale's rsync transfer: every direction, only changed files sent again, a copy
killed half way (SIGKILL of its rsync or ssh) leaving no partial file under a final name
and completed by the retry, the failures a caller must tell apart (transient or not), and
a transfer plug-in installed as a package."""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, wait_until
from kale import transfers
from kale.transfers import Endpoint, TransferError
from kale.transfers.rsync import RsyncTransfer
from sitekit import site_host_fixture

site_host = site_host_fixture  # the second OS user's account over the test sshd
PLUGIN_DIR = ROOT / "tests" / "data" / "transfer_plugin"


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative path: content)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def make_source(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a b.txt").write_text("one\n")  # a space: quoting at both ends
    (root / "sub" / "c.dat").write_bytes(os.urandom(10_000))
    (root / "sub" / "deeper" / "d").write_text("four\n")
    (root / "other.txt").write_text("not selected\n")
    return root


@pytest.fixture
def relay_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this process's temporary directories (a relay's) go: a directory the test
    can check is left empty."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.fixture
def site_dir(site_host: str) -> Iterator[tuple[str, Path]]:
    """A fresh directory in the site user's home: its path there (relative to the login
    directory) and here (the site is this machine)."""
    rel = f"kale-transfer-{os.urandom(4).hex()}"
    here = Path(pwd.getpwnam("kale-other").pw_dir) / rel
    yield rel, here
    shutil.rmtree(here, ignore_errors=True)


def test_the_registry_gives_rsync_by_default() -> None:
    assert transfers.names()[0] == "rsync"
    assert isinstance(transfers.get(), RsyncTransfer)
    with pytest.raises(Exception, match="no transfer 'globus' \\(known: rsync"):
        transfers.get("globus")


def test_local_to_remote_and_back_sends_only_what_changed(ssh_host: str,
                                                          tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    remote = tmp_path / "at the host" / "deep" / "dst"  # missing parents are made
    t = transfers.get()
    log = io.StringIO()
    first = t.copy(Endpoint(None, str(src)), Endpoint(ssh_host, str(remote)), log=log)
    assert (first.files, first.bytes, first.method) == (4, 4 + 10_000 + 5 + 13, "rsync")
    assert tree(remote) == tree(src)
    assert "a b.txt" in log.getvalue() and "Total transferred file size" in log.getvalue()

    again = t.copy(Endpoint(None, str(src)), Endpoint(ssh_host, str(remote)))
    assert (again.files, again.bytes) == (0, 0)
    (src / "sub" / "deeper" / "d").write_text("four, changed\n")
    changed = t.copy(Endpoint(None, str(src)), Endpoint(ssh_host, str(remote)))
    assert (changed.files, changed.bytes) == (1, 14)
    assert tree(remote) == tree(src)

    # back, a selection of paths: a directory and a file, relative to the source
    back = tmp_path / "back"
    got = t.copy(Endpoint(ssh_host, str(remote)), Endpoint(None, str(back)),
                 ["sub", "./a b.txt"])
    assert got.files == 3
    assert tree(back) == {k: v for k, v in tree(src).items() if k != "other.txt"}
    assert t.copy(Endpoint(ssh_host, str(remote)), Endpoint(None, str(back)),
                  ["sub", "a b.txt"]).files == 0


def test_ssh_options_reach_ssh_quoted_and_a_master_connection_carries_the_copy(
        ssh_host: str, tmp_path: Path) -> None:
    """What a site passes: its master's ControlPath (here with a space in it) and
    ``ControlMaster=no``. A port nothing listens on proves the copy went through the
    master (ssh opens no connection of its own)."""
    runtime = tmp_path / "run time"
    runtime.mkdir(mode=0o700)
    control = ["-o", f'ControlPath="{runtime}/master.sock"']  # ssh's own quotes: a space
    subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ControlMaster=yes",
                    "-o", "ControlPersist=120", *control, "-fN", ssh_host],
                   check=True, timeout=60, stdin=subprocess.DEVNULL, capture_output=True)
    try:
        src = make_source(tmp_path / "src")
        there = Endpoint(ssh_host, str(tmp_path / "dst"),
                         ("-p", "1", *control, "-o", "ControlMaster=no"))
        report = transfers.get().copy(Endpoint(None, str(src)), there)
        assert report.files == 4 and tree(tmp_path / "dst") == tree(src)
    finally:
        subprocess.run(["ssh", *control, "-O", "exit", ssh_host], timeout=60,
                       stdin=subprocess.DEVNULL, capture_output=True)


def test_remote_to_remote_relays_through_here_and_only_changes_travel(
        ssh_host: str, site_dir: tuple[str, Path], tmp_path: Path,
        relay_tmp: Path) -> None:
    src = make_source(tmp_path / "src")
    rel, here = site_dir
    t = transfers.get()
    a, b = Endpoint(ssh_host, str(src)), Endpoint("kale-site-test", rel)
    first = t.copy(a, b, ["sub", "a b.txt"])
    assert (first.files, first.method) == (3, "rsync (relayed)")
    assert tree(here) == {k: v for k, v in tree(src).items() if k != "other.txt"}
    assert all(p.stat().st_uid == pwd.getpwnam("kale-other").pw_uid
               for p in here.rglob("*"))  # written by the site's user

    (src / "a b.txt").write_text("one, changed\n")
    log = io.StringIO()
    second = t.copy(a, b, ["sub", "a b.txt"], log=log)
    assert (second.files, second.bytes) == (1, 13)
    assert tree(here)["a b.txt"] == b"one, changed\n"
    # both legs sent the changed file alone: the first fetched no unchanged file either
    legs = [line for line in log.getvalue().splitlines()
            if line.startswith("Number of regular files transferred")]
    assert legs == ["Number of regular files transferred: 1"] * 2
    assert list(relay_tmp.iterdir()) == []  # the relay's directory is gone

    assert (t.copy(a, b).files, tree(here)["other.txt"]) == (1, b"not selected\n")


def copy_in_background(transfer: RsyncTransfer, src: Endpoint, dst: Endpoint
                       ) -> tuple[threading.Thread, list[BaseException]]:
    """``transfer.copy(src, dst)`` in a thread (started); the list gets what it raised."""
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            transfer.copy(src, dst)
        except BaseException as e:  # the test looks at it
            failed.append(e)

    worker = threading.Thread(target=copy)
    worker.start()
    return worker, failed


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process under ``pid``."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        comm = head.partition("(")[2]
        children.setdefault(int(rest.split()[1]), []).append((int(entry), comm))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def serving(path: Path) -> bool:
    """Whether an rsync still serves ``path`` (the remote end of a copy)."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--server" in argv and any(str(path).encode() in a for a in argv):
            return True
    return False


@pytest.mark.parametrize("victim", ["rsync", "ssh"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_copy_killed_half_way_leaves_no_partial_file_and_the_retry_completes_it(
        ssh_host: str, tmp_path: Path, victim: str, direction: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(200 * 2**20))
    want = hashlib.sha256((src / "big.bin").read_bytes()).hexdigest()
    ends = (Endpoint(None, str(src)), Endpoint(ssh_host, str(dst))) if direction == "up" \
        else (Endpoint(ssh_host, str(src)), Endpoint(None, str(dst)))
    slow = RsyncTransfer(options=["--bwlimit=2m"])  # ~100 s for the whole file
    worker, failed = copy_in_background(slow, *ends)
    try:
        wait_until(lambda: list(dst.glob(".big.bin.*")), what="rsync's temporary file")
        assert not (dst / "big.bin").exists()
        pid = wait_until(lambda: next((p for p, name in descendants(os.getpid())
                                       if name == victim), None), what=f"the {victim}")
        os.kill(pid, signal.SIGKILL)
    finally:
        worker.join(timeout=120)
    assert not worker.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], TransferError), failed
    assert failed[0].transient, failed[0]
    assert not (dst / "big.bin").exists()  # never a partial file under the final name
    wait_until(lambda: not serving(dst) and not serving(src), what="the remote rsync gone")

    done = RsyncTransfer().copy(*ends)
    assert (done.files, done.bytes) == (1, 200 * 2**20)
    assert hashlib.sha256((dst / "big.bin").read_bytes()).hexdigest() == want
    assert sorted(p.name for p in dst.iterdir()) == ["big.bin"]  # nothing left behind


def test_cancel_stops_a_copy_in_progress(ssh_host: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(50 * 2**20))
    slow = RsyncTransfer(options=["--bwlimit=2m"])
    worker, failed = copy_in_background(slow, Endpoint(None, str(src)),
                                        Endpoint(ssh_host, str(dst)))
    try:
        wait_until(lambda: list(dst.glob(".big.bin.*")), what="rsync's temporary file")
    finally:
        slow.cancel()
        worker.join(timeout=120)
    assert not worker.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], TransferError), failed
    assert failed[0].cancelled and not failed[0].transient
    wait_until(lambda: not serving(dst), what="the remote rsync gone")
    assert not (dst / "big.bin").exists() and not list(dst.glob(".big.bin.*"))
    again = RsyncTransfer().copy(Endpoint(None, str(src)), Endpoint(ssh_host, str(dst)))
    assert again.files == 1
    small = make_source(tmp_path / "small")  # the cancelled instance copies again
    assert slow.copy(Endpoint(None, str(small)), Endpoint(None, str(tmp_path / "d"))).files == 4
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_a_missing_source_is_not_transient_and_names_the_path(ssh_host: str,
                                                               tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    t = transfers.get()
    with pytest.raises(TransferError) as e:
        t.copy(Endpoint(ssh_host, str(src)), Endpoint(None, str(tmp_path / "d")),
               ["sub", "no such file"])
    assert not e.value.transient
    assert e.value.endpoint == Endpoint(ssh_host, str(src))
    assert "no such file or directory at the source" in str(e.value)
    assert f"{src}/no such file" in str(e.value)

    gone = tmp_path / "gone"
    with pytest.raises(TransferError) as e:
        t.copy(Endpoint(None, str(gone)), Endpoint(ssh_host, str(tmp_path / "d")))
    assert not e.value.transient and str(gone) in str(e.value)
    with pytest.raises(TransferError, match="not a path relative to the source"):
        t.copy(Endpoint(None, str(src)), Endpoint(None, str(tmp_path / "d")), ["../etc"])


def test_an_unreachable_host_is_transient_and_says_what_ssh_said(ssh_host: str,
                                                                tmp_path: Path) -> None:
    src = make_source(tmp_path / "src")
    nobody = Endpoint("root@127.0.0.1", str(tmp_path / "d"), ("-p", "1"))  # refused
    with pytest.raises(TransferError) as e:
        transfers.get().copy(Endpoint(None, str(src)), nobody)
    assert e.value.transient and e.value.endpoint == nobody
    assert "Connection refused" in str(e.value)
    with pytest.raises(TransferError) as e:  # relayed: the end at fault is named
        transfers.get().copy(Endpoint(ssh_host, str(src)), nobody)
    assert e.value.transient and e.value.endpoint == nobody

    # a host that does not answer at all: ssh gives up after its connect timeout
    silent = Endpoint("root@192.0.2.1", "d", ("-o", "ConnectTimeout=2"))
    with pytest.raises(TransferError) as e:
        transfers.get().copy(silent, Endpoint(None, str(tmp_path / "d")))
    assert e.value.transient and e.value.endpoint == silent
    assert "ssh: connect to host 192.0.2.1" in str(e.value)


def test_a_host_that_never_answers_ends_in_ssh_connect_timeout(tmp_path: Path) -> None:
    """A port that takes the connection and never says a word (the kernel accepts it
    into the backlog): ssh gives up after ConnectTimeout, rsync never waits forever."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        end = Endpoint("root@127.0.0.1", "d", ("-p", str(port)))
        with pytest.raises(TransferError) as e:
            RsyncTransfer(connect_timeout=2).copy(end, Endpoint(None, str(tmp_path / "d")))
    assert e.value.transient and e.value.endpoint == end
    assert "timed out" in str(e.value)


def test_a_refused_login_is_not_transient(ssh_host: str, tmp_path: Path) -> None:
    """ssh cannot log in without a person (BatchMode): the user must act. (The test's
    SSH server, scripts/services/sshd.sh, listens on $KALE_SSHD_PORT, 2222.)"""
    port = os.environ.get("KALE_SSHD_PORT", "2222")
    stranger = Endpoint("nobody@127.0.0.1", "d", ("-p", port, "-o",
                        "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no",
                        "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null"))
    with pytest.raises(TransferError) as e:
        transfers.get().copy(Endpoint(None, str(make_source(tmp_path / "src"))), stranger)
    assert not e.value.transient and "Permission denied" in str(e.value)


def test_rsync_missing_on_either_side_says_which(ssh_host: str, tmp_path: Path) -> None:
    src = Endpoint(None, str(make_source(tmp_path / "src")))
    there = Endpoint(ssh_host, str(tmp_path / "d"))
    with pytest.raises(TransferError) as e:
        RsyncTransfer(remote_rsync="/no/such/rsync").copy(src, there)
    assert not e.value.transient and e.value.endpoint == there
    assert f"rsync is not installed on {ssh_host}" in str(e.value)
    with pytest.raises(TransferError) as e:
        RsyncTransfer(rsync="/no/such/rsync").copy(src, there)
    assert not e.value.transient
    assert "rsync is not installed on this machine" in str(e.value)


PLUGIN_USE = """\
import json, sys
from kale import transfers
from kale.transfers import Endpoint
t = transfers.get("localcp")
one = t.copy(Endpoint(None, sys.argv[1]), Endpoint(None, sys.argv[2]), ["sub"])
two = t.copy(Endpoint(None, sys.argv[1]), Endpoint(None, sys.argv[2]), ["sub"])
print(json.dumps({"names": transfers.names(), "class": type(t).__name__,
                  "reports": [[r.files, r.bytes, r.method] for r in (one, two)]}))
"""


def test_a_plugin_transfer_is_found_by_its_name(tmp_path: Path) -> None:
    """A package whose entry point registers a transfer (tests/data/transfer_plugin: its
    module and dist-info, on PYTHONPATH as pip would install them)."""
    import json

    src = make_source(tmp_path / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", PLUGIN_USE, str(src), str(tmp_path / "d")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["names"] == ["rsync", "localcp"]
    assert doc["class"] == "LocalCopyTransfer"
    assert doc["reports"] == [[2, 10_005, "localcp"], [0, 0, "localcp"]]
    assert tree(tmp_path / "d") == {k: v for k, v in tree(src).items() if k.startswith("sub")}
    assert "localcp" not in transfers.names()  # not installed in this process

