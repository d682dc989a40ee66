"""The ``kale`` command.

Exit codes: 0 all selected tasks succeeded (or the command did what it was asked), 1 a task
failed, 2 invalid input (bad YAML, unknown task or run, bad option), 130 interrupted.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from kale.errors import (
    ExportError,
    KaleError,
    RunBusy,
    RunNotFound,
    UsageError,
    ValidationError,
)
from kale.spec.values import RULE as VALUE_HELP

app = typer.Typer(
    name="kale", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="Kale: build, run and watch HPC workflows of shell, Python and notebook tasks.\n\n"
    "RUN, wherever a command takes one, is a run id, any unique prefix of one, or 'latest' "
    "(the newest run).",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # ":-1:" is text
out = Console(highlight=False, soft_wrap=True, emoji=False)

USAGE_ERRORS = (ValidationError, UsageError, RunNotFound, ExportError, RunBusy)
EXIT = {"SUCCEEDED": 0, "FAILED": 1, "CANCELLED": 130}

Home = Annotated[Path | None, typer.Option("--home", envvar="KALE_HOME", show_envvar=True,
                                          metavar="DIR",
                                          help="Kale home directory (default ~/.kale).")]
RUN_HELP = "A run id, any unique prefix of one, or 'latest' (the newest run)."
RunArg = Annotated[str, typer.Argument(metavar="RUN", show_default=False, help=RUN_HELP)]
TaskArg = Annotated[str, typer.Argument(metavar="TASK", show_default=False,
                                        help="A task name of the run.")]
Site = Annotated[str | None, typer.Option(
    "--site", metavar="NAME", help="At this site (`kale site list`), over SSH.")]


def _print_version(value: bool) -> None:
    if value:
        from kale.config import version

        out.print(f"kale {version()}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print Kale's version and exit.")] = False) -> None:
    """(Options of `kale` itself; the help is the app's.)"""


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _store(home: Path | None) -> Any:
    from kale.client.local import open_store

    return open_store(home)


def parse_param(text: str, hint: str = "-p") -> tuple[str, Any]:
    """``KEY=VALUE``, VALUE read by :func:`kale.spec.values.parse_value` (the one rule for
    every value typed on the command line)."""
    from kale.spec.values import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"{text!r} is not KEY=VALUE", param_hint=hint)
    try:
        return key.strip(), parse_value(value)
    except ValueError as e:
        raise typer.BadParameter(f"{key.strip()}: {e}", param_hint=hint) from None


def _print_problems(e: ValidationError) -> None:
    for p in e.problems:
        err.print(f"[bold red]error:[/] {p}", markup=True, highlight=False)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="Workflow YAML file, or a CWL document (FILE.cwl, "
        "FILE.cwl#name).")],
    job: Annotated[Path | None, typer.Argument(
        metavar="JOB", help="With a CWL FILE: its input object (YAML or JSON).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "-p", "--param", metavar="NAME=VALUE",
        help="Override a workflow parameter (repeatable). " + VALUE_HELP)] = None,
    executor: Annotated[str | None, typer.Option(
        metavar="NAME", help="Where tasks without their own executor run: local, slurm, "
        "pbs, lsf, flux, cobalt (default: the workflow's executor, else local).")] = None,
    pilot: Annotated[bool, typer.Option(
        help="With a batch --executor: run tasks in pilot jobs, not one job per task.")
    ] = False,
    only: Annotated[list[str] | None, typer.Option(
        metavar="TASK", help="Run only this task (repeatable).")] = None,
    from_: Annotated[list[str] | None, typer.Option(
        "--from", metavar="TASK", help="Run this task and everything below it.")] = None,
    until: Annotated[list[str] | None, typer.Option(
        metavar="TASK", help="Run this task and what it needs.")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        metavar="TAG", help="Run tasks with this tag (repeatable).")] = None,
    rerun_failed: Annotated[str | None, typer.Option(
        "--rerun-failed", metavar="RUN",
        help="Run again the tasks of RUN that did not succeed (RUN: an id, a unique prefix, "
        "or 'latest').")] = None,
    force: Annotated[bool, typer.Option(help="Re-run tasks whose results could be reused.")
                     ] = False,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", min=1, metavar="N",
                                             help="Tasks at once (default: CPU count).")] = None,
    detach: Annotated[bool, typer.Option(help="Start the run in the background and exit.")
                      ] = False,
    embedded: Annotated[bool, typer.Option(
        help="Run in this process even when a manager is running.")] = False,
    site: Site = None,
    home: Home = None,
) -> None:
    """Run a workflow (all of it, or a selection) and print its run id. With a manager
    running (`kale manager start`), the manager runs it on its workers. Ctrl-C cancels
    the run, wherever it runs; --detach leaves it running and returns at once. With
    --site, the workflow's directory is copied there (what changed) and the site's
    manager runs it. A CWL FILE (with its input object JOB) runs as a Kale workflow of
    one task per step, and the output object is the result of its task `outputs` (of
    the tool's task for a CommandLineTool): `kale status RUN outputs`."""
    from kale.engine.runs import create_run
    from kale.manager import service
    from kale.model.options import RunOptions

    params = dict(parse_param(p) for p in param or [])
    store, path = _store(home)
    wf, params = _workflow_to_run(file, job, params)
    chosen = _executor_option(executor, pilot)
    opts = RunOptions.of(params=params, only=only, from_=from_, until=until, tags=tag,
                         force=force, jobs=jobs, executor=chosen, rerun_of=rerun_failed)
    needed = wf.needs_manager(chosen)
    if site is not None:
        raise typer.Exit(_submit(_source(home, site), wf, detach, opts))
    across = wf.uses_sites()
    if across:  # tasks at sites: driven from here, with a transfer task per crossing
        from kale.sites.across import plan

        wf = plan(wf)
    if not embedded and not across and (needed or service.state(path) is not None):
        if needed and service.state(path) is None:
            service.start(path)  # batch jobs and steps need a manager to outlive this
            err.print(f"started the Kale manager for {path} (batch jobs and interactive "
                      "steps need it)")
        from kale.client.remote import Client, ManagerSource

        raise typer.Exit(_submit(ManagerSource(Client(home=path), owns_client=True), wf,
                                 detach, opts))
    if rerun_failed:
        opts = opts.but(rerun_of=store.get_run(rerun_failed).id)
    rec = create_run(store, path, wf, opts)
    out.print(rec.id)
    if detach:
        _spawn_driver(rec.id, path)
        return
    raise typer.Exit(_drive(store, rec, wf, home=path))


