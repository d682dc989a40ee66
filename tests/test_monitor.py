"""The worker's process-tree monitor, on real processes (both backends: /proc and psutil)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import wait_until
from kale.tasks import monitor
from kale.tasks.monitor import Sample, TreeMonitor, signal_tree, tree_pids

Spawn = Callable[..., "subprocess.Popen[str]"]

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\n"
BUSY = "while True: pass"  # busy until the test ends (the spawn fixture kills it)
# Processes the tests only need alive sleep far longer than any test takes, and are killed
# when it ends: a loaded machine cannot make them end early.
ALIVE = "600"
# /proc counts CPU time in clock ticks (10 ms), and a sample's percentage is rounded:
# what two readings of the same CPU time may differ by.
TICKS = 0.05


@pytest.fixture(params=["proc", "psutil"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the /proc reader and again with the psutil one (other systems)."""
    monkeypatch.setattr(monitor, "_backend",
                        monitor._PROC if request.param == "proc" else monitor._PSUTIL)
    return str(request.param)


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes in their own session; kill each session and reap at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, start_new_session=True, text=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # also its children; works on stopped ones
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_for(check: Callable[[], bool], what: str = "") -> None:
    wait_until(check, 60, what)


def cpu_time(pid: int) -> float:
    """User + system CPU seconds of ``pid``, as the kernel counts them."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def used_between(first: Sample, second: Sample) -> float:
    """The CPU seconds ``second`` says the tree used since ``first``."""
    return second.cpu / 100 * (second.ts - first.ts)


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def children(pid: int) -> list[psutil.Process]:
    """The live children of ``pid`` whose name can be read (others vanished meanwhile)."""
    out = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and child.name():
                out.append(child)
    return out


def sleeping(pid: int) -> bool:
    """``pid`` (a shell) has got to its ``sleep``: the jobs before it are done and reaped."""
    names = []
    for child in children(pid):
        with contextlib.suppress(psutil.Error):
            names.append(child.name())
    return names == ["sleep"]


def sample_of(mon: TreeMonitor[str], key: str = "t") -> Sample:
    return mon.sample()[key]


def test_cpu_of_a_busy_loop(backend: str, spawn: Spawn) -> None:
    """A sample says how much CPU the tree used since the previous one: what the kernel
    counted for the loop meanwhile (however much of a core a loaded machine gave it)."""
    proc = spawn(python(BUSY))
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    before_first = cpu_time(proc.pid)
    first = sample_of(mon)
    after_first = cpu_time(proc.pid)
    assert first.cpu == 0.0  # no interval yet
    wait_for(lambda: cpu_time(proc.pid) - after_first >= 0.3, "the loop to burn 0.3 s")
    before_second = cpu_time(proc.pid)
    second = sample_of(mon)
    after_second = cpu_time(proc.pid)
    assert second.procs == 1 and second.ts > first.ts
    used = used_between(first, second)
    assert before_second - after_first - TICKS <= used <= after_second - before_first + TICKS, \
        (used, second)


def test_watching_again_keeps_the_history(backend: str, spawn: Spawn) -> None:
    """The worker watches a key again when its runner adds a process: no gap in CPU."""
    busy = spawn(python(BUSY))
    other = spawn(["sleep", ALIVE])
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [busy.pid])
    before_first = cpu_time(busy.pid)
    first = sample_of(mon)
    after_first = cpu_time(busy.pid)
    wait_for(lambda: cpu_time(busy.pid) - after_first >= 0.3, "the loop to burn 0.3 s")
    mon.watch("t", [busy.pid, other.pid])
    before = cpu_time(busy.pid)
    sample = sample_of(mon)
    after = cpu_time(busy.pid)
    assert sample.procs == 2
    # All the loop's CPU since the first sample: watching again did not start over.
    used = used_between(first, sample)
    assert before - after_first - TICKS <= used <= after - before_first + TICKS, (used, sample)
    mon.unwatch("t")
    mon.watch("t", [other.pid])
    assert sample_of(mon).cpu == 0.0  # started over
    assert sample_of(mon).procs == 1  # stopped at the new roots: busy is no longer in it


def test_rss_of_100_mb(backend: str, spawn: Spawn) -> None:
    # b"x" * n writes every page (a zeroed bytearray might stay unbacked by memory)
    proc = spawn(python("import sys, time\nb = b'x' * 100_000_000\nprint('ok', flush=True)\n"
                        f"time.sleep({ALIVE})"), stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == "ok\n"
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    sample = sample_of(mon)
    assert sample.rss >= 90_000_000, sample
    assert sample.procs == 1


def test_io_written_and_read(backend: str, spawn: Spawn, tmp_path: Path) -> None:
    """Bytes through write()/read(): counted on any file system, and also when the read is
    served from the page cache (where the block-layer counter stays 0)."""
    code = (
        "import os, sys, time\n"
        f"path = {str(tmp_path / 'data.bin')!r}\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "with open(path, 'wb') as f:\n"
        "    f.write(os.urandom(5_000_000)); f.flush(); os.fsync(f.fileno())\n"
        "print('written', flush=True); sys.stdin.readline()\n"
        "with open(path, 'rb') as f:\n"
        "    assert len(f.read()) == 5_000_000\n"
        f"print('read', flush=True); time.sleep({ALIVE})\n"
    )
    proc = spawn(python(code), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    before = sample_of(mon)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "written\n"
    written = sample_of(mon)
    assert written.write_bytes - before.write_bytes >= 5_000_000, (before, written)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "read\n"
    read = sample_of(mon)
    assert read.read_bytes - written.read_bytes >= 5_000_000, (written, read)
    assert read.write_bytes >= written.write_bytes  # cumulative


def test_io_of_exited_processes_stays_counted(backend: str, spawn: Spawn,
                                              tmp_path: Path) -> None:
    """A child reaped inside the tree (its counters move into the shell's) and the root
    reaped outside it (the test, as the worker would) both keep their bytes in the total."""
    writer = python(f"import sys\nopen({str(tmp_path / 'out.bin')!r}, 'wb').write(b'x' * 5_000_000)"
                    "\nprint('written', flush=True)\nsys.stdin.readline()")
    proc = spawn(["sh", "-c", '"$@"; echo done; read x', "sh", *writer],
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    assert proc.stdout.readline() == "written\n"
    running = sample_of(mon)
    assert running.procs == 2 and running.write_bytes >= 5_000_000
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "done\n"  # the writer exited and the shell reaped it
    reaped = sample_of(mon)
    assert reaped.procs == 1
    assert 5_000_000 <= reaped.write_bytes < 6_000_000  # not counted twice
    proc.stdin.close()  # the shell ends; reap it
    proc.wait()
    gone = sample_of(mon)
    assert gone.procs == 0
    assert 5_000_000 <= gone.write_bytes < 6_000_000


def test_cpu_of_a_child_that_lived_between_two_samples(spawn: Spawn) -> None:
    """A short job started and reaped by the shell between two samples still counts (its
    time is in the shell's children-time) - psutil's cpu_percent() would miss it."""
    proc = spawn(["sh", "-c", f'read x; "$@"; sleep {ALIVE}', "sh", *python(BURN.format(0.5))],
                 stdin=subprocess.PIPE)
    assert proc.stdin is not None
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    first = sample_of(mon)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    wait_for(lambda: sleeping(proc.pid), "the job to end and the shell to sleep")
    second = sample_of(mon)
    used = used_between(first, second)
    # 0.5 s of CPU burnt (counted in CPU time, not in wall time: the same on a loaded
    # machine) + interpreter start-up
    assert 0.4 <= used <= 1.2, (used, second)


def test_cpu_of_a_reaped_child_is_not_counted_twice(spawn: Spawn) -> None:
    """A child sampled while it ran, then reaped by the shell: only its CPU after the first
    sample is in the second (its earlier CPU was reported already)."""
    # The child burns 0.4 s of CPU, then waits for the test (it is sampled then), then
    # burns 0.4 s more and exits.
    burner = (BURN.format(0.4) + "import sys\nprint('half', flush=True)\nsys.stdin.readline()\n"
              + BURN.format(0.4))
    proc = spawn(["sh", "-c", f'"$@"; sleep {ALIVE}', "sh", *python(burner)],
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    assert proc.stdout.readline() == "half\n"
    first = sample_of(mon)  # the child is alive, waiting: its first 0.4 s are in here
    proc.stdin.write("go\n")
    proc.stdin.flush()
    wait_for(lambda: sleeping(proc.pid), "the child to end and the shell to sleep")
    second = sample_of(mon)
    used = used_between(first, second)
    assert 0.3 <= used <= 0.65, (used, second)  # counted twice would be >= 0.8


def test_signal_tree_stops_and_resumes_a_shell_tree(backend: str, spawn: Spawn) -> None:
    proc = spawn(["sh", "-c", f"sleep {ALIVE} & sleep {ALIVE} & wait"])
    wait_for(lambda: len(tree_pids([proc.pid])) == 3)
    pids = tree_pids([proc.pid])
    assert pids[0] == proc.pid  # parents first
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    assert sample_of(mon).procs == 3

    assert signal_tree([proc.pid], signal.SIGSTOP) == 3
    wait_for(lambda: all(state(pid) == "T" for pid in pids))
    assert sample_of(mon).procs == 3  # stopped is still alive
    assert signal_tree([proc.pid], signal.SIGCONT) == 3
    wait_for(lambda: all(state(pid) == "S" for pid in pids))

    assert signal_tree([proc.pid], signal.SIGKILL) == 3
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert tree_pids([proc.pid]) == []
    assert signal_tree([proc.pid], signal.SIGCONT) == 0


def test_a_process_that_exits_before_sampling(backend: str, spawn: Spawn) -> None:
    proc = spawn(["sh", "-c", "read x"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    mon.watch("never", [2**22 + 12345])  # above the default pid_max: no such process
    proc.stdin.close()
    wait_for(lambda: state(proc.pid) == "Z")  # exited, not yet reaped
    zombie = mon.sample()
    assert zombie["t"].procs == 0 and zombie["t"].rss == 0
    assert zombie["never"].procs == 0
    proc.wait()
    assert sample_of(mon).procs == 0
    mon.unwatch("t")
    mon.unwatch("t")  # twice is fine
    assert set(mon.sample()) == {"never"}


def test_gpu_is_reported_exactly_when_nvml_works(spawn: Spawn) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        has_gpu = True
    except Exception:
        has_gpu = False  # no NVML here (this project's CI machine has no GPU)
    proc = spawn(["sleep", ALIVE])
    mon: TreeMonitor[str] = TreeMonitor()
    mon.watch("t", [proc.pid])
    if has_gpu:
        assert isinstance(sample_of(mon).gpu, list)
        return
    assert sample_of(mon).gpu is None
    assert sample_of(mon).gpu is None  # the failed init is cached, not retried
    assert monitor._nvml_tried and monitor._nvml_lib is None


def test_to_json() -> None:
    sample = Sample(ts=1.5, cpu=12.5, rss=10, read_bytes=1, write_bytes=2, procs=1,
                    gpu=[{"index": 0, "util": 50.0, "memory": 1024}])
    data = sample.to_json()
    assert data == {"ts": 1.5, "cpu": 12.5, "rss": 10, "read_bytes": 1, "write_bytes": 2,
                    "procs": 1, "gpu": [{"index": 0, "util": 50.0, "memory": 1024}]}
    assert json.loads(json.dumps(data)) == data


def test_sampling_100_trees_at_once(spawn: Spawn) -> None:
    # (its cost, ~5 ms here, is measured in bench/, not asserted: this machine is noisy)
    procs = [spawn(["sleep", ALIVE]) for _ in range(100)]
    mon: TreeMonitor[int] = TreeMonitor()
    for proc in procs:
        mon.watch(proc.pid, [proc.pid])
    samples = mon.sample()
    assert len(samples) == 100 and all(s.procs == 1 for s in samples.values())
    assert {k for k in samples} == {p.pid for p in procs}
