"""The scheduler adapters' queue and partition listings: argv builders, pure parsers fed
with captured output (tests/data/schedulers/), the registry, and one run against a real
Slurm when there is one."""

from __future__ import annotations

import getpass
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kale.batch.schedulers import SCHEDULERS, base, cobalt, flux, lsf, pbs, scheduler, slurm
from kale.batch.schedulers.base import (
    STATES,
    Partition,
    QueueJob,
    Scheduler,
    parse_duration,
    run_command,
)
from kale.errors import SchedulerError, UsageError

DATA = Path(__file__).parent / "data" / "schedulers"


def data(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def local(*args: int) -> float:
    """Epoch seconds of a wall-clock time in this machine's zone (how the schedulers that
    print no zone are read)."""
    return datetime(*args).timestamp()  # type: ignore[arg-type]


def by_id(jobs: list[QueueJob]) -> dict[str, QueueJob]:
    return {j.id: j for j in jobs}


def by_name(parts: list[Partition]) -> dict[str, Partition]:
    return {p.name: p for p in parts}


# -- parse_duration -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("1-02:03:04", 93784), ("2-00:00:00", 172800), ("02:03:04", 7384), ("100:00:00", 360000),
    ("03:04", 184), ("1:00", 60), ("5:00", 300), ("1-02", 93600), ("0", 0),
    ("3600", 3600), ("3600.0", 3600), ("43200.0", 43200), (" 04:00:00 ", 14400),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "UNLIMITED", "infinite", "INVALID", "N/A", "NOT_SET", "None", "", "-", "inf", None])
