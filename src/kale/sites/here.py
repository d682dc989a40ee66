"""What a site's Kale says about itself, run AT the site over SSH by
:meth:`kale.sites.site.Site.probe`: ``python -m kale.sites.here --home H [--start]
[--token]`` prints one JSON line (this Kale's version, the Python's, the home, its
manager (started with ``--start``), the batch schedulers on PATH, and with ``--token`` the
user's token). It imports only what that needs: it runs at every connect, and a fresh
Python's imports are most of its cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from typing import Any

#: the command of each batch scheduler a site may have
SCHEDULER_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "lsf": "bsub", "flux": "flux",
                      "cobalt": "cqsub"}


def describe(home: str, start: bool, token: bool) -> dict[str, Any]:
    from kale.config import kale_home, version
    from kale.manager import service

    path = kale_home(home)
    manager = service.start(path) if start else service.state(path)
    doc: dict[str, Any] = {
        "kale": version(), "python": platform.python_version(), "home": str(path),
        "manager": manager and {k: manager.get(k) for k in ("pid", "url", "socket")},
        "schedulers": {k: found for k, cmd in SCHEDULER_COMMANDS.items()
                       if (found := shutil.which(cmd))}}
    if token:
        from kale.manager.tokens import read_token

        doc["token"] = read_token(path)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kale.sites.here")
    parser.add_argument("--home", required=True)
    parser.add_argument("--start", action="store_true")
    parser.add_argument("--token", action="store_true")
    args = parser.parse_args(argv)
    try:
        doc = describe(args.home, args.start, args.token)
    except Exception as e:  # said on stderr, for the side that asked
        print(f"kale-site: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