def _workflow_to_run(file: Path, job: Path | None, params: dict[str, Any]
                     ) -> tuple[Any, dict[str, Any]]:
    """The workflow `kale run FILE [JOB]` runs, and the parameters its run overrides (none
    for CWL: ``-p`` values are the CWL inputs' values already)."""
    if _is_cwl(file, job):
        return _cwl_import(file, job, params).workflow, {}
    from kale.spec import load_workflow

    return load_workflow(file, params_override=params), params


def _is_cwl(file: Path, job: Path | None) -> bool:
    if str(file).partition("#")[0].endswith(".cwl"):
        return True
    if job is not None:
        fail(f"{job}: an input object (JOB) goes with a CWL document (FILE.cwl), not with "
             f"{file}")
    return False


def _cwl_import(file: Path, job: Path | None, params: dict[str, Any]) -> Any:
    """The CWL document as a Kale workflow (:mod:`kale.cwl.importer`); a document Kale
    cannot run is a usage error (exit 2) naming the file and what."""
    from kale.cwl.importer import import_cwl

    return import_cwl(file, job, params)


def _executor_option(name: str | None, pilot: bool) -> str | dict[str, Any] | None:
    from kale.model.executor import ExecutorSpec, batch_kinds

    if name is None:
        if pilot:
            fail(f"--pilot needs a batch --executor ({', '.join(batch_kinds())})")
        return None
    spec, problems = ExecutorSpec.parse({"kind": name, "mode": "pilot" if pilot else "job"})
    if problems:
        fail("--executor: " + "; ".join(m for _p, m in problems))
    return spec.to_value()


class _Stop(Exception):
    """Ctrl-C (SIGINT) or SIGTERM while following a manager's run."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _stop(signum: int, _frame: Any) -> None:
    raise _Stop("interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)")


def _submit(source: Any, wf: Any, detach: bool, options: Any) -> int:
    """Hand the run to the manager; unless detached, follow it until it ends. Ctrl-C (or
    SIGTERM) cancels it, as it does a run driven here; `--detach` leaves it running, and
    so does a closed terminal (SIGHUP)."""
    import contextlib

    import httpx

    client = source.client
    with contextlib.closing(source):
        if options.rerun_of:
            options = options.but(rerun_of=client.status(options.rerun_of)["run"]["id"])
        run_id = source.submit(wf, options)
        out.print(run_id)
        if detach:
            return 0
        before = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                _follow_events(source, run_id)
            except _Stop as e:
                return _cancel_remote(client, run_id, e.why)
            doc = client.status(run_id)
        except httpx.HTTPError as e:
            fail(f"lost the manager while following run {run_id} ({e}); the run is the "
                 f"manager's: `kale status {run_id}` once it is back", 1)
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
    return _remote_summary(doc)


def _follow_events(source: Any, run_id: str) -> None:
    """Print a manager's run's state changes until it ends. Through a site, a connection
    that drops is made again and the stream goes on after the last change seen (the run
    went on at the site meanwhile)."""
    import httpx

    client, last, drops = source.client, 0, 0
    while True:
        try:
            for event, data in client.events(run_id, after=last):
                if event == "state":
                    last = max(last, int(data.get("id") or 0))
                if event == "state" and data["task"]:
                    stamp = time.strftime("%H:%M:%S", time.localtime(data["ts"]))
                    reason = f"  {data['reason']}" if data["reason"] else ""
                    err.print(f"{stamp} {data['task']} {data['new']}{reason}", markup=False)
                    if data["new"] in ("FAILED", "TIMEOUT"):
                        _print_remote_tail(client, run_id, data["task"])
                elif event == "end":
                    return
            # the manager is stopping: its stream ended before the run did
            raise httpx.RemoteProtocolError("the event stream ended before the run did")
        except (httpx.HTTPError, KaleError):
            reconnect = getattr(source, "reconnect", None)
            drops += 1
            if reconnect is None or drops > FOLLOW_RECONNECTS:
                raise
            err.print(f"the connection to {source.where} dropped; reconnecting "
                      "(the run goes on there)", markup=False)
            reconnect()


#: how many times `kale run --site` makes a dropped connection again while it follows
FOLLOW_RECONNECTS = 5


def _print_remote_tail(client: Any, run_id: str, task: str) -> None:
    """The last lines of a failed task's stderr, read through the manager (the task may
    have run on another machine)."""
    from kale.cli.live import print_tail
    from kale.cli.tails import failure_lines

    print_tail(err, failure_lines(client.logs(run_id, task, "stderr")))


def _cancel_remote(client: Any, run_id: str, why: str) -> int:
    """Cancel a manager's run after Ctrl-C; a second Ctrl-C stops waiting for it."""
    err.print(f"{why}: cancelling run {run_id} (`kale run --detach` leaves a run running)",
              markup=False)

    def impatient(_signum: int, _frame: Any) -> None:
        err.print(f"not waiting: the manager goes on cancelling run {run_id}; "
                  f"`kale status {run_id}` shows how it ends", markup=False)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, impatient)
    signal.signal(signal.SIGTERM, impatient)
    client.cancel(run_id)  # the manager answers once the run is cancelled (or in 15 s)
    doc = client.status(run_id)
    code = _remote_summary(doc)
    if doc["run"]["state"] == "RUNNING":
        err.print(f"the manager is still cancelling run {run_id}; `kale status {run_id}` "
                  "shows how it ends", markup=False)
        return 130
    return code


