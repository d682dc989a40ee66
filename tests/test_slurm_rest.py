"""Slurm through its REST API (slurmrestd, JWT): ``executor: {kind: slurm, via: rest, url,
token_file, token_command}``.

The parsers are checked against answers captured from a real slurmrestd 22.05
(tests/data/slurmrestd/). The rest runs workflows through the test cluster's slurmrestd
(scripts/services/slurm.sh) from a ``kale`` whose PATH has no Slurm command at all, and
checks what Slurm itself says with the real scontrol: tasks run and fail with their exit
codes, a cancel cancels the job, a token that expires while a job runs is renewed (from
the file, or by the token command) and the run finishes, and a wrong URL or token gives a
message that says what is wrong.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, SlurmRest, gate_sh, wait_until
from kale.batch import slurm_rest as sr
from kale.batch.rest_auth import TokenError, TokenSource
from kale.model.executor import ExecutorSpec
from kale.store import workers as wstore
from kale.store.store import Store

DATA = Path(__file__).parent / "data" / "slurmrestd"
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "sacct", "sacctmgr",
                  "srun", "salloc", "sattach", "sbcast", "sdiag", "sprio", "sreport",
                  "sshare", "sstat", "strigger", "scrontab")


def captured(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text())


def jwt(**claims: Any) -> str:
    """A token shaped like Slurm's (its signature is not checked by Kale)."""
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


# -- pure: slurmrestd's answers ------------------------------------------------------------

@pytest.mark.parametrize(("name", "state", "exit_code", "final"), [
    ("job-running", "ACTIVE", 0, False),
    ("job-pending-held", "QUEUED", 0, False),
    ("job-completed", "COMPLETED", 0, True),
    ("job-failed", "FAILED", 3, True),            # exit_code 768: the raw wait status
    ("job-cancelled", "CANCELED", 128 + 15, True),  # ended by SIGTERM
    ("job-timeout", "FAILED", None, True),
])
def test_job_states_and_exit_codes_from_captured_answers(name: str, state: str,
                                                        exit_code: int | None,
                                                        final: bool) -> None:
    doc = captured(name)
    native = str(doc["jobs"][0]["job_id"])
    info = sr.parse_job(doc, native)
    assert info is not None
    assert (info.state, info.final) == (state, final)
    if exit_code is not None:
        assert info.exit_code == exit_code
    if name == "job-timeout":
        # the manager reads "time limit" in the message as the walltime reached
        assert "time limit" in (info.message or "")
    if name == "job-pending-held":
        assert info.reason == "JobHeldUser"
    assert sr.parse_job(doc, "1") is None


def test_exit_status_decodes_raw_wait_statuses() -> None:
    assert [sr.exit_status(s) for s in (0, 768, 256 * 255, 9, 15, None)] == \
        [0, 3, 255, 137, 143, None]


def test_refusals_read_in_slurms_words() -> None:
    assert sr.submitted_id(captured("submit-ok")) == str(captured("submit-ok")["job_id"])
    for name, words in [("submit-refused-partition", "Invalid partition name specified"),
                        ("submit-refused-walltime", "Requested time limit is invalid"),
                        ("submit-bad-environment", "environment must be a dictionary")]:
        doc = captured(name)
        assert sr.submitted_id(doc) is None
        assert words in sr.failure_text(doc)
    assert sr.failure_text(captured("submit-bad-environment")).endswith(
        "Failure during parsing")  # the summary last


def test_a_job_is_gone_only_when_slurm_says_so() -> None:
    """2017 (invalid job id) means gone; an expired or bad token's "Unable to find JobId"
    (error number -1) must not end a job that still runs."""
    assert sr.job_gone(captured("job-unknown"))
    assert sr.job_gone(captured("cancel-unknown"))
    for name in ("job-bad-token", "job-expired-token", "job-running"):
        assert not sr.job_gone(captured(name)), name
    assert sr.failures(captured("job-bad-token"))[0].number == -1


