from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from hypothesis import settings

# CI is reproducible: the same examples on every run (locally they vary, to find new bugs).
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# -- waiting on events, not on the clock ----------------------------------------------------
# CI runs the suite on a loaded 2-core machine. A test waits for the event it means (a state
# in the store, a file or log line a task writes, a process gone from /proc, a gate file the
# test itself opens), never for "long enough"; timeouts are only safety nets, and generous.


def wait_until(predicate: Callable[[], T], timeout: float = 120, what: str = "") -> T:
    """Poll ``predicate`` until it returns something true, and return that. ``timeout`` is
    a safety net for a stuck test, never part of what is tested: it fails the test, saying
    what did not happen. (The predicate gets one last look once the time is up, so that a
    test descheduled past its deadline does not fail for nothing.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for "
                                 f"{what or predicate}")
        time.sleep(0.05)


def gate_sh(gate: Path, limit: float = 300) -> str:
    """Shell that blocks until the test creates the file ``gate``: a task that has to be
    still running when the test acts on it waits for the test, not for the clock. After
    ``limit`` seconds it gives up and fails the task, so a test that failed before opening
    its gate leaves no process behind."""
    rounds = int(limit / 0.1)
    return (f"waited=0; until [ -e {shlex.quote(str(gate))} ]; do "
            f"[ $waited -lt {rounds} ] || exit 99; waited=$((waited+1)); sleep 0.1; done")


def busy_py(gate: Path, limit: float = 300) -> str:
    """Python code that keeps a core busy until the test creates ``gate`` (giving up after
    ``limit`` seconds, like :func:`gate_sh`): a task the test needs to see busy stays busy
    until the test has seen it, however little of a core a loaded machine gives it."""
    return (f"import os, time\nend = time.monotonic() + {limit}\n"
            f"while not os.path.exists({str(gate)!r}) and time.monotonic() < end:\n"
            "    sum(range(10_000))\n")


def service_missing(reason: str) -> NoReturn:
    """A real service a test needs (PostgreSQL, Slurm, Chromium, sshd) is not here: the
    test skips and says why, except under CI=true, where it fails: CI never skips them."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    print(f"skipping: {reason}")
    pytest.skip(reason)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private Kale home for one test; the Python API and the CLI both use it."""
    path = tmp_path / "kale-home"
    monkeypatch.setenv("KALE_HOME", str(path))
    monkeypatch.delenv("KALE_STORE_URL", raising=False)
    # Kernelspecs Kale installs (kale-task) go here, not to the user's own Jupyter.
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    yield path


def process_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting for its reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Kale:
    """Runs the real ``kale`` command in a subprocess."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home, self.cwd = home, cwd

    def env(self) -> dict[str, str]:
        return {**os.environ, "KALE_HOME": str(self.home), "COLUMNS": "200"}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kale.cli.main", *args], cwd=self.cwd,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def on_terminal(self, *args: str, on_output: Callable[[bytes], None] | None = None,
                    timeout: float = 60) -> tuple[int, str]:
        """Run ``kale ARGS`` on a pseudo-terminal, as a person at a shell would; returns the
        exit code and everything it drew. ``on_output`` sees the last two reads each time
        (to open a gate once something shows)."""
        import pty

        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "kale.cli.main", *args], cwd=self.cwd,
                                env=self.env(), stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            if on_output is not None:
                on_output(b"".join(chunks[-2:]))
        os.close(master)
        return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")

    def attempts(self, run_id: str, task: str) -> list[dict[str, Any]]:
        """Each attempt of a task (state, worker, times...), as `kale status RUN TASK`
        gives them."""
        out = self("status", run_id, task, "--json")
        assert out.returncode == 0, out.stderr
        return list(json.loads(out.stdout)["attempts"])

    def sigkill_worker_of(self, client: Any, run_id: str, task: str,
                          ready: Callable[[], bool]) -> str:
        """Once ``ready()`` and the task's first attempt runs on a worker, SIGKILL that
        worker; returns its id."""
        victim_id = wait_until(lambda: ready() and self.attempts(run_id, task)[0]["worker"],
                               what=f"the first attempt of {task} running on a worker")
        victim = next(w for w in client.workers() if w["id"] == victim_id)
        os.kill(victim["pid"], signal.SIGKILL)
        return str(victim_id)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "kale.cli.main", *args], cwd=self.cwd,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


@pytest.fixture
def kale(home: Path, tmp_path: Path) -> Kale:
    return Kale(home, tmp_path)


