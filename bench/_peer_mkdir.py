"""The file system's limit for scenarios 1 and 3: ``python bench/_peer_mkdir.py SCENARIO
--n N [--home-on DIR]``.

Kale gives every task a directory of its own (its working directory: where it writes,
where its records go). This makes ``n`` directories in one new folder, where Kale's run
directories go in the same bench run (``--home-on``, else the temporary folder, as
``_peer_kale.py``), one ``os.mkdir`` after another, and nothing else: what creating a
directory per task costs on that file system, as it is now. An ext4 folder that has seen
many files made and removed (the temporary folder after a test suite) can make
directories several times slower than a new folder of the same disk, so the row is
measured beside Kale's, in the same place and the same hour.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from _common import CpuMeter, main, parse_args, remove, result, timed

_ON = sys.argv[sys.argv.index("--home-on") + 1] if "--home-on" in sys.argv else None


def run() -> dict[str, Any]:
    args = parse_args(["python", "chain"],
                      ("--home-on", {"default": None, "help": "folder for the directories"}))
    root = tempfile.mkdtemp(prefix="kale-bench-mkdir-", dir=_ON)
    try:
        def make() -> None:
            folder = tempfile.mkdtemp(dir=root)
            for i in range(args.n):
                os.mkdir(f"{folder}/t{i}")

        first = timed(lambda: os.mkdir(f"{root}/first"))
        with CpuMeter() as cpu:
            times = [timed(make) for _ in range(args.repeat)]
    finally:
        remove(root)
    return result(times, first_task=first, **cpu.report(args.repeat, args.n))


if __name__ == "__main__":
    main(run)