def _remote_summary(doc: dict[str, Any]) -> int:
    """Print how a manager's run ended; return the exit code."""
    state = doc["run"]["state"]
    color = {"SUCCEEDED": "green", "FAILED": "red"}.get(state, "yellow")
    err.print(f"run {doc['run']['id']} [bold {color}]{state}[/] ({doc['run']['message']})",
              markup=True)
    for t in doc["tasks"]:
        if t["state"] in ("FAILED", "TIMEOUT"):
            err.print(f"  {t['name']}: {t['state']}: {t['error']}", markup=False)
    return EXIT.get(state, 1)


def _manager_client(home: Path | None, site: str | None = None) -> Any:
    from kale.client.remote import Client
    from kale.manager import service

    if site is not None:
        return _source(home, site).client
    path = _home_path(home)
    if service.state(path) is None:
        fail(f"no manager is running for {path}: tasks are cancelled, suspended and "
             "resumed one by one through the manager (`kale manager start`)")
    return Client(home=path)


def _task_action(run_id: str, task: str, action: str, home: Path | None,
                 reason: str | None = None, site: str | None = None) -> None:
    from kale.errors import KaleError

    with _manager_client(home, site) as client:
        try:
            doc = client.task_action(run_id, task, action, reason)
        except KaleError as e:
            fail(str(e))
    out.print(f"{action} {doc['id']} {task} (was {doc['state']})")


def _spawn_driver(run_id: str, home: Path) -> None:
    log = Path(home) / "runs" / run_id / "driver.log"
    with open(log, "ab") as f:
        subprocess.Popen([sys.executable, "-P", "-m", "kale.cli.main", "_drive", run_id],
                         env={**os.environ, "KALE_HOME": str(home)}, stdin=subprocess.DEVNULL,
                         stdout=f, stderr=f, start_new_session=True)


def _drive(store: Any, rec: Any, wf: Any = None, *, quiet: bool = False,
           home: Path | None = None) -> int:
    """Drive a run in this process with terminal progress; return the exit code."""
    from kale.cli.live import LiveTable, PlainProgress
    from kale.engine.runs import drive, load_workflow, make_engine

    wf = wf or load_workflow(rec)
    selected = set(rec.options.get("selected") or wf.tasks)

    def stderr_of(task: str) -> str | None:  # an attempt started before this process
        path = store.task(rec.id, task).stderr  # (a resumed run)
        return str(path) if path else None

    if quiet:
        display: Any = None
    elif err.is_terminal:
        display = LiveTable(err, list(wf.tasks), selected, stderr_of)
    else:
        display = PlainProgress(err, stderr_of)
    executor = None
    if wf.uses_sites():
        from kale.sites.across import SiteRouter

        executor = SiteRouter(wf, jobs=rec.options.get("jobs"), home=home,
                              force=bool(rec.options.get("force")))
    engine = make_engine(store, rec, wf, listeners=[display] if display else [],
                         executor=executor)
    if display is None:
        final = drive(engine, handle_signals=True)
    else:
        with display:
            final = drive(engine, handle_signals=True)
    if not quiet:
        _summary(store, rec.id)
    return EXIT.get(final.value, 1)


def _summary(store: Any, run_id: str) -> None:
    rec = store.get_run(run_id)
    color = {"SUCCEEDED": "green", "FAILED": "red"}.get(rec.state.value, "yellow")
    err.print(f"run {rec.id} [bold {color}]{rec.state.value}[/] ({rec.message})", markup=True)
    for t in store.tasks(run_id):
        if t.state.value in ("FAILED", "TIMEOUT"):
            err.print(f"  {t.name}: {t.state.value}: {t.error}", markup=False)
            if t.stderr:
                err.print(f"    log: {t.stderr}", markup=False)


@app.command("_drive", hidden=True)
def drive_cmd(run_id: str, home: Home = None) -> None:
    """Internal: drive a run created with --detach."""
    store, path = _store(home)
    raise typer.Exit(_drive(store, store.get_run(run_id), quiet=True, home=path))


@app.command()
def resume(run_id: RunArg,
           task: Annotated[str | None, typer.Argument(
               metavar="TASK", help="A suspended task of the run.")] = None,
           jobs: Annotated[int | None, typer.Option("-j", "--jobs", min=1, metavar="N",
                                                    help="Tasks at once.")] = None,
           home: Home = None) -> None:
    """Finish a run whose process stopped: only tasks that have not succeeded run. With
    TASK: let a suspended task go on (SIGCONT)."""
    from kale.engine.runs import check_resumable

    if task is not None:
        _task_action(run_id, task, "resume", home)
        return
    store, _ = _store(home)
    rec = store.get_run(run_id)
    check_resumable(rec)
    if jobs:
        rec.options["jobs"] = jobs
    out.print(rec.id)
    raise typer.Exit(_drive(store, rec, home=_home_path(home)))


@app.command()
def suspend(run_id: RunArg, task: TaskArg, site: Site = None, home: Home = None) -> None:
    """Stop a running task's processes (SIGSTOP) until `kale resume RUN TASK`."""
    _task_action(run_id, task, "suspend", home, site=site)


@app.command("continue")
def continue_(run_id: RunArg, task: TaskArg, site: Site = None, home: Home = None) -> None:
    """Mark an interactive step done: the workflow goes on with what it recorded."""
    _task_action(run_id, task, "continue", home, site=site)


@app.command()
def reject(run_id: RunArg, task: TaskArg,
           reason: Annotated[str | None, typer.Option(metavar="TEXT",
                                                      help="Why, for the record.")] = None,
           site: Site = None, home: Home = None) -> None:
    """Reject an interactive step: it fails and the tasks below it are skipped."""
    _task_action(run_id, task, "reject", home, reason, site=site)


