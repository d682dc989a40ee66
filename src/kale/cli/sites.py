"""``kale site``: define the sites this user runs workflows at (over SSH) and check them.
The ``--site`` option of ``run``, ``status``, ``logs``, ``cancel``, ``attach``, ``fetch``
and ``runs`` (in :mod:`kale.cli.main`) goes through :func:`open_source`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

site_app = typer.Typer(help="Sites: other systems (a cluster's login node) where Kale runs "
                       "your workflows, reached over your own SSH.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True, emoji=False)

Home = Annotated[Path | None, typer.Option("--home", envvar="KALE_HOME", show_envvar=True,
                                          metavar="DIR",
                                          help="Kale home directory (default ~/.kale).")]
SiteOpt = Annotated[str | None, typer.Option(
    "--site", metavar="NAME", help="At this site (`kale site list`), over SSH.")]


def open_source(site: str, home: Path | None) -> Any:
    """The run interface of ``site`` (connected; its manager started if need be)."""
    from kale.sites.source import open_site

    return open_site(site, home)


@site_app.command("add")
def add(name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the site.")],
        url: Annotated[str, typer.Argument(
            metavar="URL", help="ssh://[USER@]HOST[:PORT] (HOST may be an alias from "
            "~/.ssh/config, with its jump hosts and keys).")],
        remote_home: Annotated[str, typer.Option(
            "--remote-home", "--kale-home", metavar="DIR",
            help="The Kale home at the site (~ is your home there).")] = "~/.kale",
        python: Annotated[str, typer.Option(
            metavar="PATH", help="The Python that has Kale at the site.")] = "python3",
        ssh_option: Annotated[list[str] | None, typer.Option(
            "--ssh-option", "-o", metavar="KEY=VALUE",
            help="An ssh option for this site (repeatable), as `ssh -o` takes.")] = None,
        home: Home = None) -> None:
    """Define a site (or redefine one of that name). `kale site check NAME` tries it."""
    from kale.sites import registry

    config = registry.SiteConfig(name=name, url=url, home=remote_home, python=python,
                                 options=tuple(ssh_option or ()))
    registry.save(config, home)
    out.print(f"site {name}: {url} (Kale home {remote_home}, {python})", markup=False)


@site_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                             ] = False, home: Home = None) -> None:
    """The sites defined."""
    from kale.sites import registry

    sites = registry.load(home)
    if as_json:
        out.print_json(json.dumps([c.to_json() for c in sites.values()]))
        return
    table = Table(box=None)
    for col in ("site", "url", "kale home", "python"):
        table.add_column(col, overflow="fold")
    for c in sites.values():
        table.add_row(c.name, c.url, c.home, c.python)
    out.print(table)


@site_app.command("remove")
def remove(name: Annotated[str, typer.Argument(metavar="NAME")], home: Home = None) -> None:
    """Forget a site (its manager and runs there go on)."""
    from kale.errors import SiteConfigError
    from kale.sites import registry

    if not registry.remove(name, home):
        raise SiteConfigError(name, "no such site")
    out.print(f"removed site {name}")


@site_app.command("check")
def check(name: Annotated[str, typer.Argument(metavar="NAME")],
          as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                             ] = False, home: Home = None) -> None:
    """Reach the site and say what is there: its Kale and Python versions (they must
    match this side's), its manager, the batch schedulers found. Exit 1 when a problem
    is found, 2 when the site refuses the login or its host key."""
    from kale.sites.site import Site

    report = Site.named(name, home).check()
    if as_json:
        out.print_json(json.dumps(report))
    else:
        manager = report["manager"]
        out.print(f"site {name}: reached {report['url']}", markup=False)
        out.print(f"  kale {report['kale']} (here {report['local_kale']}), python "
                  f"{report['python']}, home {report['home']}", markup=False)
        out.print("  manager: " + (f"running (pid {manager['pid']})" if manager else
                                   "not running (started on first use)"), markup=False)
        found = ", ".join(f"{k} ({v})" for k, v in report["schedulers"].items()) or "none"
        out.print(f"  batch schedulers: {found}", markup=False)
        for problem in report["problems"]:
            out.print(f"  problem: {problem}", markup=False)
    raise typer.Exit(1 if report["problems"] else 0)