def test_the_submission_repeats_the_directives_as_job_properties() -> None:
    props = sr.job_properties(
        name="kale-t-1", directory="/work", environment={"A": "1"}, walltime_seconds=61,
        nodes=2, ranks=4, ranks_per_node=2, cpus_per_rank=3, gpus_per_rank=1,
        memory_bytes=(1 << 30) + 1, partition="debug", account="proj",
        options={"qos": "high", "constraint": "knl", "mail-type": "END", "export": "NONE"})
    assert props == {
        "name": "kale-t-1", "current_working_directory": "/work", "environment": {"A": "1"},
        "standard_output": "/dev/null", "standard_error": "/dev/null", "nodes": [2, 2],
        "time_limit": 2, "tasks": 4, "tasks_per_node": 2, "cpus_per_task": 3,
        "gpus_per_task": "1", "memory_per_node": 1025, "partition": "debug",
        "account": "proj", "qos": "high", "constraints": "knl", "mail_type": "END"}
    env = sr.job_environment({"HOME": "/h", "SLURM_JWT": "secret"}, {"X": "y"})
    assert env["HOME"] == "/h" and env["X"] == "y" and "SLURM_JWT" not in env
    assert "PATH" in env


def test_tokens_are_read_from_files_and_command_output() -> None:
    token = jwt(exp=2_000_000_000, iat=1_999_999_000, sun="alice")
    for text in (token, f"SLURM_JWT={token}\n", f"export SLURM_JWT={token}", f"\n{token}\n\n"):
        assert sr.token_from_text(text) == token
    assert sr.token_claims(token) == {"exp": 2_000_000_000, "iat": 1_999_999_000, "sun": "alice"}
    assert sr.token_claims("not-a-jwt") == {} and sr.token_claims("a.b!.c") == {}
    assert sr.token_from_text("  \n") == ""


# -- the token source: files re-read when they change, the command run near expiry ----------

def test_a_changed_token_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first, second = jwt(exp=time.time() + 3600, sun="me"), jwt(exp=time.time() + 7200)
    path.write_text(first + "\n")
    source = TokenSource(str(path))
    assert source.token() == first and source.user(first) == "me"
    tmp = tmp_path / "token.new"
    tmp.write_text(second)
    tmp.replace(path)  # how a tool renews it: a new file put in place
    assert source.token() == second
    # refused, and the file holds nothing else: no other token to try
    assert source.renew(second) is None
    path.write_text("")
    assert source.token() == second  # an emptied file does not lose the token Kale has
    with pytest.raises(TokenError, match="cannot read the Slurm token file"):
        TokenSource(str(tmp_path / "missing")).token()


