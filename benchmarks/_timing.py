"""Shared measurement helpers: best-of-N timing and a ratio table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

__all__ = ["best_of", "print_table"]


def best_of(fn: Callable[[int], None], n: int, repeat: int = 5) -> float:
    """Seconds per iteration: the best of ``repeat`` runs of ``fn(n)`` (fn loops n times)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        best = min(best, (time.perf_counter() - t) / n)
    return best


def print_table(title: str, rows: Sequence[tuple[str, float]], baseline: str) -> dict[str, float]:
    """Print per-iteration costs in microseconds and each row's ratio to ``baseline``."""
    base = dict(rows)[baseline]
    print(f"\n{title}")
    print(f"  {'case':48s} {'us/op':>9s} {'ratio':>7s}")
    ratios = {}
    for name, seconds in rows:
        ratios[name] = seconds / base
        print(f"  {name:48s} {seconds * 1e6:9.3f} {seconds / base:7.2f}")
    print(f"  (ratio = case / {baseline})")
    return ratios