@app.command()
def attach(run_id: RunArg, task: TaskArg, site: Site = None, home: Home = None) -> None:
    """Open a Jupyter console on the kernel a running task executes in: read its
    variables, change them to steer it. The task goes on running meanwhile. At a
    --site, the kernel is reached through the site's SSH connection."""
    from kale.errors import KaleError
    from kale.kernels.attach import Tunnel, reachable, write_connection_file
    from kale.sites.kernels import KernelForwards

    path = _home_path(home)
    try:
        source = _source(home, site) if site is not None else None
        with (source.client if source is not None else _manager_client(home)) as client:
            info = client.kernel_info(run_id, task)
            run = client.status(run_id, tasks=False)["run"]["id"]
    except KaleError as e:
        fail(str(e))
    tunnel: Tunnel | KernelForwards | None
    try:
        if source is not None:  # the kernel's ports, as the site's login node sees them,
            tunnel = KernelForwards(source.site, info)  # forwarded by the site's master
            usable: dict[str, Any] = tunnel.info(info)
        else:
            usable, tunnel = reachable(info)
    except (OSError, TimeoutError, KaleError) as e:
        fail(f"cannot reach the kernel on {info.get('host')}: {e}", 1)
    conn = write_connection_file(usable, path / "attach", f"{run}-{task}")
    err.print(f"attached to {task} of run {run} (kernel {info.get('kernel_name')} on "
              f"{info.get('host')}); Ctrl-D leaves it running", markup=False)
    try:
        code = subprocess.run([sys.executable, "-m", "jupyter_console", "--existing",
                               str(conn), "--no-confirm-exit",
                               ]).returncode
    finally:
        conn.unlink(missing_ok=True)
        if tunnel is not None:
            tunnel.close()
    raise typer.Exit(code)


@app.command()
def step(run_id: RunArg, task: TaskArg, site: Site = None, home: Home = None) -> None:
    """Print the path of an interactive step's notebook, to open in JupyterLab: its
    kernel is the step's own (it attaches). At a --site, the notebook is first copied
    here; its kernel attaches through the site's SSH connection."""
    from kale.errors import KaleError

    source = _source(home, site)
    try:
        run = source.status(run_id, tasks=False)["run"]
        state = source.task(run["id"], task)["state"]
        if state != "WAITING":
            fail(f"task {task} of run {run['id']} is {state}, not a step that waits for "
                 "a person")
        if site is not None:
            path = source.step_notebook(run["id"], task, _home_path(home))
        else:
            path = Path(run["run_dir"]) / task / "step.ipynb"
            if not path.is_file():
                raise KaleError(f"{path} is not there")
    finally:
        source.close()
    out.print(str(path), markup=False)


@app.command()
def fetch(run_id: RunArg, task: TaskArg,
          dest: Annotated[Path, typer.Argument(metavar="DEST",
                                               help="A local directory.")] = Path("."),
          site: Site = None, home: Home = None) -> None:
    """Copy a succeeded task's declared outputs (its `outputs:`) into DEST: from the
    run's directory here, or from the --site over SSH (only what changed)."""
    source = _source(home, site)
    try:
        made = source.fetch(run_id, task, dest)
    finally:
        source.close()
    for p in made:
        out.print(str(p), markup=False)


@app.command()
def cancel(run_id: RunArg,
           task: Annotated[str | None, typer.Argument(
               metavar="TASK", help="Cancel only this task.")] = None,
           site: Site = None, home: Home = None) -> None:
    """Cancel a run: its running tasks are killed and recorded CANCELLED. With TASK: only
    that task (the tasks below it are skipped)."""
    if task is not None:
        _task_action(run_id, task, "cancel", home, site=site)
        return
    state = _source(home, site).cancel(run_id)
    out.print(f"run {run_id} {state.value}")


@app.command()
def validate(file: Annotated[Path, typer.Argument(
                 metavar="FILE", help="Workflow YAML (or JSON) file, or a CWL document.")],
             job: Annotated[Path | None, typer.Argument(
                 metavar="JOB", help="With a CWL FILE: also check this input object.")
             ] = None) -> None:
    """Check a workflow file; print what is wrong with file and line. A CWL document is
    checked for what Kale cannot run (JavaScript, requirements it does not honour, by
    name), and with JOB, its input object too."""
    if _is_cwl(file, job):
        from kale.cwl.importer import document_summary, import_cwl, load_checked

        process = load_checked(file) if job is None else import_cwl(file, job).process
        out.print(f"{file}: {document_summary(process)}", markup=False)
        return
    from kale.spec import load_workflow

    wf = load_workflow(file)
    out.print(f"{file}: workflow {wf.name!r} is valid ({len(wf)} tasks)")


@app.command("cwl-runner")
def cwl_runner(
    document: Annotated[Path, typer.Argument(
        metavar="DOCUMENT", help="A CWL document (FILE.cwl, FILE.cwl#name).")],
    job: Annotated[Path | None, typer.Argument(
        metavar="JOB", help="Its input object (YAML or JSON).")] = None,
    outdir: Annotated[Path, typer.Option(
        metavar="DIR", help="Where the output files are copied (default: here).")
    ] = Path("."),
    quiet: Annotated[bool, typer.Option(help="No progress on stderr.")] = False,
    force: Annotated[bool, typer.Option(help="Re-run steps whose results could be reused.")
                     ] = False,
    home: Home = None,
) -> None:
    """Run a CWL document as a cwl-runner does (for cwltest --tool): the run is a Kale run
    in this process, the output files are copied into --outdir, and the output object is
    printed as JSON on stdout. Exit 0, 1 when a step failed, 2 for a document or input
    object Kale cannot read, 33 for a CWL feature Kale does not support."""
    from kale.cwl.document import Unsupported
    from kale.cwl.runner import RunFailed, copy_outputs, execute

    try:
        imported = _cwl_import(document, job, {})
    except Unsupported as e:
        err.print(f"[bold red]unsupported:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(33) from None
    store, path = _store(home)
    try:
        run_id, result = execute(store, path, imported, force=force)
    except RunFailed as e:
        fail(str(e) + f"; `kale status {e.run_id}` and `kale logs {e.run_id} TASK` tell more",
             1)
    if not quiet:
        err.print(f"run {run_id} SUCCEEDED", markup=False)
    sys.stdout.write(json.dumps(copy_outputs(result, outdir.resolve()), indent=2) + "\n")


class ExportFormat(enum.StrEnum):
    """What `kale export` writes."""

    yaml = "yaml"
    cwl = "cwl"


@app.command()
def export(source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="A YAML file, a run (an id, a unique prefix, or 'latest'), or "
        "a Python 'file.py:name' / 'module:name' Workflow.")],
           format_: Annotated[ExportFormat, typer.Option(
               "--format", metavar="FORMAT",
               help="yaml: Kale's YAML; cwl: a CWL v1.2 document (docs/cwl.md).")
           ] = ExportFormat.yaml,
           home: Home = None) -> None:
    """Print a workflow as canonical YAML, or as CWL (redirect it to a file)."""
    from kale.model.workflow import Workflow

    wf: Workflow
    if source.endswith((".yaml", ".yml")):
        from kale.spec import load_workflow

        wf = load_workflow(source, check_files=False)  # a format conversion: files may be elsewhere
    elif ":" in source:
        wf = _python_workflow(source)
    else:
        from kale.engine.runs import load_workflow as from_run

        store, _ = _store(home)
        wf = from_run(store.get_run(source))
    if format_ is ExportFormat.cwl:
        from kale.cwl.export import dump_cwl

        sys.stdout.write(dump_cwl(wf))
        return
    from kale.spec import dump_yaml

    sys.stdout.write(dump_yaml(wf.to_dict()))


