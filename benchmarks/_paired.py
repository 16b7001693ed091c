"""End-to-end cost measured in many short interleaved blocks, with the measurement's own noise.

An end-to-end operation (``SELECT 1``, a redis ``GET``, an HTTP ``GET``) waits on a server whose
latency, on a shared machine, drifts by tens of percent within seconds, while the bar asks for
two percent. So each mode runs in short blocks (tens of operations), the modes of one block back
to back, in forward order on even blocks and reversed on odd ones (ABBA), and hundreds of blocks
are paired. Three numbers come out:

* the **wall ratio**: the median over blocks of (mode's time per op / plain's) -- the bar's own
  quantity, paired so that drift cancels;
* the **CPU-derived ratio**: ``1 + median(CPU delta per op) / median(plain wall per op)``. A shim
  adds CPU work in the calling thread and never waits, so its whole cost shows in this thread's
  CPU time, which the server's latency does not move: the same quantity, with less noise;
* the **A/A ratio**: plain measured as a second, separate mode. Its distance from 1.000 is what
  this run can resolve; a wall ratio within that distance of the bar is not a verdict.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["AGAIN", "Blocks", "interleave", "report"]

#: The name of the second, separate plain mode (the A/A check).
AGAIN = "plain (again)"


@dataclass
class Blocks:
    """Seconds per operation of each mode, block by block (lists of equal length)."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def interleave(
    modes: Sequence[str],
    switch: Callable[[str], None],
    loop: Callable[[int], None],
    *,
    per_block: int,
    blocks: int,
    warm: int = 5,
) -> Blocks:
    """Run ``loop(per_block)`` once per mode per block, ``switch(mode)`` before each (it must
    make that mode the only one active; ``AGAIN`` is plain). Untimed ``loop(warm)`` after each
    switch lets the mode's first-sight work happen outside the timing."""
    out = Blocks({m: [] for m in modes}, {m: [] for m in modes})
    for index in range(blocks):
        for mode in modes if index % 2 == 0 else tuple(reversed(modes)):
            switch(mode)
            loop(warm)
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            loop(per_block)
            out.wall[mode].append((time.perf_counter() - wall0) / per_block)
            out.cpu[mode].append((time.thread_time() - cpu0) / per_block)
    return out


def _wall_ratio(blocks: Blocks, mode: str, base: str) -> float:
    pairs = zip(blocks.wall[mode], blocks.wall[base], strict=True)
    return statistics.median(m / b for m, b in pairs)


def _cpu_ratio(blocks: Blocks, mode: str, base: str) -> float:
    pairs = zip(blocks.cpu[mode], blocks.cpu[base], strict=True)
    added = statistics.median(m - b for m, b in pairs)
    return 1.0 + added / statistics.median(blocks.wall[base])


def report(title: str, blocks: Blocks, mode: str, bar: float, base: str = "plain") -> bool:
    """Print the three ratios of ``mode`` against ``base`` and the verdict; True when met.

    The verdict is the wall ratio's (the bar's quantity). It is printed as unresolved when the
    A/A ratio says this run's noise reaches across the bar, so that a noisy run cannot pass or
    fail on noise without saying so."""
    n = len(blocks.wall[base])
    wall = _wall_ratio(blocks, mode, base)
    cpu = _cpu_ratio(blocks, mode, base)
    print(f"\n{title}: {n} interleaved blocks")
    print(f"  plain {statistics.median(blocks.wall[base]) * 1e6:.1f} us/op (median block)")
    print(f"  wall ratio {mode}/plain (median of paired blocks): {wall:.4f}")
    print(f"  CPU-derived ratio (this thread's extra CPU per op / plain op): {cpu:.4f}")
    noise = None
    if AGAIN in blocks.wall:
        noise = abs(_wall_ratio(blocks, AGAIN, base) - 1.0)
        print(f"  A/A ratio (plain against plain): {1.0 + noise:.4f} or {1.0 - noise:.4f}")
    met = wall <= bar
    if noise is not None and abs(wall - bar) <= noise:
        print(f"  bar <= {bar:.2f}: unresolved by this run ({wall:.4f}, noise +/-{noise:.4f})")
    else:
        print(f"  bar <= {bar:.2f}: {'meets' if met else 'MISSES'} ({wall:.4f})")
    return met