# -- store backends -------------------------------------------------------------------------
# Store-level tests run against SQLite and a real PostgreSQL server. The server comes from
# $KALE_TEST_POSTGRES_URL, or from test-output/postgres.url, which
# scripts/services/postgres.sh writes (scripts/test runs it). Without a server those tests
# skip, except under CI=true, where they fail: CI must never skip them.

POSTGRES_URL_FILE = ROOT / "test-output" / "postgres.url"
_postgres_checked: list[tuple[str | None, str]] = []  # (url, reason) once per session


def _postgres_base_url() -> tuple[str | None, str]:
    """The test server's SQLAlchemy URL (psycopg driver), or None and why not."""
    if _postgres_checked:
        return _postgres_checked[0]
    url = os.environ.get("KALE_TEST_POSTGRES_URL", "").strip()
    source = "KALE_TEST_POSTGRES_URL"
    if not url and POSTGRES_URL_FILE.is_file():
        url, source = POSTGRES_URL_FILE.read_text().strip(), str(POSTGRES_URL_FILE)
    result: tuple[str | None, str]
    if not url:
        result = (None, f"neither KALE_TEST_POSTGRES_URL nor {POSTGRES_URL_FILE} is set "
                        "(run scripts/services/postgres.sh)")
    else:
        for plain in ("postgres://", "postgresql://"):
            if url.startswith(plain):  # SQLAlchemy's default driver would be psycopg2
                url = "postgresql+psycopg://" + url[len(plain):]
        try:
            import sqlalchemy as sa

            engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                      connect_args={"connect_timeout": 5})
            try:
                with engine.connect() as c:
                    c.execute(sa.text("SELECT 1"))
            finally:
                engine.dispose()
            result = (url, "")
        except Exception as e:
            result = (None, f"cannot connect to the URL in {source}: "
                            f"{type(e).__name__}: {str(e).strip().splitlines()[0]}")
    _postgres_checked.append(result)
    return result


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL for a fresh, empty store: a SQLite file, or a private schema on the test
    PostgreSQL server (dropped afterwards), so tests never see each other's rows."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kale.db'}"
        return
    base, reason = _postgres_base_url()
    if base is None:
        service_missing(f"PostgreSQL not available: {reason}")
    import uuid

    import sqlalchemy as sa

    schema = f"kale_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    # Every connection of the test's stores uses the schema (and is named after it).
    url = sa.engine.make_url(base).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        try:
            with admin.begin() as c:
                c.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        except sa.exc.OperationalError:
            # A connection the test left inside a transaction holds a lock: end it.
            with admin.begin() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = :s"), {"s": schema})
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- Slurm ----------------------------------------------------------------------------------
# The batch tests submit real jobs to a single-node Slurm cluster on localhost, which
# scripts/services/slurm.sh starts (scripts/test runs it) and describes in
# test-output/slurm.env. Without it they skip, except under CI=true, where they fail.

SLURM_ENV_FILE = ROOT / "test-output" / "slurm.env"


def slurm_conf() -> tuple[str | None, str]:
    """The test cluster's SLURM_CONF, or None and why there is none."""
    conf = os.environ.get("SLURM_CONF", "")
    if not conf and SLURM_ENV_FILE.is_file():
        for line in SLURM_ENV_FILE.read_text().splitlines():
            if line.startswith("export SLURM_CONF="):
                conf = line.split("=", 1)[1].strip()
    if not conf:
        return None, f"no Slurm cluster: {SLURM_ENV_FILE} is missing " \
                     "(run scripts/services/slurm.sh as root)"
    import shutil
    import subprocess

    if not shutil.which("sinfo"):
        return None, "no Slurm cluster: sinfo is not on PATH"
    probe = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True,
                           env={**os.environ, "SLURM_CONF": conf}, timeout=30)
    if probe.returncode != 0 or "up" not in probe.stdout:
        return None, f"the Slurm cluster of {conf} does not answer: {probe.stderr.strip()}"
    return conf, ""


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch) -> str:
    """SLURM_CONF of the test cluster, set for this test and the commands it starts."""
    conf, reason = slurm_conf()
    if conf is None:
        service_missing(reason)
    monkeypatch.setenv("SLURM_CONF", conf)
    return conf