def _python_workflow(source: str) -> Any:
    import importlib
    import runpy

    from kale.model.workflow import Workflow

    where, _, name = source.rpartition(":")
    try:
        if where.endswith(".py"):
            if not Path(where).is_file():
                fail(f"no such file: {where}")
            namespace = runpy.run_path(where)
        else:
            sys.path.insert(0, os.getcwd())
            namespace = vars(importlib.import_module(where))
    except (Exception, SystemExit) as e:
        if isinstance(e, typer.Exit):
            raise
        fail(f"{source}: cannot load {where}: {type(e).__name__}: {e}")
    wf = namespace.get(name)
    if not isinstance(wf, Workflow):
        fail(f"{source}: {name!r} is not a kale.Workflow")
    return wf


@app.command()
def status(run_id: Annotated[str | None, typer.Argument(
               metavar="RUN", help=RUN_HELP + " Default: latest.")] = None,
           task: Annotated[str | None, typer.Argument(
               metavar="TASK", help="Show this task in detail.")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                              ] = False,
           every: Annotated[bool, typer.Option(
               "--all", help="List every task, and every member of a map (by default: a "
                             "map's counts per state and its members that did not succeed; "
                             f"a run of over {BIG_RUN} tasks its counts per state and its "
                             "tasks under way or that did not succeed).")] = False,
           site: Site = None, home: Home = None) -> None:
    """Show a run's tasks (the newest run if none is given), or one task in detail."""
    from kale.model.states import TaskState

    source = _source(home, site)
    if task is not None:
        _task_status(source, run_id or "latest", task, as_json)
        return
    if not as_json and not every:  # a big run: its counts, and its tasks worth a look
        head = source.status(run_id or "latest", tasks=False)
        if sum(head["counts"].values()) > BIG_RUN:
            _run_header(head["run"], site, home)
            out.print(_counts(head["counts"]), markup=False)
            if not set(head["counts"]) <= QUIET:  # only those are read, not every task
                doc = source.status(head["run"]["id"], states=sorted(
                    {s.value for s in TaskState} - QUIET))
                _print_rows(_unfinished(_grouped(doc["tasks"], False, doc.get("maps"))))
            return
    doc = source.status(run_id or "latest")
    run = doc["run"]
    if as_json:
        _print_json({"run": run, "tasks": doc["tasks"]}, len(doc["tasks"]) > BIG_RUN)
        return
    _run_header(run, site, home)
    _print_rows(_grouped(doc["tasks"], every))


def _print_rows(rows: list[tuple[dict[str, Any] | None, str]]) -> None:
    """The task table of `kale status`."""
    from kale.model.display import duration

    cells = []
    for t, shown in rows:
        if t is None:
            cells.append([f"  ... {shown}", "", "", "", "", "", ""])
            continue
        note = t["error"] or t["reason"] or ""
        cells.append([("  " if "member_of" in t else "") + t["name"], t["kind"], t["state"],
                      str(t["attempts"]), "" if t["exit_code"] is None else str(t["exit_code"]),
                      duration(t["duration"]), shown or note])
    columns = ("task", "kind", "state", "attempts", "exit", "duration", "note")
    if not cells:
        return
    if len(cells) > BIG_RUN:  # a table of rich's takes ~0.7 ms a row
        _plain_table(columns, cells)
        return
    table = Table(box=None)
    table.add_column("task", no_wrap=True)  # what `kale logs RUN TASK` takes: never cut
    for col in columns[1:]:
        table.add_column(col, overflow="fold")
    for row in cells:
        table.add_row(*row)
    out.print(table)


#: rows beyond which `kale status` shows a run's counts per state and its tasks that are
#: under way or did not succeed, rather than every task (``--all`` lists them all)
BIG_RUN = 100


#: the states of the tasks a big run's status does not list
QUIET = frozenset(("SUCCEEDED", "PENDING", "READY"))


def _run_header(run: dict[str, Any], site: str | None, home: Path | None) -> None:
    """The run's line of `kale status`, and what keeps it from going on."""
    out.print(f"run {run['id']}  workflow {run['workflow']}  [bold]{run['state']}[/]"
              + (f"  ({run['message']})" if run["message"] else ""), markup=True)
    if run["state"] == "RUNNING" and run["driven_by_pid"] is None:
        out.print(f"no process is driving this run; `kale resume {run['id']}` finishes it")
    elif run["state"] == "RUNNING" and site is None:
        for said in _manager_problems(home, run["id"]):
            out.print(f"[bold yellow]waiting:[/] {said}", markup=True, highlight=False)


def _counts(counts: Mapping[str, int]) -> str:
    """``100,002 tasks: 99,000 succeeded, 2 running, 1,000 pending``."""
    return f"{sum(counts.values()):,} tasks: " + ", ".join(
        f"{n:,} {state.lower()}" for state, n in sorted(counts.items(), key=lambda x: -x[1]))