def test_parse_duration_no_limit(text: str | None) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["soon", "1:2:3:4", "12h"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# -- run_command ----------------------------------------------------------------------------

def test_run_command_returns_stdout() -> None:
    assert run_command([sys.executable, "-c", "print('ok')"]) == "ok\n"


def test_run_command_failure_carries_exit_code_and_stderr() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write(' boom \\n'); sys.exit(3)"]
    with pytest.raises(SchedulerError) as e:
        run_command(argv)
    assert str(e.value) == f"{sys.executable} failed (exit 3): boom"
    assert e.value.command == argv and e.value.stderr == "boom" and not e.value.transient


def test_run_command_missing_binary() -> None:
    with pytest.raises(SchedulerError, match="no-such-scheduler-cmd failed") as e:
        run_command(["no-such-scheduler-cmd", "-h"])
    assert e.value.command == ["no-such-scheduler-cmd", "-h"]


def test_run_command_timeout_is_transient() -> None:
    with pytest.raises(SchedulerError) as e:
        # (the command would take 10 minutes: it cannot end within the timeout, however
        # slow the machine)
        run_command([sys.executable, "-c", "import time; time.sleep(600)"], timeout=0.2)
    assert e.value.transient


# -- registry -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCHEDULERS)
def test_registry_gives_each_builtin(name: str) -> None:
    s = scheduler(name)
    assert isinstance(s, Scheduler)
    assert s.name == name and s.psij_name == name


def test_registry_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as e:
        scheduler("sge")
    message = str(e.value)
    assert "'sge'" in message
    for name in SCHEDULERS:
        assert name in message


class FakeEntryPoint:
    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.obj = name, obj

    def load(self) -> Any:
        return self.obj


class OarScheduler(slurm.SlurmScheduler):
    name = "oar"


def test_registry_loads_entry_points_only_for_other_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_entry_points(group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return [FakeEntryPoint("oar", OarScheduler), FakeEntryPoint("bad", object)]

    monkeypatch.setattr("kale.batch.schedulers.entry_points", fake_entry_points)
    assert isinstance(scheduler("slurm"), slurm.SlurmScheduler)
    assert calls == []                                  # built-ins never look
    assert isinstance(scheduler("oar"), OarScheduler)
    assert calls == ["kale.schedulers"]
    with pytest.raises(UsageError, match="does not give a kale Scheduler"):
        scheduler("bad")
    with pytest.raises(UsageError, match="oar"):        # plug-ins are listed too
        scheduler("nope")


def test_to_json() -> None:
    job = slurm.parse_squeue(data("slurm-queue.txt"))[0]
    assert job.to_json()["id"] == "14"
    assert set(job.to_json()) == {"id", "name", "state", "reason", "partition", "nodes",
                                  "user", "submitted", "start", "walltime", "native_state"}
    part = slurm.parse_sinfo(data("slurm-partitions.txt"))[0]
    assert part.to_json() == {"name": "debug", "available": True, "default": True,
                              "nodes": 1, "idle_nodes": 0, "cpus": 2, "idle_cpus": 0,
                              "max_walltime": None}


def test_empty_markers_mean_an_empty_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(argv: list[str], timeout: float = 30) -> str:
        raise SchedulerError("bjobs failed (exit 255): No unfinished job found",
                             command=argv, stderr="No unfinished job found")

    monkeypatch.setattr(base, "run_command", nothing)
    assert scheduler("lsf").queue("alice") == []
    with pytest.raises(SchedulerError):     # Slurm has no such marker: the error stays
        scheduler("slurm").queue("alice")


# -- Slurm ----------------------------------------------------------------------------------
# slurm-queue.txt and slurm-partitions.txt were CAPTURED from a real single-node Slurm 22.05
# (the test cluster) with exactly the argv below: two running jobs, one pending on
# Resources with an expected start, one pending on Priority (named "post|proc 1"), one held.

def test_slurm_argv() -> None:
    s = slurm.SlurmScheduler()
    assert s.queue_argv("alice") == ["squeue", "-h", "-u", "alice", "-o", slurm.QUEUE_FORMAT]
    assert s.queue_argv(None) == ["squeue", "-h", "-o", slurm.QUEUE_FORMAT]
    assert s.partitions_argv() == ["sinfo", "-h", "-o", "%P|%a|%D|%A|%C|%l"]


def test_slurm_parse_queue() -> None:
    jobs = by_id(slurm.SlurmScheduler().parse_queue(data("slurm-queue.txt")))
    assert list(jobs) == ["14", "15", "16", "12", "13"]
    submitted = local(2026, 11, 30, 9, 19, 29)

    running = jobs["12"]
    assert (running.state, running.native_state, running.reason) == ("RUNNING", "RUNNING", None)
    assert running.name == "sleep1" and running.user == "root"
    assert running.partition == "debug" and running.nodes == 1
    assert running.submitted == submitted
    assert running.start == local(2026, 11, 30, 9, 19, 30)
    assert running.walltime == 300                       # "5:00" is minutes:seconds

    waiting = jobs["14"]
    assert (waiting.state, waiting.reason) == ("PENDING", "Resources")
    assert waiting.start == local(2026, 11, 30, 9, 24, 30)   # expected start from backfill
    assert waiting.walltime == 2 * 86400

    queued = jobs["15"]
    assert (queued.state, queued.reason) == ("PENDING", "Priority")
    assert queued.name == "post|proc 1"                  # "|" in the name survives
    assert queued.start is None and queued.walltime == 60

    held = jobs["16"]
    assert (held.state, held.native_state, held.reason) == ("HELD", "PENDING", "JobHeldUser")
    assert held.walltime is None                         # UNLIMITED


def test_slurm_parse_partitions() -> None:
    [debug] = slurm.SlurmScheduler().parse_partitions(data("slurm-partitions.txt"))
    assert debug == Partition(name="debug", available=True, default=True, nodes=1,
                              idle_nodes=0, cpus=2, idle_cpus=0, max_walltime=None)


def test_slurm_partitions_default_down_and_split_lines() -> None:
    # Written for the test (the real cluster has one partition): a second partition that
    # is down, and one that sinfo splits over two lines.
    text = ("batch*|up|4|2/2|64/64/0/128|1-00:00:00\n"
            "gpu|down|1|0/1|0/16/0/16|4:00:00\n"
            "gpu|down|1|1/0|16/0/0/16|4:00:00\n")
    parts = by_name(slurm.parse_sinfo(text))
    assert parts["batch"].default and parts["batch"].available
    assert parts["batch"].max_walltime == 86400 and parts["batch"].idle_cpus == 64
    gpu = parts["gpu"]
    assert not gpu.default and not gpu.available
    assert (gpu.nodes, gpu.idle_nodes, gpu.cpus, gpu.idle_cpus) == (2, 1, 32, 16)


@pytest.mark.parametrize(("native", "reason", "state"), [
    ("COMPLETING", None, "COMPLETING"), ("COMPLETED", None, "COMPLETED"),
    ("FAILED", "NonZeroExitCode", "FAILED"), ("CANCELLED", None, "CANCELLED"),
    ("TIMEOUT", None, "TIMEOUT"), ("SUSPENDED", None, "SUSPENDED"),
    ("PENDING", "JobHeldAdmin", "HELD"), ("CONFIGURING", None, "RUNNING"),
    ("NODE_FAIL", None, "FAILED"), ("WHATEVER", None, "UNKNOWN"),
])
def test_slurm_states(native: str, reason: str | None, state: str) -> None:
    assert slurm.job_state(native, reason) == state


def test_slurm_live(slurm: str) -> None:
    """The real queue() and partitions() against the Slurm on this machine: a held job
    (which never runs) shows up as HELD."""
    s = scheduler("slurm")
    parts = s.partitions()
    assert parts and sum(p.default for p in parts) == 1
    assert all(p.nodes and p.cpus for p in parts)
    done = subprocess.run(["sbatch", "--parsable", "--hold", "-J", "kale-queue-test",
                           "-t", "1", "--wrap", "true"],
                          capture_output=True, text=True, timeout=60, check=True)
    jobid = done.stdout.strip().split(";")[0]
    try:
        jobs = by_id(s.queue(getpass.getuser()))
        assert jobid in jobs
        job = jobs[jobid]
        assert (job.state, job.reason, job.name) == ("HELD", "JobHeldUser", "kale-queue-test")
        assert job.walltime == 60 and job.user == getpass.getuser()
        assert job.partition in {p.name for p in parts}
        assert all(j.state in STATES for j in s.queue())
    finally:
        subprocess.run(["scancel", jobid], capture_output=True, timeout=60, check=False)


# -- PBS ------------------------------------------------------------------------------------
# pbs-queue.json, pbs-queues.json and pbs-server.json are TRANSCRIBED (no PBS here): they
# follow `qstat -f -F json` / `-Q -f -F json` / `-B -f -F json` output of PBS Pro 2020-2022
# as found in public repositories (attribute names, nesting, ctime-style times, the
# "Not Running: ..." comment, the "estimated" object of a queued job).

def test_pbs_argv() -> None:
    s = pbs.PbsScheduler()
    assert s.queue_argv("alice") == ["qstat", "-f", "-F", "json"]
    assert s.partitions_argv() == ["qstat", "-Q", "-f", "-F", "json"]
    assert s.server_argv() == ["qstat", "-B", "-f", "-F", "json"]


def test_pbs_parse_queue() -> None:
    jobs = by_id(pbs.PbsScheduler().parse_queue(data("pbs-queue.json")))
    assert set(jobs) == {"4101.pbs01", "4102.pbs01", "4103.pbs01", "4095.pbs01"}

    run = jobs["4101.pbs01"]
    assert (run.state, run.native_state, run.reason) == ("RUNNING", "R", None)
    assert (run.name, run.user, run.partition, run.nodes) == ("train-a", "alice", "workq", 2)
    assert run.submitted == local(2024, 11, 18, 14, 51, 58)
    assert run.start == local(2024, 11, 18, 14, 52, 0)
    assert run.walltime == 4 * 3600

    queued = jobs["4102.pbs01"]
    assert (queued.state, queued.native_state) == ("PENDING", "Q")
    assert queued.reason == "Not Running: Insufficient amount of resource: ncpus"
    assert queued.start == local(2024, 11, 18, 18, 52, 0)    # estimated.start_time
    assert queued.nodes == 4 and queued.walltime == 12 * 3600

    held = jobs["4103.pbs01"]
    assert (held.state, held.reason, held.start, held.partition) == ("HELD", None, None, "debug")
    assert held.walltime == 1800

    assert jobs["4095.pbs01"].user == "bob" and jobs["4095.pbs01"].walltime == 72 * 3600


def test_pbs_user_filter() -> None:
    text = data("pbs-queue.json")
    assert [j.id for j in pbs.parse_qstat_jobs(text, "bob")] == ["4095.pbs01"]
    assert len(pbs.parse_qstat_jobs(text, "alice")) == 3
    assert pbs.parse_qstat_jobs(text, "carol") == []
    assert pbs.parse_qstat_jobs('{"timestamp":1,"pbs_version":"2022","pbs_server":"x"}') == []


def test_pbs_queue_filters_by_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake(argv: list[str], timeout: float = 30) -> str:
        seen.append(argv)
        return data("pbs-queue.json")

    monkeypatch.setattr(base, "run_command", fake)
    assert [j.user for j in scheduler("pbs").queue("bob")] == ["bob"]
    assert seen == [["qstat", "-f", "-F", "json"]]


def test_pbs_parse_partitions() -> None:
    parts = by_name(pbs.parse_qstat_queues(data("pbs-queues.json"),
                                           pbs.parse_default_queue(data("pbs-server.json"))))
    assert list(parts) == ["workq", "debug", "long", "maint"]
    workq = parts["workq"]
    assert workq.default and workq.available
    assert (workq.nodes, workq.idle_nodes, workq.cpus, workq.idle_cpus) == (8, 6, 256, 192)
    assert workq.max_walltime == 86400
    assert parts["debug"].max_walltime == 3600 and not parts["debug"].default
    assert parts["debug"].nodes is None                 # no vnodes tied to the queue
    assert parts["long"].max_walltime is None
    assert not parts["maint"].available


def test_pbs_partitions_reads_the_default_from_the_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"-Q": data("pbs-queues.json"), "-B": data("pbs-server.json")}
    monkeypatch.setattr(base, "run_command", lambda argv, timeout=30: answers[argv[1]])
    assert [p.name for p in scheduler("pbs").partitions() if p.default] == ["workq"]

    def no_server(argv: list[str], timeout: float = 30) -> str:
        if argv[1] == "-B":
            raise SchedulerError("qstat failed (exit 1): not allowed", stderr="not allowed")
        return data("pbs-queues.json")

    monkeypatch.setattr(base, "run_command", no_server)
    assert not any(p.default for p in scheduler("pbs").partitions())


@pytest.mark.parametrize(("info", "state"), [
    ({"job_state": "F", "Exit_status": 0}, "COMPLETED"),
    ({"job_state": "F", "Exit_status": 1}, "FAILED"),
    ({"job_state": "F", "Exit_status": 265}, "CANCELLED"),
    ({"job_state": "F", "Exit_status": 271,
      "comment": "job killed: walltime 3630 exceeded limit 3600"}, "TIMEOUT"),
    ({"job_state": "E"}, "COMPLETING"), ({"job_state": "S"}, "SUSPENDED"),
    ({"job_state": "W"}, "PENDING"), ({"job_state": "B"}, "RUNNING"),
    ({"job_state": "M"}, "UNKNOWN"),
])
def test_pbs_states(info: dict[str, Any], state: str) -> None:
    assert pbs.job_state(info["job_state"], info) == state


# -- LSF ------------------------------------------------------------------------------------
# lsf-queue.json and lsf-partitions.json are TRANSCRIBED (no LSF here) from LSF 10.1
# documentation and `bjobs -o ... -json` / `bqueues -o ... -json` output in public
# repositories: upper-case keys under RECORDS, "" for empty fields, year-less time stamps,
# run limits in minutes (with "/host" under ABS_RUNLIMIT), pending reasons ending in ";".

NOW_LSF = local(2024, 11, 18, 16, 0, 0)


def test_lsf_argv() -> None:
    s = lsf.LsfScheduler()
    assert s.queue_argv("alice") == ["bjobs", "-u", "alice", "-o", lsf.JOB_FIELDS, "-json"]
    assert s.queue_argv(None)[1:3] == ["-u", "all"]
    assert s.partitions_argv() == ["bqueues", "-o", "queue_name status runlimit", "-json"]


def test_lsf_parse_queue() -> None:
    jobs = by_id(lsf.parse_bjobs(data("lsf-queue.json"), now=NOW_LSF))
    run = jobs["806290"]
    assert (run.state, run.native_state, run.reason) == ("RUNNING", "RUN", None)
    assert (run.name, run.user, run.partition, run.nodes) == ("sim-a", "alice", "batch", 2)
    assert run.submitted == local(2024, 11, 18, 14, 51)
    assert run.start == local(2024, 11, 18, 14, 52)
    assert run.walltime == 4 * 3600                      # "240.0" minutes

    pend = jobs["806301"]
    assert (pend.state, pend.nodes) == ("PENDING", None)
    assert pend.reason == "Not enough processors to meet the job's spanning requirement: 6 hosts"
    assert pend.start == local(2024, 11, 18, 18, 52)     # estimated_start_time
    assert pend.walltime == 12 * 3600

    held = jobs["806305"]
    assert (held.state, held.native_state) == ("HELD", "PSUSP")
    assert held.reason == "The job was suspended by the user while pending"
    assert held.start is None and held.walltime == 1800

    susp = jobs["806188"]
    assert (susp.state, susp.native_state) == ("SUSPENDED", "USUSP")
    assert susp.walltime == 86400                        # "1440.0/login1"
    assert susp.submitted == local(2024, 11, 17, 9, 30)


def test_lsf_parse_queue_uses_the_current_year_by_default() -> None:
    [job, *_] = lsf.LsfScheduler().parse_queue(data("lsf-queue.json"))
    assert job.submitted is not None
    assert abs(job.submitted - datetime.now().timestamp()) < 366 * 86400


def test_lsf_time() -> None:
    new_year = local(2025, 1, 1, 0, 30)
    assert lsf.lsf_time("Dec 31 23:50", now=new_year) == local(2024, 12, 31, 23, 50)
    assert lsf.lsf_time("Jan  1 08:00 E", now=local(2024, 12, 31, 22, 0)) == \
        local(2025, 1, 1, 8, 0)
    assert lsf.lsf_time("Dec 28 19:56 L", now=new_year) == local(2024, 12, 28, 19, 56)
    assert lsf.lsf_time("Jun 10 13:05:07 2023", now=new_year) == local(2023, 6, 10, 13, 5, 7)
    assert lsf.lsf_time("", now=new_year) is None and lsf.lsf_time("-") is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("1440.0", 86400), ("3.0/hostA", 180), ("24:00:00", 86400), ("", None), ("-", None)])
