"""Python steps of the screening example: score each candidate, pick the best, report."""

import math


def score(path: str) -> dict:
    """One candidate's score, read from the file the simulation wrote for it (a stand-in
    for a real analysis)."""
    with open(path) as f:
        candidate = int(f.read())
    return {"candidate": candidate, "score": round(abs(math.sin(candidate)), 3)}


def pick(analyse: list, threshold: float) -> dict:
    """The candidates whose score passes the threshold (``analyse``: every score, in
    the order of the files)."""
    best = [a["candidate"] for a in analyse if a["score"] > threshold]
    return {"n": len(best), "candidates": best}


def report(refine: list) -> dict:
    """What the refinement notebooks recorded, one per candidate."""
    return {"refined": len(refine), "energies": [r["energy"] for r in refine]}
