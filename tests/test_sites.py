"""Sites: a workflow run on another system over SSH, from this side's CLI and Python API.

The site is played by the local sshd and a second OS user (``kale-other``; alias
``kale-site-test`` from scripts/services/users.sh): its own home, its own Kale home and
manager, nothing shared with this side's KALE_HOME. Each test gets a fresh Kale home
there (``~/kale-test-XXXX``), whose manager it stops at the end. Faults are real: the SSH
master connection SIGKILLed mid-run, the site's manager SIGKILLed, a wrong host key, a
key the site refuses, a port nothing listens on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Kale, process_alive, wait_until
from sitekit import (  # noqa: F401 (the fixtures site and site_host)
    PYTHON,
    SSHD_DIR,
    SiteUnderTest,
    remote,
    site_fixture,
    site_host_fixture,
)


def project(tmp_path: Path, gate: str | None = None) -> Path:
    """A workflow directory as a scientist has it: the YAML, a module beside it."""
    d = tmp_path / "project"
    d.mkdir(exist_ok=True)
    wait = f"until [ -e {gate} ]; do sleep 0.05; done; " if gate else ""
    (d / "wf.yaml").write_text(textwrap.dedent(f"""\
        name: at-site
        tasks:
          make:
            shell: "{wait}mkdir -p out && whoami > out/who.txt && echo made"
            outputs: ["out/"]
          calc:
            python: helper:double
            parameters: {{x: 21}}
            after: [make]
        """))
    (d / "helper.py").write_text("import getpass\n\ndef double(x):\n"
                                 "    print('calc ran as', getpass.getuser())\n"
                                 "    return x * 2\n")
    return d


def test_site_add_list_check_remove(kale: Kale, site: SiteUnderTest) -> None:
    listed = json.loads(kale("site", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["hpc"]
    assert listed[0]["home"] == f"~/{site.remote_home}"
    done = kale("site", "check", "hpc", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kale"] == report["local_kale"]
    assert report["home"] == site.abs_home  # the site user's home, not ours
    assert report["manager"] is None and report["problems"] == []
    text = kale("site", "check", "hpc")
    assert "manager: not running" in text.stdout
    assert (kale.home / "sites.json").stat().st_mode & 0o777 == 0o600
    assert kale("site", "remove", "hpc").returncode == 0
    gone = kale("site", "check", "hpc")
    assert gone.returncode == 2 and "no such site" in gone.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["add", "x", "http://host"], "not an SSH address"),
    (["add", "Bad Name", "ssh://host"], "lower-case identifier"),
    (["add", "x", "ssh://host", "-o", "ControlPath=/tmp/x"], "Kale manages controlpath"),
    (["add", "x", "ssh://host", "-o", "nonsense"], "give KEY=VALUE"),
    (["check", "nowhere"], "no such site"),
])
def test_bad_site_input_is_a_usage_error(kale: Kale, args: list[str], says: str) -> None:
    done = kale("site", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_run_at_a_site_from_the_cli(kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    d = project(tmp_path)
    done = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml", "--site",
                           "hpc"], cwd=d, env=kale.env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    status = kale("status", run_id, "--site", "hpc", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert {t["name"]: t["state"] for t in doc["tasks"]} == {"make": "SUCCEEDED",
                                                            "calc": "SUCCEEDED"}
    # it ran there, as the site's user, in the site's Kale home
    assert doc["run"]["run_dir"].startswith(site.abs_home + "/")
    assert "calc ran as kale-other" in kale("logs", run_id, "calc", "--site", "hpc").stdout
    fetched = kale("fetch", run_id, "make", str(tmp_path / "back"), "--site", "hpc")
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "back" / "out" / "who.txt").read_text().strip() == "kale-other"
    runs = json.loads(kale("runs", "--site", "hpc", "--json").stdout)
    assert [r["id"] for r in runs] == [run_id]
    # nothing of the run is on this side: no run directory, no store entry
    assert not (kale.home / "runs").exists()
    assert json.loads(kale("runs", "--json").stdout) == []


def test_staging_sends_only_what_changed(kale: Kale, site: SiteUnderTest,
                                         tmp_path: Path) -> None:
    from kale.sites.site import Site

    d = project(tmp_path)
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("not staged")
    (d / "big.dat").write_bytes(b"x" * 100_000)
    (d / ".kaleignore").write_text("# like .gitignore\nscratch/\n")
    (d / "scratch").mkdir()
    (d / "scratch" / "tmp.txt").write_text("not staged either")
    s = Site.named("hpc", kale.home)
    first = s.stage(d)
    assert first.files == 4 and first.bytes >= 100_000  # wf.yaml helper.py big.dat .kaleignore
    again = s.stage(d)
    assert (again.path, again.files, again.bytes) == (first.path, 0, 0)
    (d / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (d / "big.dat").unlink()
    third = s.stage(d)
    assert third.files == 1
    there = site.sh(f"cd {third.path} && ls -A").stdout.split()
    assert sorted(there) == [".kaleignore", "helper.py", "wf.yaml"]
    assert site.sh(f"cat {third.path}/helper.py").stdout == (d / "helper.py").read_text()


def test_python_api_run_at_a_site(kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    import kale as k

    d = project(tmp_path)
    wf = k.Workflow.from_yaml(d / "wf.yaml")

    def where(calc: int) -> str:  # defined here, as in a notebook: pickled by value
        import getpass

        return f"{calc} at {getpass.getuser()}"

    wf.python(where, parameters={"calc": wf.tasks["calc"].result})
    run = wf.run(site="hpc", home=kale.home)
    try:
        assert run.wait().state.value == "SUCCEEDED"
        assert run.result("calc") == 42
        assert run.result("where") == "42 at kale-other"
        made = run["make"].fetch(tmp_path / "out-here")
        assert made == [tmp_path / "out-here" / "out"]
        assert (made[0] / "who.txt").read_text().strip() == "kale-other"
        assert isinstance(run, k.Run)  # the one handle, wherever the run is
    finally:
        run.close()


def test_ssh_connection_killed_mid_run_the_run_goes_on(kale: Kale, site: SiteUnderTest,
                                                        tmp_path: Path) -> None:
    """The SSH master dies while a task runs: the run goes on at the site, and the same
    handle re-attaches by itself (a new master connection) to watch it end."""
    import kale as k
    from kale.sites.site import Site

    gate = f"{site.abs_home}/gate"
    d = project(tmp_path, gate=gate)
    run = k.Workflow.from_yaml(d / "wf.yaml").run(site="hpc", home=kale.home)
    try:
        wait_until(lambda: run["make"].state.value == "RUNNING", what="make running")
        link = Site.named("hpc", kale.home).link
        old = link.master_pid()
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not process_alive(old), what="the SSH master gone")
        assert run["make"].state.value == "RUNNING"  # reconnected; still running there
        new = link.master_pid()
        assert new is not None and new != old
        assert site.sh(f"touch {gate}").returncode == 0
        assert run.wait().state.value == "SUCCEEDED"
        detail = kale("status", run.id, "make", "--site", "hpc", "--json")
        assert [a["state"] for a in json.loads(detail.stdout)["attempts"]] == ["SUCCEEDED"]
    finally:
        run.close()


def test_site_manager_sigkilled_is_restarted_and_nothing_is_lost(
        kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    d = project(tmp_path)
    first = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml",
                            "--site", "hpc"], cwd=d, env=kale.env(), capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.strip().splitlines()[-1]
    pid = site.manager_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the site's manager (this machine plays the site)
    wait_until(lambda: not process_alive(pid), what="the site's manager gone")
    status = kale("status", run_id, "--site", "hpc", "--json")  # the next call restarts it
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["run"]["state"] == "SUCCEEDED"
    restarted = site.manager_pid()
    assert restarted is not None and restarted != pid
    # and the site's store still reuses what the first run made
    again = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml",
                            "--site", "hpc"], cwd=d, env=kale.env(), capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    second = again.stdout.strip().splitlines()[-1]
    tasks = json.loads(kale("status", second, "--site", "hpc", "--json").stdout)["tasks"]
    assert {t["name"]: t["reused_from"] for t in tasks} == {"make": run_id, "calc": run_id}


def _other_host_key(tmp_path: Path) -> Path:
    key = tmp_path / "not_the_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    known = tmp_path / "known_hosts"
    kind, text = key.with_suffix(".pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:2222 {kind} {text}\n")
    return known


def test_wrong_host_key_is_a_clear_usage_error(kale: Kale, site_host: str,
                                               tmp_path: Path) -> None:
    known = _other_host_key(tmp_path)
    kale("site", "add", "spoofed", f"ssh://{site_host}", "-o", f"UserKnownHostsFile={known}",
         "-o", "StrictHostKeyChecking=yes")
    done = kale("site", "check", "spoofed", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "host key" in done.stderr and "Traceback" not in done.stderr
    run = kale("status", "--site", "spoofed", timeout=60)
    assert run.returncode == 2 and "host key" in run.stderr


def test_refused_key_is_a_clear_usage_error(kale: Kale, site_host: str, tmp_path: Path
                                            ) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    kale("site", "add", "nokey", "ssh://kale-other@127.0.0.1:2222",
         "-o", f"UserKnownHostsFile={SSHD_DIR / 'known_hosts'}", "-o", "IdentitiesOnly=yes",
         "-o", f"IdentityFile={stranger}")
    done = kale("site", "check", "nokey", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused the login" in done.stderr


def test_unreachable_site_fails_without_hanging(kale: Kale, site_host: str) -> None:
    from conftest import free_port

    kale("site", "add", "down", f"ssh://127.0.0.1:{free_port()}")
    done = kale("site", "check", "down", timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "site down: ssh 127.0.0.1 failed" in done.stderr and "refused" in done.stderr


def test_a_site_without_kale_says_so(kale: Kale, site_host: str) -> None:
    kale("site", "add", "bare", f"ssh://{site_host}", "--python", "/nonexistent/python3")
    done = kale("site", "check", "bare")
    assert done.returncode == 2 and "does not run there" in done.stderr
    # a Python there without Kale: a fresh virtual environment of the site's user
    venv = f"kale-test-nokale-{os.getpid()}"
    assert remote(site_host, f"{PYTHON} -m venv --without-pip ~/{venv}").returncode == 0
    try:
        kale("site", "add", "nokale", f"ssh://{site_host}", "--python",
             f"~/{venv}/bin/python")
        done = kale("site", "check", "nokale")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Kale is not installed for ~/" in done.stderr and "Traceback" not in done.stderr
    finally:
        remote(site_host, f"rm -rf ~/{venv}")


def test_the_readme_sites_section_as_written(kale: Kale, site_host: str,
                                             tmp_path: Path) -> None:
    """The README's site commands, run as written, with the example's address, Python and
    placeholders (RUN, TASK) replaced by the test site's and the run's."""
    import re
    import shlex

    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = text.split("## Sites", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^\$ (kale .+?)(?:\s+#.*)?$", block, re.M)
    assert [line.split()[1] for line in lines][:3] == ["site", "site", "run"]
    d = project(tmp_path)
    remote_home = f"~/kale-test-readme-{os.getpid()}"
    run_id = ""
    try:
        for line in lines:
            for one in line.split("; "):
                argv = shlex.split(one.replace("ssh://alice@login.hpc.example.org",
                                               f"ssh://{site_host}"))[1:]
                if argv[:2] == ["site", "add"]:
                    argv[argv.index("--python") + 1] = PYTHON
                    argv += ["--remote-home", remote_home]
                argv = [run_id if a == "RUN" else "make" if a == "TASK" else a for a in argv]
                done = subprocess.run([sys.executable, "-m", "kale.cli.main", *argv], cwd=d,
                                      env=kale.env(), capture_output=True, text=True,
                                      timeout=120)
                assert done.returncode == 0, (argv, done.stderr)
                if argv[0] == "run":
                    run_id = done.stdout.strip().splitlines()[-1]
        assert (d / "results" / "out" / "who.txt").read_text().strip() == "kale-other"
    finally:
        from kale.sites import registry
        from kale.sites.site import Site

        remote(site_host, f"{PYTHON} -m kale.cli.main manager stop --home {remote_home}; "
                          f"rm -rf {remote_home}")
        if (kale.home / "sites.json").exists():
            Site(registry.get("hpc", kale.home)).close()


def test_cancel_and_events_through_a_site(kale: Kale, site: SiteUnderTest,
                                          tmp_path: Path) -> None:
    import kale as k

    gate = f"{site.abs_home}/never"
    d = project(tmp_path, gate=gate)
    run = k.Workflow.from_yaml(d / "wf.yaml").run(site="hpc", home=kale.home)
    try:
        wait_until(lambda: run["make"].state.value == "RUNNING", what="make running")
        done = kale("cancel", run.id, "--site", "hpc")
        assert done.returncode == 0, done.stderr
        assert "CANCELLED" in done.stdout
        states = {t["name"]: t["state"] for t in run.status()["tasks"]}
        assert states == {"make": "CANCELLED", "calc": "CANCELLED"}
        events = list(run.events())  # the whole history, through the site's connection
        assert events[-1][0] == "end"
        assert ("make", "CANCELLED") in [(d.get("task"), d.get("new")) for e, d in events
                                         if e == "state"]
    finally:
        run.close()


def test_a_batch_task_at_a_site_runs_on_its_slurm(kale: Kale, site: SiteUnderTest,
                                                  slurm: str, tmp_path: Path) -> None:
    """The site's manager submits the task to the site's Slurm, as the site's user (the
    client side never runs a Slurm command)."""
    d = tmp_path / "batch"
    d.mkdir()
    (d / "wf.yaml").write_text(textwrap.dedent("""\
        name: site-slurm
        tasks:
          job:
            shell: "echo in job $SLURM_JOB_ID as $(whoami)"
            executor: slurm
            resources: {walltime: "00:05:00"}
        """))
    done = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml", "--site",
                           "hpc"], cwd=d, env=kale.env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    log = kale("logs", run_id, "job", "--site", "hpc").stdout
    job_id = log.split("in job ", 1)[1].split()[0]
    assert log.strip().endswith("as kale-other") and job_id.isdigit()
    seen = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "SLURM_CONF": slurm})
    assert "UserId=kale-other" in seen.stdout  # Slurm ran it for the site's user


def test_kale_run_site_follows_on_after_the_connection_drops(
        kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    """`kale run --site` follows the run; the SSH master dies mid-run; the command makes
    the connection again and follows the run to its end (exit 0)."""
    from kale.sites.site import Site

    gate = f"{site.abs_home}/gate"
    d = project(tmp_path, gate=gate)
    proc = subprocess.Popen([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml",
                             "--site", "hpc"], cwd=d, env=kale.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def running() -> bool:
            out = kale("status", "--site", "hpc", "--json")
            return out.returncode == 0 and any(
                t["name"] == "make" and t["state"] == "RUNNING"
                for t in json.loads(out.stdout)["tasks"])

        wait_until(running, what="make running at the site")
        link = Site.named("hpc", kale.home).link
        old = link.master_pid()
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not process_alive(old), what="the SSH master gone")
        assert site.sh(f"touch {gate}").returncode == 0
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "dropped; reconnecting" in err and "calc SUCCEEDED" in err


def test_a_failing_task_at_a_site_says_why(kale: Kale, site: SiteUnderTest,
                                           tmp_path: Path) -> None:
    d = tmp_path / "failing"
    d.mkdir()
    (d / "wf.yaml").write_text('name: failing\ntasks:\n  bad:\n'
                               '    shell: "echo oops >&2; exit 3"\n')
    done = subprocess.run([sys.executable, "-m", "kale.cli.main", "run", "wf.yaml", "--site",
                           "hpc"], cwd=d, env=kale.env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "bad FAILED" in done.stderr and "oops" in done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    status = kale("status", run_id, "bad", "--site", "hpc")
    assert status.returncode == 0, status.stderr
    assert f"kale logs {run_id} bad --stderr --site hpc" in status.stdout
    assert "    | oops" in status.stdout