def _unfinished(rows: list[tuple[dict[str, Any] | None, str]], most: int = 20
                ) -> list[tuple[dict[str, Any] | None, str]]:
    """The rows of a big run worth a look: tasks neither succeeded nor still waiting, at
    most ``most``, then how many more."""
    keep: list[tuple[dict[str, Any] | None, str]] = [
        (t, shown) for t, shown in rows if t is not None and t["state"] not in QUIET]
    if len(keep) <= most:
        return keep
    return [*keep[:most], (None, f"{len(keep) - most:,} more (--all lists every task)")]


def _plain_table(columns: tuple[str, ...], cells: list[list[str]]) -> None:
    """Columns padded with spaces, written as they are (many rows, quickly)."""
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in [list(columns), *cells]]
    out.file.write("\n".join(lines) + "\n")
    out.file.flush()


def _print_json(doc: Any, big: bool) -> None:
    """``doc`` as indented JSON: coloured on a terminal, written as it is when big (rich
    reads back and colours a document of 100,000 tasks for minutes) or piped."""
    if out.is_terminal and not big:
        out.print_json(json.dumps(doc, default=str))
        return
    out.file.write(json.dumps(doc, default=str, indent=2, ensure_ascii=False) + "\n")
    out.file.flush()


def _grouped(tasks: list[dict[str, Any]], every: bool,
             maps: Mapping[str, Mapping[str, int]] | None = None, most: int = 10
             ) -> list[tuple[dict[str, Any] | None, str]]:
    """The rows of `kale status`: each map with its members' counts per state (from
    ``maps`` when ``tasks`` are only some of the run's, else counted here), followed by
    its members that did not succeed (at most ``most``, unless ``every``), indented; a
    ``None`` row says how many more there are."""
    members: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        if "member_of" in t:
            members.setdefault(t["member_of"], []).append(t)
    rows: list[tuple[dict[str, Any] | None, str]] = []
    for t in tasks:
        if "member_of" in t:
            continue
        mine = members.get(t["name"], [])
        counts = dict(maps.get(t["name"]) or {}) if maps is not None else \
            dict(Counter(m["state"] for m in mine))
        if not counts:
            rows.append((t, ""))
            continue
        what = "members" if not mine else "elements" if all(
            m["name"].endswith("]") and m["name"][m["name"].rindex("[") + 1:-1].isdigit()
            for m in mine) else "added tasks"
        rows.append((t, f"{sum(counts.values())} {what}: " + ", ".join(
            f"{n} {state.lower()}" for state, n in sorted(counts.items()))))
        listed = mine if every else [m for m in mine if m["state"] != "SUCCEEDED"]
        rows += [(m, "") for m in listed[:None if every else most]]
        if not every and len(listed) > most:
            rows.append((None, f"{len(listed) - most} more (--all lists every member)"))
    return rows


def _source(home: Path | None, site: str | None = None) -> Any:
    """The run interface of the home's store (whoever drives its runs), or of ``site``'s
    manager (over SSH)."""
    if site is not None:
        from kale.cli.sites import open_source

        return open_source(site, home)
    from kale.client.local import EmbeddedSource

    return EmbeddedSource(home)


def _manager_problems(home: Path | None, run_id: str) -> list[str]:
    """What the home's manager says keeps a run of its from going on (workers that cannot
    start, a store that refused a write, tasks waiting for a worker of their user's)."""
    from kale.manager import service

    if service.state(_home_path(home)) is None:
        return []
    try:
        from kale.client.remote import Client

        with Client(home=_home_path(home)) as client:
            return [str(p) for p in client.status(run_id, tasks=False).get("problems", [])]
    except Exception:  # the status shown must not depend on reaching the manager
        return []


def _task_status(source: Any, run_id: str, task: str, as_json: bool) -> None:
    """`kale status RUN TASK`: the task's record, and why it failed: the end of its
    stderr (and its traceback when that is not already there)."""
    from kale.cli.tails import last_lines, read_tail

    run = source.status(run_id, tasks=False)["run"]
    t = source.task(run["id"], task)
    failed = t["state"] in ("FAILED", "TIMEOUT", "RETRYING")
    site = getattr(getattr(source, "site", None), "name", None)  # the files are there
    text = "" if not failed else read_tail(t["stderr"]) if t["stderr"] and site is None \
        and os.path.exists(t["stderr"]) else source.logs(run["id"], task, "stderr")
    tail = last_lines(text, STATUS_TAIL_LINES)
    if as_json:
        doc = {"run": run, "task": t, "attempts": t["attempt_rows"],
               "traceback": t["traceback"], "stderr_tail": tail}
        out.print_json(json.dumps(doc, default=str))
        return
    for k, v in t.items():
        if k not in _DETAIL_ONLY and v not in (None, {}, "", []):
            out.print(f"{k:>10}: {v}", markup=False)
    tb = last_lines(t["traceback"] or "", 1)
    if tb and tb[-1] not in tail:  # the traceback is not already at the end of stderr
        out.print(t["traceback"], markup=False)
    if tail:
        where = f" --site {site}" if site else ""
        out.print(f"the end of its stderr ({t['stderr']}; all of it: "
                  f"kale logs {run['id']} {task} --stderr{where}):", markup=False)
        for line in tail:
            out.print(f"    | {line}", markup=False)


#: what a task's detail adds to its record (shown otherwise, or not at all, by status)
_DETAIL_ONLY = ("description", "parameters", "after", "attempt_rows", "traceback")
STATUS_TAIL_LINES = 20