def test_lsf_run_limit(text: str, seconds: int | None) -> None:
    assert lsf.run_limit(text) == seconds


def test_lsf_parse_partitions() -> None:
    parts = by_name(lsf.LsfScheduler().parse_partitions(data("lsf-partitions.json")))
    assert list(parts) == ["batch", "debug", "killable", "maint"]
    assert parts["batch"].available and parts["batch"].max_walltime == 86400
    assert parts["debug"].max_walltime == 7200
    assert not parts["killable"].available and parts["killable"].max_walltime is None
    assert not parts["maint"].available
    assert not any(p.default for p in parts.values())    # bqueues does not say


# -- Flux -----------------------------------------------------------------------------------
# flux-queue.txt and flux-partitions.txt are TRANSCRIBED (no Flux here): what
# `flux jobs -n -o QUEUE_FORMAT` and `flux queue list -n -o PARTITION_FORMAT` print, per the
# flux-jobs(1)/flux-queue(1) field lists and flux-core's formatter (epoch floats, 0.0 for
# unset times and unlimited durations, "inf" for an unlimited queue, "*" on the default).

def test_flux_argv() -> None:
    s = flux.FluxScheduler()
    assert s.queue_argv("alice") == ["flux", "jobs", "-n", "-u", "alice", "-o",
                                     flux.QUEUE_FORMAT]
    assert s.queue_argv(None)[3:5] == ["-u", "all"]
    assert s.partitions_argv() == ["flux", "queue", "list", "-n", "-o",
                                   flux.PARTITION_FORMAT]


