"""The one serialization module (kale.serial) and the one /proc reader (kale.procfs)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kale import procfs, serial

linux = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")


# --- serial -----------------------------------------------------------------------------

def test_dumps_gives_the_same_bytes_as_pickle_else_cloudpickle() -> None:
    import cloudpickle

    value = {"a": [1, 2.5, None], "b": (3, "x"), 4: {5}}
    assert serial.dumps(value) == pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def local(x: int) -> int:  # not picklable by reference
        return x + 1

    blob = serial.dumps(local)
    assert type(blob) is bytes and blob == cloudpickle.dumps(local)
    assert pickle.loads(blob)(1) == 2


def test_loads_looks_in_base_dir_for_the_classes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    module = "kale_serial_probe_mod"
    (tmp_path / f"{module}.py").write_text(
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    mod = __import__(module)
    blob = serial.dumps(mod.Point(3))
    # a process that has not imported the module, nor has the folder on its path
    monkeypatch.delitem(sys.modules, module)
    sys.path.remove(str(tmp_path))
    with pytest.raises(ImportError):
        serial.loads(blob)
    with pytest.raises(ImportError):  # another folder: the error stands
        serial.loads(blob, tmp_path / "elsewhere")
    point = serial.loads(blob, tmp_path)
    assert point.x == 3 and type(point).__module__ == module
    assert sys.path[-1] == str(tmp_path)  # appended: the workflow's modules do not shadow
    assert serial.loads(blob, tmp_path).x == 3  # already on the path: no second entry
    assert sys.path.count(str(tmp_path)) == 1


def test_the_base_modules_import_only_the_standard_library() -> None:
    code = ("import sys, kale.serial, kale.procfs; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('kale', 'cloudpickle', 'psutil')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['kale', 'kale.procfs', 'kale.serial']"


# --- procfs -----------------------------------------------------------------------------

@pytest.fixture
def odd_process(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running process whose command name holds spaces and parentheses: ``a) b (c``."""
    exe = tmp_path / "a) b (c"
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "60"], env={**os.environ, "KALE_PROBE_MARK": "yes"},
                            start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@linux
def test_stat_of_a_process_whose_name_holds_parentheses(odd_process: subprocess.Popen[bytes]
                                                         ) -> None:
    import psutil

    pid = odd_process.pid
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    assert b"(a) b (c)" in raw  # the case at hand: a naive split would be off by three
    st = procfs.stat(pid)
    assert st is not None
    assert st.state in ("R", "S")
    assert st.ppid == os.getpid()
    assert st.pgid == pid == os.getpgid(pid)  # it leads its own session
    ticks = os.sysconf("SC_CLK_TCK")
    assert abs(psutil.boot_time() + st.start / ticks - psutil.Process(pid).create_time()) < 0.1
    fields = procfs.stat_fields(pid)
    assert fields is not None and int(fields[19]) == st.start

    from kale.tasks import monitor

    seen = monitor._proc_stat(pid)
    assert seen is not None and seen.ppid == os.getpid() and seen.start == st.start

    assert procfs.process_identity(pid) == f"{procfs.boot_id()}:{st.start}"
    assert procfs.process_identity(os.getpid()) != procfs.process_identity(pid)
    assert pid in procfs.pids()
    environ = procfs.environ(pid)
    assert environ is not None and b"KALE_PROBE_MARK=yes" in environ
    cmd = procfs.cmdline(pid)
    assert cmd is not None and cmd.split(b"\0")[0].endswith(b"a) b (c")


@linux
def test_a_zombie_and_a_gone_process(odd_process: subprocess.Popen[bytes]) -> None:
    pid = odd_process.pid
    odd_process.kill()
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
    st = procfs.stat(pid)
    assert st is not None and st.state == "Z"
    assert procfs.process_identity(pid) is None
    odd_process.wait()
    assert procfs.stat(pid) is None and procfs.stat_fields(pid) is None
    assert procfs.process_identity(pid) is None
    assert procfs.environ(pid) is None and procfs.cmdline(pid) is None