def test_the_token_command_renews_a_token_near_its_expiry(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(jwt(exp=time.time() - 5, iat=time.time() - 65))  # expired
    fresh = jwt(exp=time.time() + 600, iat=time.time())
    command = [sys.executable, "-c", f"print('SLURM_JWT={fresh}')"]
    source = TokenSource(str(path), command)
    assert source.token() == fresh
    assert source.expired(jwt(exp=1)) == 1 and source.expired(fresh) is None
    broken = TokenSource(None, [sys.executable, "-c", "import sys; sys.exit('no JWT here')"])
    with pytest.raises(TokenError, match="failed \\(exit 1\\): no JWT here"):
        broken.token()
    with pytest.raises(TokenError, match="needs token_file or token_command"):
        TokenSource()


# -- the executor's settings ---------------------------------------------------------------

def test_rest_settings_are_validated_with_what_and_where(tmp_path: Path, kale: Kale) -> None:
    ok, problems = ExecutorSpec.parse({"kind": "slurm", "via": "rest", "url": "http://h:6820",
                                       "token_file": "~/.t", "token_command": ["x", "y"]})
    assert not problems and ok.rest is not None and ok.rest.token_command == ("x", "y")
    assert ExecutorSpec.parse("slurm")[0].rest is None
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: bad\nexecutor: {kind: slurm, via: rest, url: 'ftp://h',\n"
                  "           token_command: []}\ntasks:\n  a: {shell: echo}\n")
    out = kale("run", str(wf))
    assert out.returncode == 2, out.stderr
    assert "wf.yaml:2: executor.url: must be an http:// or https:// URL" in out.stderr
    assert "executor.token_command: must be a command as a non-empty list" in out.stderr
    wf.write_text("name: bad\nexecutor: {kind: pbs, via: rest, url: 'http://h'}\n"
                  "tasks:\n  a: {shell: echo}\n")
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert "executor.via: 'via: rest' is for slurm" in out.stderr
    assert "needs token_file (a file holding a Slurm JWT) or token_command" in out.stderr
    wf.write_text("name: bad\nexecutor: {kind: slurm, token_file: x}\ntasks:\n  a: {shell: echo}\n")
    out = kale("validate", str(wf))
    assert out.returncode == 2 and "executor.token_file: only with 'via: rest'" in out.stderr


@pytest.mark.parametrize("executor", [
    {"kind": "slurm", "via": "rest", "url": "http://h:6820", "token_file": "~/.t"},
    {"kind": "slurm", "via": "rest", "url": "https://h", "token_command": ["scontrol", "token"]},
    {"kind": "slurm", "mode": "pilot", "via": "rest", "url": "http://h", "token_file": "t",
     "nodes": 1},
    {"kind": "slurm", "via": "cli"},
    {"kind": "slurm", "via": "rest", "url": "http://h:6820"},
    {"kind": "slurm", "via": "rest", "token_file": "x"},
    {"kind": "pbs", "via": "rest", "url": "http://h", "token_file": "x"},
    {"kind": "slurm", "url": "http://h", "token_file": "x"},
    {"kind": "slurm", "via": "cli", "token_command": ["x"]},
    {"kind": "slurm", "via": "soap"},
    {"kind": "slurm", "via": "rest", "url": "ftp://h", "token_file": "x"},
    {"kind": "slurm", "via": "rest", "url": "http://h", "token_command": []},
    {"kind": "slurm", "via": "rest", "url": "http://h", "token_command": ["a", 1]},
    {"kind": "slurm", "via": "rest", "url": "http://h", "token_file": ""},
    {"kind": "slurm", "via": "rest", "url": "http://h", "token_file": None,
     "token_command": ["x"]},
    {"kind": "slurm", "via": "rest", "url": None, "token_file": "x"},
    {"kind": "slurm", "url": None},
])
def test_the_schema_and_the_model_agree_on_rest_settings(executor: dict[str, Any]) -> None:
    import jsonschema

    from kale.spec import schema

    doc = {"name": "x", "executor": executor, "tasks": {"t": {"shell": "echo"}}}
    in_schema = jsonschema.Draft202012Validator(schema()).is_valid(doc)
    assert in_schema == (not ExecutorSpec.parse(executor)[1])


# -- the real slurmrestd, from a kale without the Slurm commands ---------------------------

class NoSlurmKale(Kale):
    """``kale`` with a PATH where no Slurm command is (what a JupyterHub without Slurm
    has): every other command of PATH is linked into one directory, the Slurm ones left
    out. The manager ``kale run`` starts inherits it."""

    def __init__(self, home: Path, cwd: Path) -> None:
        super().__init__(home, cwd)
        self.bin = cwd / "bin-without-slurm"
        self.bin.mkdir(exist_ok=True)
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            if not folder or not os.path.isdir(folder):
                continue
            for entry in os.scandir(folder):
                target = self.bin / entry.name
                if entry.name in SLURM_COMMANDS or target.exists() or target.is_symlink():
                    continue
                target.symlink_to(entry.path)

    def env(self) -> dict[str, str]:
        return {**super().env(), "PATH": str(self.bin)}


@pytest.fixture
def nokale(home: Path, tmp_path: Path) -> Any:
    k = NoSlurmKale(home, tmp_path)
    assert all(shutil.which(c, path=str(k.bin)) is None for c in SLURM_COMMANDS)
    yield k
    k("manager", "stop")
    # A job whose worker lost its manager would hold a CPU of the small test cluster for
    # minutes: cancel what this test's manager left queued or running.
    if (home / "kale.db").exists():
        store = Store(f"sqlite:///{home / 'kale.db'}")
        try:
            left = [str(j["native_id"]) for j in wstore.jobs(store)
                    if j["native_id"] and j["state"] in ("NEW", "QUEUED", "ACTIVE")]
        finally:
            store.close()
        if left and shutil.which("scancel"):
            subprocess.run(["scancel", *left], capture_output=True, timeout=60)


def workflow(path: Path, rest: SlurmRest, tasks: str, **access: Any) -> Path:
    executor = {"kind": "slurm", "via": "rest", "url": rest.url, **access}
    path.write_text(f"name: rest\nexecutor: {json.dumps(executor)}\ntasks:\n{tasks}")
    return path


def write_token(path: Path, token: str) -> None:
    """Put a new token in place the way a renewing tool does (a new file, renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token + "\n")
    tmp.replace(path)


def status(kale: Kale, run_id: str) -> dict[str, Any]:
    out = kale("status", run_id, "--json")
    assert out.returncode in (0, 1), out.stderr
    return {t["name"]: t for t in json.loads(out.stdout)["tasks"]}


def jobs_of(home: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """The batch jobs the manager recorded for the run, by task."""
    store = Store(f"sqlite:///{home / 'kale.db'}")
    try:
        rows = wstore.jobs(store)
    finally:
        store.close()
    return {j["info"]["key"][1]: j for j in rows
            if j["info"].get("key") and j["info"]["key"][0] == run_id}


def native_id(home: Path, run_id: str, task: str) -> str:
    return str(wait_until(lambda: (jobs_of(home, run_id).get(task) or {}).get("native_id"),
                          what=f"the Slurm job of {task}"))


def run_and_job(nokale: NoSlurmKale, home: Path, task: str) -> tuple[str, str]:
    """The run being started (the home's only one) and the Slurm job of its ``task``."""
    run_id = str(wait_until(lambda: json.loads(nokale("runs", "--json").stdout or "[]"),
                            what="the run")[0]["id"])
    return run_id, native_id(home, run_id, task)


def scontrol(job: str) -> str:
    """What the real Slurm says of a job (``JobState=... ExitCode=...``)."""
    return subprocess.run(["scontrol", "show", "job", job, "-o"], capture_output=True,
                          text=True, timeout=60).stdout


def manager_log(home: Path) -> str:
    path = home / "manager.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tasks_run_through_slurmrestd_without_slurm_commands(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, home: Path, tmp_path: Path) -> None:
    token = tmp_path / "slurm-token"
    write_token(token, slurm_rest.token())
    (tmp_path / "steps.py").write_text("import os\n\ndef double(x):\n"
                                       "    return [2 * x, os.environ['SLURM_JOB_ID']]\n")
    wf = workflow(tmp_path / "wf.yaml", slurm_rest, """\
  hello:
    shell: echo "job $SLURM_JOB_ID in $PWD"
  py:
    python: steps:double
    parameters: {x: 21}
  broken:
    shell: echo "job $SLURM_JOB_ID"; exit 3
  later:
    shell: echo "job $SLURM_JOB_ID"
    after: [hello]
""", token_file=str(token))
    out = nokale("run", str(wf), timeout=240)
    assert out.returncode == 1, out.stderr
    run_id = out.stdout.strip()
    tasks = status(nokale, run_id)
    assert {n: t["state"] for n, t in tasks.items()} == {
        "hello": "SUCCEEDED", "py": "SUCCEEDED", "broken": "FAILED", "later": "SUCCEEDED"}
    assert tasks["broken"]["exit_code"] == 3
    # The manager that submitted them had no Slurm command on its PATH.
    manager = json.loads(nokale("manager", "status", "--json").stdout)
    environ = Path(f"/proc/{manager['pid']}/environ").read_bytes().split(b"\0")
    path = next(e for e in environ if e.startswith(b"PATH=")).decode()[5:]
    assert path == str(nokale.bin) and shutil.which("sbatch", path=path) is None
    # Each task ran in a Slurm job of its own, which the real Slurm knows by Kale's name.
    jobs = jobs_of(home, run_id)
    assert {j["info"]["rest"]["url"] for j in jobs.values()} == {slurm_rest.url}
    ran_in = {n: nokale("logs", run_id, n).stdout.split()[1] for n in ("hello", "later",
                                                                          "broken")}
    ran_in["py"] = tasks["py"]["result"][1]
    assert tasks["py"]["result"][0] == 42
    assert ran_in == {n: jobs[n]["native_id"] for n in ran_in}
    assert len(set(ran_in.values())) == 4
    shown = scontrol(ran_in["hello"])
    assert f"JobName={jobs['hello']['id']}" in shown and "WorkDir=" in shown


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cancelling_a_running_task_cancels_its_slurm_job(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, home: Path, tmp_path: Path) -> None:
    token = tmp_path / "slurm-token"
    write_token(token, slurm_rest.token())
    gate = tmp_path / "never"
    # The task ignores SIGTERM: its worker cannot end it (and the job) before Kale's cancel
    # of the job reaches Slurm.
    wf = workflow(tmp_path / "wf.yaml", slurm_rest,
                  f"  wait:\n    shell: trap '' TERM; {gate_sh(gate)}\n",
                  token_file=str(token))
    run = nokale.popen("run", str(wf))
    try:
        run_id, job = run_and_job(nokale, home, "wait")
        wait_until(lambda: status(nokale, run_id)["wait"]["state"] == "RUNNING",
                   what="the task running in its job")
        assert "JobState=RUNNING" in scontrol(job)
        out = nokale("cancel", run_id)
        assert out.returncode == 0, out.stderr
        # The real Slurm says the job was cancelled.
        wait_until(lambda: "JobState=CANCELLED" in scontrol(job), what=f"job {job} cancelled")
        assert run.wait(timeout=120) != 0
        assert status(nokale, run_id)["wait"]["state"] == "CANCELLED"
    finally:
        gate.touch()
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=60)


def _expired_token(rest: SlurmRest) -> str:
    """A real token of this cluster whose ``exp`` has passed."""
    token = rest.token(1)
    exp = sr.token_claims(token)["exp"]
    wait_until(lambda: time.time() > exp and rest.ping(token)[0] != 200,
               what="Slurm refusing the short token")
    return token


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_token_expiring_mid_run_is_renewed_by_the_token_command(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, home: Path, tmp_path: Path) -> None:
    """The token file goes stale while a job runs: the token command gives a fresh token,
    polling goes on (the job's end is seen), and the next task's job is submitted."""
    token = tmp_path / "slurm-token"
    first = slurm_rest.token(600)
    write_token(token, first)
    gate = tmp_path / "gate"
    wf = workflow(tmp_path / "wf.yaml", slurm_rest, f"""\
  first:
    shell: {gate_sh(gate)}; echo "job $SLURM_JOB_ID"
  second:
    shell: echo "job $SLURM_JOB_ID"
    after: [first]
""", token_file=str(token), token_command=slurm_rest.token_command(120))
    run = nokale.popen("run", str(wf))
    try:
        run_id, job = run_and_job(nokale, home, "first")
        wait_until(lambda: "JobState=RUNNING" in scontrol(job), what="the first job running")
        expired = _expired_token(slurm_rest)
        write_token(token, expired)
        wait_until(lambda: "renewed the Slurm token with" in manager_log(home),
                   what="Kale renewing the token")
        gate.touch()
        _, err = run.communicate(timeout=240)
        assert run.returncode == 0, err
        tasks = status(nokale, run_id)
        assert {n: t["state"] for n, t in tasks.items()} == {"first": "SUCCEEDED",
                                                            "second": "SUCCEEDED"}
        jobs = jobs_of(home, run_id)
        # Polling saw the first job end (after the renewal), and the second job was
        # submitted with the renewed token.
        wait_until(lambda: jobs_of(home, run_id)["first"]["state"] == "COMPLETED",
                   what="the first job's end seen through slurmrestd")
        assert jobs["second"]["native_id"] and "JobState=COMPLETED" in scontrol(
            jobs["second"]["native_id"])
        text = manager_log(home)
        assert first not in text and expired not in text  # never a token in a log
    finally:
        gate.touch()
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_token_file_replaced_after_it_expired_lets_the_run_finish(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, home: Path, tmp_path: Path) -> None:
    """Without a token command: the token in the file expires while a job runs (Kale says
    so and keeps the job), then a new token is put in the file, and the run finishes."""
    token = tmp_path / "slurm-token"
    write_token(token, slurm_rest.token(600))
    gate = tmp_path / "gate"
    wf = workflow(tmp_path / "wf.yaml", slurm_rest, f"""\
  first:
    shell: {gate_sh(gate)}
  second:
    shell: echo "job $SLURM_JOB_ID"
    after: [first]
""", token_file=str(token))
    run = nokale.popen("run", str(wf))
    try:
        run_id, job = run_and_job(nokale, home, "first")
        wait_until(lambda: "JobState=RUNNING" in scontrol(job), what="the first job running")
        write_token(token, _expired_token(slurm_rest))
        wait_until(lambda: f"cannot poll Slurm job {job}" in manager_log(home),
                   what="Kale noticing the expired token")
        line = next(ln for ln in manager_log(home).splitlines()
                    if f"cannot poll Slurm job {job}" in ln)
        assert "the token expired at" in line and str(token) in line
        assert status(nokale, run_id)["first"]["state"] == "RUNNING"  # not lost
        write_token(token, slurm_rest.token(600))
        wait_until(lambda: "answers again" in manager_log(home), what="polling to resume")
        gate.touch()
        _, err = run.communicate(timeout=240)
        assert run.returncode == 0, err
        assert {t["state"] for t in status(nokale, run_id).values()} == {"SUCCEEDED"}
        wait_until(lambda: jobs_of(home, run_id)["first"]["state"] == "COMPLETED",
                   what="the first job's end seen through slurmrestd")
    finally:
        gate.touch()
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_unreachable_url_and_a_bad_token_say_what_is_wrong(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, tmp_path: Path) -> None:
    token = tmp_path / "slurm-token"
    write_token(token, "not-a-jwt")
    # A port bound but not listening refuses connections, and no other process on this
    # shared machine can start listening on it while we hold it.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    cases = [
        ({"url": f"http://127.0.0.1:{held.getsockname()[1]}", "token_file": str(token)},
         ["cannot reach slurmrestd at http://127.0.0.1:", "Connection refused"]),
        ({"url": slurm_rest.url, "token_file": str(token)},
         [f"slurmrestd at {slurm_rest.url}: the token was refused",
          "HTTP 500: Zero Bytes were transmitted or received",  # slurmrestd's own words
          f"tokens come from token_file {token}"]),
        ({"url": slurm_rest.url, "token_file": str(tmp_path / "missing")},
         [f"cannot read the Slurm token file {tmp_path / 'missing'}"]),
        ({"url": slurm_rest.url, "token_command": [sys.executable, "-c", "exit('denied')"]},
         ["failed (exit 1): denied"]),
    ]
    with held:
        for access, words in cases:
            _run_and_expect(nokale, tmp_path, access, words)


