"""An ensemble: each member is a small simulation; the summary gathers them."""

import random
import statistics


def simulate(seed: int, steps: int = 10_000) -> dict[str, float]:
    """A random walk: where it ended and how far it went."""
    rng = random.Random(seed)
    x = peak = 0.0
    for _ in range(steps):
        x += rng.gauss(0, 1)
        peak = max(peak, abs(x))
    print(f"member {seed}: end {x:.2f}, peak {peak:.2f}")
    return {"end": x, "peak": peak}


def summarize(**members: dict[str, float]) -> dict[str, float]:
    peaks = [m["peak"] for m in members.values()]
    return {"members": len(peaks), "mean_peak": statistics.mean(peaks),
            "max_peak": max(peaks)}