def test_flux_parse_queue() -> None:
    jobs = by_id(flux.FluxScheduler().parse_queue(data("flux-queue.txt")))
    pend = jobs["ƒ2RJ2nYbX9"]
    assert (pend.state, pend.native_state, pend.partition) == ("PENDING", "SCHED", "batch")
    assert pend.submitted == pytest.approx(1731945912.4413474)
    assert pend.start == 1731959520.0                    # sched.t_estimate
    assert pend.walltime == 43200 and pend.nodes is None

    held = jobs["ƒ2RJ7pYtkF"]
    assert (held.state, held.native_state, held.start) == ("HELD", "SCHED", None)

    dep = jobs["ƒ2RJAhE8Tj"]
    assert (dep.state, dep.native_state, dep.name) == ("PENDING", "DEPEND", "after|b")

    run = jobs["ƒ2R6kdbJ8n"]
    assert (run.state, run.nodes, run.user, run.walltime) == ("RUNNING", 2, "alice", 14400)
    assert run.start == pytest.approx(1731945120.5013556)

    assert jobs["ƒ2Qxk4ZrdW"].walltime is None            # duration 0.0: no limit
    assert jobs["ƒ2R3fTmGqV"].state == "COMPLETING"


@pytest.mark.parametrize(("state", "result", "urgency", "normalized"), [
    ("INACTIVE", "COMPLETED", 16, "COMPLETED"), ("INACTIVE", "FAILED", 16, "FAILED"),
    ("INACTIVE", "CANCELED", 16, "CANCELLED"), ("INACTIVE", "TIMEOUT", 16, "TIMEOUT"),
    ("PRIORITY", "", 16, "PENDING"), ("DEPEND", "", 0, "HELD"), ("RUN", "", 0, "RUNNING"),
])
def test_flux_states(state: str, result: str, urgency: int, normalized: str) -> None:
    assert flux.job_state(state, result, urgency) == normalized


