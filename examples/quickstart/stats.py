"""Python steps of the quickstart workflow."""


def summarize(analyse: dict) -> dict:
    """Receives the values the `analyse` notebook recorded with kale.record()."""
    powers = analyse["powers"]
    return {"count": len(powers), "total": sum(powers), "largest": max(powers)}
