"""Launchers: how a multi-rank shell task starts its ranks across its allocation.

A task with ``launcher: srun`` and ``resources: {nodes: 2, ranks: 4, cpus: 2}`` runs
``srun --nodes=2 --ntasks=8 --cpus-per-task=2 <command>`` inside its batch job (or its
pilot's allocation); ``mpiexec``/``mpirun`` get ``-n 8``. The prefix is an argv list: the
command itself is never pasted into shell text."""

from __future__ import annotations

from kale.model.resources import Resources


def launch_prefix(launcher: str, res: Resources) -> list[str]:
    ranks = res.nodes * res.ranks
    if launcher == "srun":
        argv = ["srun", f"--nodes={res.nodes}", f"--ntasks={ranks}",
                f"--cpus-per-task={res.cpus}"]
        if res.gpus:
            argv.append(f"--gpus-per-task={res.gpus}")
        return argv
    if launcher in ("mpiexec", "mpirun"):
        return [launcher, "-n", str(ranks)]
    raise ValueError(f"unknown launcher {launcher!r}")