def test_flux_inactive_native_state() -> None:
    [job] = flux.parse_flux_jobs(
        "ƒ2R3fTmGqV|INACTIVE|TIMEOUT|16|bob|batch|1|1731944702.9|1731944703.3|60.0|||x\n")
    assert (job.state, job.native_state) == ("TIMEOUT", "INACTIVE/TIMEOUT")


def test_flux_parse_partitions() -> None:
    parts = by_name(flux.FluxScheduler().parse_partitions(data("flux-partitions.txt")))
    batch = parts["batch"]
    assert batch.default and batch.available and batch.max_walltime == 86400
    assert (batch.nodes, batch.idle_nodes, batch.cpus, batch.idle_cpus) == (8, 5, 256, 168)
    assert not parts["debug"].default and parts["debug"].max_walltime == 3600
    assert not parts["maint"].available and parts["maint"].max_walltime is None


def test_flux_anonymous_queue() -> None:
    [only] = flux.parse_flux_queues("|y|y|inf|4|4|128|128\n")
    assert (only.name, only.default, only.available, only.nodes) == ("", True, True, 4)


# -- Cobalt ---------------------------------------------------------------------------------
# cobalt-queue.txt and cobalt-partitions.txt are TRANSCRIBED (no Cobalt here; ALCF retired
# it) from Cobalt's own qstat tests and users' captures: `qstat -f -l` "JobID: N" blocks of
# "Key : value" lines, "+0000 (UTC)" times, and `qstat -Q -l` "Name: Q" blocks.