@app.command("runs")
def runs_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                                ] = False,
             limit: Annotated[int, typer.Option(min=1, metavar="N",
                                                help="Show at most N runs.")] = 50,
             site: Site = None, home: Home = None) -> None:
    """List runs, newest first."""
    docs = _source(home, site).runs(limit)
    if as_json:
        out.print_json(json.dumps(docs, default=str))
        return
    # The run id is what people copy: never cut; the other columns give way.
    table = Table(box=None)
    table.add_column("run", no_wrap=True, min_width=max((len(r["id"]) for r in docs),
                                                        default=3))
    table.add_column("workflow", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("started", overflow="fold")
    table.add_column("summary", overflow="fold")
    for r in docs:
        table.add_row(r["id"], r["workflow"], r["state"],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
                      r["message"] or "")
    out.print(table)


@app.command()
def logs(run_id: RunArg, task: TaskArg,
         follow: Annotated[bool, typer.Option("-f", "--follow",
                                              help="Keep printing as the task writes.")] = False,
         stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr.")] = False,
         site: Site = None, home: Home = None) -> None:
    """Print a task's stdout (or --stderr) log of its latest attempt."""
    source = _source(home, site)
    run = source.status(run_id, tasks=False)["run"]["id"]
    source.task(run, task)  # an unknown task is an error, not an empty log
    stream = "stderr" if stderr else "stdout"
    if not follow:
        sys.stdout.write(source.logs(run, task, stream))
        return
    _follow(source, run, task, stream)


def _follow(source: Any, run_id: str, task: str, stream: str) -> None:
    """Print the log as it grows until the task stops, like ``tail -f``: each read asks
    for what follows the bytes already printed (a new attempt starts a new log)."""
    from kale.model.states import TaskState

    offset, current = 0, None
    while True:
        t = source.task(run_id, task)  # before the read: a task seen ended has its log
        if t[stream] != current:
            current, offset = t[stream], 0
        chunk = source.logs(run_id, task, stream, offset)
        if chunk:
            offset += len(chunk.encode(errors="replace"))
            sys.stdout.write(chunk)
            sys.stdout.flush()
        if TaskState(t["state"]).terminal and not chunk:
            return
        time.sleep(0.1)


manager_app = typer.Typer(help="The per-user manager service (hosts runs, serves the API).",
                          no_args_is_help=True)
app.add_typer(manager_app, name="manager")


def _add_site_commands() -> None:
    from kale.cli.sites import site_app

    app.add_typer(site_app, name="site")


_add_site_commands()


def _home_path(home: Path | None) -> Path:
    from kale.config import kale_home

    return kale_home(home)


@manager_app.command("start")
def manager_start(
    port: Annotated[int, typer.Option(
        metavar="PORT",
        help="TCP port on the host, served with TLS (0, the default: the previous "
        "manager's if it is free, else one the system chooses; manager.json and `kale "
        "manager status` say which). Local clients use $KALE_HOME/manager.sock.")] = 0,
    host: Annotated[str, typer.Option(metavar="ADDRESS",
                                      help="Address to listen on (keep it local).")
                    ] = "127.0.0.1",
    workers: Annotated[int, typer.Option(
        min=0, metavar="N", help="Local workers to keep while there is work (0: only "
        "workers you start with `kale worker`).")] = 1,
    worker_slots: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="Tasks at once per local worker (default: CPU count).")] = None,
    heartbeat_timeout: Annotated[float, typer.Option(
        min=0.5, metavar="SECONDS", help="Seconds of silence after which a worker is "
        "lost and its tasks retried.")] = 15.0,
    sample_interval: Annotated[float, typer.Option(
        min=0.1, metavar="SECONDS",
        help="Seconds between resource samples of each running task.")] = 2.0,
    home: Home = None,
) -> None:
    """Start the manager in the background (no-op if it runs already); print its URL."""
    from kale.manager import service

    doc = service.start(_home_path(home), host=host, port=port, workers=workers,
                        worker_slots=worker_slots, heartbeat_timeout=heartbeat_timeout,
                        sample_interval=sample_interval)
    out.print(doc["url"])


@manager_app.command("add-user")
def manager_add_user(name: Annotated[str, typer.Argument(metavar="NAME",
                                                        help="The new user's name.")],
                     home: Home = None) -> None:
    """Let another user use this manager (a shared PostgreSQL store): prints their user and
    worker tokens as JSON, once; the store keeps only hashes."""
    from kale.manager.auth import add_user

    store, _ = _store(home)
    out.print_json(json.dumps(add_user(store, name)))


@manager_app.command("stop")
def manager_stop(home: Home = None) -> None:
    """Stop the manager and the local workers it started. Its unfinished runs are kept:
    the next `kale manager start` resumes them."""
    from kale.manager import service

    out.print("stopped" if service.stop(_home_path(home)) else "no manager was running")


@manager_app.command("status")
def manager_status(as_json: Annotated[bool, typer.Option(
                       "--json", help="Machine-readable output.")] = False,
                   home: Home = None) -> None:
    """Where the manager listens, and its pid (exit 1 if none is running)."""
    from kale.manager import service

    doc = service.state(_home_path(home))
    if as_json:
        out.print_json(json.dumps(doc or {"url": None, "pid": None}))
    elif doc:
        out.print(f"manager running at {doc['url']} (pid {doc['pid']})")
    else:
        out.print("no manager is running")
    raise typer.Exit(0 if doc else 1)