# -- managers -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Manager:
    """A manager of the test's home, started by the CLI: on a fixed ``--port`` (a free one),
    or with ``sticky=True`` on the default port (the previous manager's if free)."""

    def __init__(self, kale: Kale, home: Path, *args: str, sticky: bool = False) -> None:
        self.kale, self.home, self.args = kale, home, args
        self.port = None if sticky else free_port()
        self.start()

    def start(self) -> None:
        port = ["--port", str(self.port)] if self.port is not None else []
        out = self.kale("manager", "start", *port, *self.args)
        assert out.returncode == 0, out.stderr
        self.doc = json.loads(self.kale("manager", "status", "--json").stdout)

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` (TLS: use ``verify=m.tls``)."""
        return str(self.doc["url"])

    @property
    def ws_url(self) -> str:
        """The worker link over TLS (use ``ssl=m.tls``)."""
        return "wss" + self.url[5:] + "/api/workers/link"

    @property
    def tls(self) -> Any:
        """An SSL context trusting this home's manager certificate, and nothing else."""
        from kale.tls import client_context

        return client_context((self.home / "tls" / "manager.crt").read_text())

    def client(self) -> Any:
        from kale import Client

        return Client(home=self.home)

    def headers(self, name: str = "token") -> dict[str, str]:
        return {"Authorization": "Bearer " + (self.home / name).read_text().strip()}


@pytest.fixture
def managers(kale: Kale, home: Path) -> Iterator[Callable[..., Manager]]:
    started: list[Manager] = []

    def make(*args: str, sticky: bool = False) -> Manager:
        m = Manager(kale, home, *args, sticky=sticky)
        started.append(m)
        return m

    yield make
    for m in started:
        pid = int(m.doc["pid"])
        if process_alive(pid):
            os.kill(pid, signal.SIGCONT)
        kale("manager", "stop")
    _kill_workers(home)


def _kill_workers(home: Path) -> None:
    """Workers left by a killed manager (they outlive it on purpose)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kale.worker" in cmd and f"KALE_HOME={home}".encode() in env:
            os.kill(int(entry.name), signal.SIGKILL)


# -- Chromium -------------------------------------------------------------------------------
CHROMIUM_FILE = ROOT / "test-output" / "chromium.path"


@pytest.fixture
def chromium() -> str:
    """The headless Chromium for browser tests (scripts/services/chromium.sh)."""
    exe = CHROMIUM_FILE.read_text().strip() if CHROMIUM_FILE.is_file() else ""
    reason = ""
    if not exe or not os.access(exe, os.X_OK):
        reason = f"no Chromium: {CHROMIUM_FILE} is missing (run scripts/services/chromium.sh)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "no Playwright (pip install -e '.[test]')"
    if reason:
        service_missing(reason)
    return exe


# -- SSH ------------------------------------------------------------------------------------
SSH_HOST_FILE = ROOT / "test-output" / "ssh.host"


@pytest.fixture
def ssh_host() -> str:
    """An ssh alias that logs in to this machine with a key (scripts/services/sshd.sh)."""
    host = SSH_HOST_FILE.read_text().strip() if SSH_HOST_FILE.is_file() else ""
    if not host:
        service_missing(f"no SSH server: {SSH_HOST_FILE} is missing "
                        "(run scripts/services/sshd.sh)")
    return host


# -- a second OS user -----------------------------------------------------------------------
# Tests that play another user of a shared login node run commands as `kale-other`, a locked
# system user that scripts/services/users.sh creates (root only; it also makes the test
# interpreter reachable for that user). Without it, or when the tests do not run as root
# (switching users needs root), those tests skip, except under CI=true, where they fail.

OTHER_USER = "kale-other"
_other_user_checked: list[str] = []  # why the user cannot run Kale ("" if it can), once


class OtherUser:
    """Runs an argv as ``kale-other`` (setpriv: its uid, gid and groups) with a clean
    environment: that user's HOME, USER, LOGNAME and SHELL, a PATH that starts with the
    directory of the Python running the tests (so ``python3 -m kale.cli.main`` is this
    Kale), nothing else of the test's environment unless given."""

    def __init__(self, name: str = OTHER_USER) -> None:
        import pwd

        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        self.home = Path(entry.pw_dir)
        self.python_bin = os.path.dirname(sys.executable)

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "SHELL": "/bin/bash", "LANG": "C.UTF-8", "COLUMNS": "200",
                "PATH": f"{self.python_bin}:/usr/local/bin:/usr/bin:/bin", **extra}

    def __call__(self, *argv: str, env: dict[str, str] | None = None,
                 cwd: Path | str | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the other user (``env``: extra variables), in ``cwd`` (default:
        that user's home), and return what it did."""
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
             "--", *argv],
            env=self.env(**(env or {})), cwd=cwd or self.home, capture_output=True, text=True,
            timeout=timeout)

    def kale(self, *args: str, home: Path | str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``kale ARGS`` as the other user, with ``KALE_HOME=home`` when given."""
        env = {"KALE_HOME": str(home)} if home is not None else {}
        return self("python3", "-m", "kale.cli.main", *args, env=env, timeout=timeout)


@pytest.fixture
def other_user() -> OtherUser:
    """A helper that runs commands as another OS user of this machine (see OtherUser)."""
    import pwd

    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        service_missing(f"no second OS user: {OTHER_USER} does not exist "
                        "(run scripts/services/users.sh as root)")
    if os.geteuid() != 0:
        service_missing(f"running commands as {OTHER_USER} needs root; the tests run as "
                        f"uid {os.geteuid()}")
    user = OtherUser()
    if not _other_user_checked:
        probe = user("python3", "-c", "import kale.cli.main")
        lines = (probe.stderr.strip() or probe.stdout.strip()).splitlines()
        _other_user_checked.append(
            "" if probe.returncode == 0 else
            f"{OTHER_USER} cannot run {sys.executable} -m kale.cli.main "
            f"({lines[-1] if lines else f'exit {probe.returncode}'}); run "
            "scripts/services/users.sh as root, which makes the interpreter reachable")
    if _other_user_checked[0]:
        service_missing(_other_user_checked[0])
    return user


# -- slurmrestd -----------------------------------------------------------------------------
# The REST path's tests (tests/test_slurm_rest.py) reach the test cluster's slurmrestd (JWT
# auth), which scripts/services/slurm.sh starts with the cluster; test-output/slurm.env gives
# its URL. Tokens come from the real `scontrol token`.


class SlurmRest:
    """The test cluster's slurmrestd: its ``url``, and real Slurm JWTs for it."""

    def __init__(self, url: str) -> None:
        import shutil

        self.url = url
        #: scontrol by its full path: tests run Kale with the Slurm commands off PATH
        self.scontrol = shutil.which("scontrol") or "scontrol"

    def token_command(self, lifespan: int = 3600) -> list[str]:
        """A command printing a fresh token (``SLURM_JWT=...``) good for ``lifespan`` s."""
        return [self.scontrol, "token", f"lifespan={lifespan}"]

    def token(self, lifespan: int = 3600) -> str:
        out = subprocess.run(self.token_command(lifespan), capture_output=True, text=True,
                             timeout=60, check=True)
        return out.stdout.strip().removeprefix("SLURM_JWT=")

    def ping(self, token: str) -> tuple[int, str]:
        """``GET /slurm/v0.0.38/ping`` with ``token``: the HTTP status and body."""
        import getpass

        import httpx

        r = httpx.get(f"{self.url}/slurm/v0.0.38/ping", timeout=30,
                      headers={"X-SLURM-USER-NAME": getpass.getuser(),
                               "X-SLURM-USER-TOKEN": token})
        return r.status_code, r.text


@pytest.fixture
def slurm_rest(slurm: str) -> SlurmRest:
    """The test cluster's slurmrestd (after the ``slurm`` fixture: SLURM_CONF is set)."""
    url = os.environ.get("SLURMRESTD_URL", "")
    if not url and SLURM_ENV_FILE.is_file():
        for line in SLURM_ENV_FILE.read_text().splitlines():
            if line.startswith("export SLURMRESTD_URL="):
                url = line.split("=", 1)[1].strip()
    if not url:
        service_missing(f"no slurmrestd: {SLURM_ENV_FILE} has no SLURMRESTD_URL "
                        "(run scripts/services/slurm.sh as root)")
    rest = SlurmRest(url)
    try:
        status, text = rest.ping(rest.token(600))
    except Exception as e:  # no token (no JWT auth in the cluster) or nothing listening
        service_missing(f"slurmrestd at {url} cannot be used: {type(e).__name__}: {e}")
    if status != 200:
        service_missing(f"slurmrestd at {url} does not answer a ping: HTTP {status}: "
                        f"{text[:200]}")
    return rest


@pytest.fixture(autouse=True)
def _stop_kept_workers() -> Iterator[None]:
    """Python workers a test's runs left warm (``kale.tasks.warm``) end with the test,
    and the stores of its Kale homes are closed."""
    yield
    from kale.tasks import warm

    warm.POOL.clear()
    # The stores of the test's Kale homes but those a run still under way drives on
    # (each holds its database's files open: a suite of a thousand homes ran out of them)
    from kale.client.local import close_stores

    close_stores()