def test_cobalt_argv() -> None:
    s = cobalt.CobaltScheduler()
    assert s.queue_argv("alice") == ["qstat", "-f", "-l", "-u", "alice"]
    assert s.queue_argv(None) == ["qstat", "-f", "-l"]
    assert s.partitions_argv() == ["qstat", "-Q", "-l"]


def test_cobalt_parse_queue() -> None:
    jobs = by_id(cobalt.CobaltScheduler().parse_queue(data("cobalt-queue.txt")))
    assert list(jobs) == ["347101", "347106", "347112"]
    run = jobs["347101"]
    assert (run.state, run.native_state, run.reason) == ("RUNNING", "running", None)
    assert (run.name, run.user, run.partition, run.nodes) == ("sim-a", "alice", "default", 8)
    assert run.submitted == datetime.fromisoformat("2019-06-04T14:07:53+00:00").timestamp()
    assert run.start == datetime.fromisoformat("2019-06-04T14:10:04+00:00").timestamp()
    assert run.walltime == 3600

    held = jobs["347106"]
    assert (held.state, held.reason, held.partition) == ("HELD", "user hold", "debug-cache-quad")
    assert held.start is None and held.walltime == 600

    queued = jobs["347112"]
    assert (queued.state, queued.name, queued.nodes) == ("PENDING", "", 128)
    assert queued.walltime == 3 * 3600


def test_cobalt_parse_partitions() -> None:
    parts = by_name(cobalt.CobaltScheduler().parse_partitions(data("cobalt-partitions.txt")))
    assert list(parts) == ["debug-cache-quad", "default", "R.maint"]
    assert parts["default"].default and parts["default"].available
    assert parts["default"].nodes == 4392 and parts["default"].max_walltime == 86400
    assert parts["debug-cache-quad"].max_walltime == 3600
    assert not parts["debug-cache-quad"].default
    maint = parts["R.maint"]
    assert not maint.available and maint.nodes is None and maint.max_walltime is None


def test_every_parser_gives_known_states() -> None:
    outputs = {"slurm": "slurm-queue.txt", "pbs": "pbs-queue.json", "lsf": "lsf-queue.json",
               "flux": "flux-queue.txt", "cobalt": "cobalt-queue.txt"}
    for name in SCHEDULERS:
        jobs = scheduler(name).parse_queue(data(outputs[name]))
        assert jobs and all(j.state in STATES for j in jobs), name
        assert scheduler(name).parse_queue("") == []
