"""Small helpers shared by the benchmarks."""

from typing import List, Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> str:
    """p50/p99/max of seconds, printed in milliseconds."""
    ms: List[float] = [v * 1000.0 for v in values]
    return f"p50={percentile(ms, 50):.2f}ms p99={percentile(ms, 99):.2f}ms max={max(ms):.2f}ms n={len(ms)}"


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"
