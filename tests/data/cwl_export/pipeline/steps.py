"""Python steps of the CWL export test's pipeline."""

import json


def stats(make: dict, n: int) -> dict:
    """Reads the shell task's files (paths in its result) and a workflow parameter."""
    with open(make["numbers.txt"]) as f:
        numbers = [int(x) for x in f.read().split()]
    with open("stats.json", "w") as f:
        json.dump({"numbers": numbers}, f)
    return {"mean": sum(numbers) / len(numbers), "n": n,
            "parts": len(make["parts/*.txt"].split(","))}


def final(tally: dict, total: dict, report: dict) -> dict:
    """What the notebook recorded, the text of two shell tasks' files, and what one
    recorded."""
    with open(total["total.txt"]) as f, open(report["report.txt"]) as g:
        return {"above": tally["above"], "count": tally["count"],
                "total": f.read().split(), "report": g.read().strip(),
                "sum": total["sum"]}