def _run_and_expect(nokale: NoSlurmKale, tmp_path: Path, access: dict[str, Any],
                    words: list[str]) -> None:
    """Run a one-task workflow submitting through slurmrestd with ``access``, and check
    the task failed with an error saying all of ``words``."""
    executor = json.dumps({"kind": "slurm", "via": "rest", **access})
    wf = tmp_path / "wf.yaml"
    wf.write_text(f"name: bad\nexecutor: {executor}\ntasks:\n  a: {{shell: echo}}\n")
    out = nokale("run", str(wf), timeout=180)
    assert out.returncode == 1, (access, out.stderr)
    assert "Traceback" not in out.stderr
    error = status(nokale, out.stdout.strip())["a"]["error"]
    assert error.startswith("slurm job not submitted: "), error
    assert all(w in error for w in words), (words, error)
    assert "a: FAILED: slurm job not submitted" in out.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pilots_run_tasks_through_slurmrestd(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, home: Path, tmp_path: Path) -> None:
    """Pilot mode goes the same way: the pilot jobs are submitted and watched through
    slurmrestd, run the tasks, and end when idle (Slurm says COMPLETED)."""
    token = tmp_path / "slurm-token"
    write_token(token, slurm_rest.token())
    tasks = "".join(f"  t{i}:\n    shell: echo $SLURM_JOB_ID\n" for i in range(6))
    wf = workflow(tmp_path / "wf.yaml", slurm_rest, tasks, mode="pilot", max_jobs=1, idle=1,
                  token_file=str(token))
    out = nokale("run", str(wf), timeout=240)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert {t["state"] for t in status(nokale, run_id).values()} == {"SUCCEEDED"}
    store = Store(f"sqlite:///{home / 'kale.db'}")
    try:
        pilots = [j for j in wstore.jobs(store) if j["mode"] == "pilot"]
    finally:
        store.close()
    assert len(pilots) == 1 and pilots[0]["info"]["rest"]["url"] == slurm_rest.url
    ran_in = {nokale("logs", run_id, f"t{i}").stdout.strip() for i in range(6)}
    assert ran_in == {pilots[0]["native_id"]}
    job = str(pilots[0]["native_id"])
    wait_until(lambda: "JobState=COMPLETED" in scontrol(job), what="the idle pilot to end")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_manager_killed_while_rest_jobs_wait_reattaches_to_them(
        slurm_rest: SlurmRest, nokale: NoSlurmKale, home: Path, tmp_path: Path) -> None:
    """Three 2-CPU jobs on the 2-CPU test node, submitted through slurmrestd: one runs, two
    wait. The manager is SIGKILLed; the next one re-attaches to them through the same
    endpoint (none is submitted again) and every task runs once."""
    from conftest import free_port, process_alive

    token = tmp_path / "slurm-token"
    write_token(token, slurm_rest.token())
    port = str(free_port())
    assert nokale("manager", "start", "--workers", "0", "--port", port).returncode == 0
    ledger = tmp_path / "ran.txt"
    body = "".join(f"  t{i}:\n    shell: sleep 3; echo t{i} >> {ledger}\n"
                   "    resources: {cpus: 2}\n" for i in range(3))
    wf = workflow(tmp_path / "wf.yaml", slurm_rest, body, token_file=str(token))
    run_id = nokale("run", str(wf), "--detach").stdout.strip()
    wait_until(lambda: len([j for j in jobs_of(home, run_id).values() if j["native_id"]]) == 3,
               what="three jobs submitted")
    pid = int(json.loads(nokale("manager", "status", "--json").stdout)["pid"])
    os.kill(pid, 9)
    wait_until(lambda: not process_alive(pid), what="the killed manager to be gone")
    assert nokale("manager", "start", "--workers", "0", "--port", port).returncode == 0

    def ended() -> bool:
        doc = json.loads(nokale("status", run_id, "--json").stdout)
        return doc["run"]["state"] == "SUCCEEDED"
    wait_until(ended, timeout=240, what="the run to succeed")
    assert sorted(ledger.read_text().split()) == ["t0", "t1", "t2"]
    assert all(t["attempts"] == 1 for t in status(nokale, run_id).values())
    jobs = jobs_of(home, run_id)
    assert len(jobs) == 3 and "re-attached to slurm job" in manager_log(home)
    wait_until(lambda: {j["state"] for j in jobs_of(home, run_id).values()} == {"COMPLETED"},
               what="every job's end seen through slurmrestd")