@app.command()
def worker(
    manager: Annotated[str | None, typer.Option(
        metavar="URL", help="Manager URL: https://HOST:PORT, or unix:PATH of its socket "
        "(default: the running manager of the Kale home).")] = None,
    token_file: Annotated[Path | None, typer.Option(
        metavar="FILE", help="File holding a worker token (default: $KALE_WORKER_TOKEN, else "
        "$KALE_HOME/worker-token).")] = None,
    slots: Annotated[int | None, typer.Option(min=1, metavar="N",
                                              help="Tasks at once (default: CPUs).")] = None,
    worker_id: Annotated[str | None, typer.Option("--id", metavar="ID", help="Worker id "
                                                  "(default: host-pid-random).")] = None,
    idle_exit: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="Exit after this many seconds without tasks.")] = None,
    give_up: Annotated[float, typer.Option(
        metavar="SECONDS",
        help="Exit when the manager has been unreachable this many seconds.")] = 300.0,
    cert: Annotated[Path | None, typer.Option(
        metavar="FILE", help="The manager's TLS certificate, the only one trusted for an "
        "https:// --manager (default: $KALE_MANAGER_CERT, else "
        "$KALE_HOME/tls/manager.crt).")] = None,
    provider: Annotated[str | None, typer.Option(hidden=True)] = None,
    pool: Annotated[str | None, typer.Option(hidden=True)] = None,
    job: Annotated[str | None, typer.Option(hidden=True)] = None,
    once: Annotated[bool, typer.Option(hidden=True)] = False,
    walltime: Annotated[float | None, typer.Option(hidden=True)] = None,
    batch: Annotated[bool, typer.Option(hidden=True)] = False,
    home: Home = None,
) -> None:
    """Run tasks for a manager: connect, take tasks, run and monitor them, report."""
    import asyncio
    import logging

    import kale.tls as tls
    from kale.manager.tokens import WORKER_TOKEN_FILE, read_token
    from kale.worker import WorkerAgent

    path = _home_path(home)
    if manager is None:
        from kale.client.remote import _local_socket
        from kale.manager import service

        doc = service.state(path)
        if doc is None:
            fail(f"no manager is running for {path}; give --manager URL")
        manager = str(doc["url"])
        if _local_socket(doc) is not None:
            manager = f"unix:{doc['socket']}"
    if not manager.startswith(("https://", "wss://", "unix:")):
        fail(f"--manager {manager!r}: expected an https:// URL (managers speak TLS), or "
             "unix:PATH of the manager's socket")
    pem = None
    if not manager.startswith("unix:"):
        given = cert or os.environ.get(tls.CERT_ENV) or None
        if given is None and tls.cert_path(path).exists():
            given = tls.cert_path(path)
        if given is None:
            fail(f"--manager {manager}: give the manager's certificate (--cert FILE, or "
                 f"${tls.CERT_ENV}); it is $KALE_HOME/tls/manager.crt on the manager's host")
        try:
            pem = tls.load_pin(given)
        except KaleError as e:
            fail(str(e))
    if token_file is not None:
        token = token_file.read_text().strip()
    elif os.environ.get("KALE_WORKER_TOKEN"):
        token = os.environ["KALE_WORKER_TOKEN"]
    else:
        try:
            token = read_token(path, WORKER_TOKEN_FILE)
        except FileNotFoundError:
            fail(f"no worker token: {path / WORKER_TOKEN_FILE} does not exist "
                 "(start the manager once, or give --token-file)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    agent = WorkerAgent(manager, token, slots=1 if once else slots, worker_id=worker_id,
                        provider=provider, give_up=give_up, idle_exit=idle_exit, pool=pool,
                        job=job, once=once, walltime=walltime, batch=batch, cert=pem,
                        home=path if os.environ.get("KALE_HOME") or home else None)
    err.print(f"worker {agent.id} ({agent.slots} slots) for {manager}")
    raise typer.Exit(asyncio.run(agent.run()))


@app.command()
def queue(
    scheduler: Annotated[str | None, typer.Option(
        metavar="NAME", help="slurm, pbs, lsf, flux or cobalt (default: the one on PATH).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: Home = None,
) -> None:
    """Your batch jobs (state, reason, time queued, expected start) and the partitions;
    jobs Kale submitted say which task or pilot they are."""
    import getpass

    from kale.batch.queue import queue_status
    from kale.errors import KaleError
    from kale.store import workers as wstore

    store, _path = _store(home)
    try:
        doc = queue_status(scheduler, getpass.getuser(), wstore.jobs(store, limit=1000))
    except KaleError as e:
        fail(str(e))
    if as_json:
        out.print_json(data=doc)
        return
    _print_queue(doc)


def _print_queue(doc: dict[str, Any]) -> None:
    from rich.table import Table

    def ago(seconds: float | None) -> str:
        if seconds is None:
            return ""
        m, s = divmod(int(seconds), 60)
        h, m = divmod(m, 60)
        return f"{h}:{m:02d}:{s:02d}"

    jobs = Table(title=f"{doc['scheduler']} jobs", title_justify="left")
    jobs.add_column("job", no_wrap=True)  # an id people copy (scancel): never cut
    for col in ("name", "state", "reason", "partition", "nodes", "queued",
                "expected start", "kale"):
        jobs.add_column(col, overflow="fold")
    for j in doc["jobs"]:
        start = time.strftime("%H:%M:%S", time.localtime(j["start"])) \
            if j.get("start") and j["state"] == "PENDING" else ""
        kale_doc = j.get("kale") or {}
        what = "/".join(map(str, kale_doc["task"][:2])) if kale_doc.get("task") \
            else kale_doc.get("mode", "")
        jobs.add_row(j["id"], j["name"], j["state"], j.get("reason") or "",
                     j.get("partition") or "", str(j.get("nodes") or ""),
                     ago(j.get("queued_for")), start, what)
    out.print(jobs)
    parts = Table(title="partitions", title_justify="left")
    for col in ("partition", "available", "nodes", "idle nodes", "cpus", "idle cpus",
                "max walltime"):
        parts.add_column(col)
    for p in doc["partitions"]:
        parts.add_row(p["name"] + ("*" if p.get("default") else ""),
                      "up" if p["available"] else "down", str(p.get("nodes") or ""),
                      str(p.get("idle_nodes") if p.get("idle_nodes") is not None else ""),
                      str(p.get("cpus") or ""),
                      str(p.get("idle_cpus") if p.get("idle_cpus") is not None else ""),
                      ago(p["max_walltime"]) if p.get("max_walltime") else "unlimited")
    out.print(parts)
    for e in doc["errors"]:
        err.print(f"warning: {e}", markup=False)


@app.command()
def record(name: Annotated[str, typer.Argument(metavar="NAME", help="The result key.")],
           value: Annotated[str, typer.Argument(metavar="VALUE", help=VALUE_HELP)]) -> None:
    """Record a value as part of the current task's result (for shell tasks; in Python,
    kale.record(name, value))."""
    from kale.spec.values import parse_value
    from kale.tasks.record import record as do_record

    try:
        typed = parse_value(value)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="VALUE") from None
    do_record(name, typed)


def _interrupted(signum: int, frame: Any) -> None:
    # Ctrl-C outside a run (a run handles it itself and cancels cleanly)
    err.print("interrupted")
    raise SystemExit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    try:
        app(standalone_mode=True, prog_name="kale")
    except ValidationError as e:
        _print_problems(e)
        sys.exit(2)
    except USAGE_ERRORS as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        sys.exit(2)
    except KaleError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
