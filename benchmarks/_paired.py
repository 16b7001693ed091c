"""End-to-end cost measured in many short interleaved blocks, with the measurement's own noise.

An end-to-end operation (``SELECT 1``, a redis ``GET``, an HTTP ``GET``) waits on a server whose
latency, on a shared machine, drifts by tens of percent within seconds, while the bar asks for
two percent. So each mode runs in short blocks, the modes of one block back to back, in forward
order on even blocks and reversed on odd ones (ABBA), and dozens of blocks are paired.

Each block of each mode runs in a **forked child** that sets its mode up once (instruments, or
not), makes its own pool, warms up and times: a process in the steady state of one mode.
Switching modes inside one process does not give that. ``instrument()``/``uninstrument()`` patch
classes, which invalidates CPython's specialised instructions on them, and measured here the
mode switched to in every block paid several microseconds per query for it, even after a
thousand untimed warm-up queries; two processes of the same mode do not differ that way.

Three numbers come out, each a median with its distribution-free 95% confidence interval:

* the **wall ratio**: the median over blocks of (mode's time per op / plain's), the bar's own
  quantity, paired so that drift cancels;
* the **CPU-derived ratio**: ``1 + median(CPU delta per op) / median(plain wall per op)``. A shim
  adds CPU work in the calling thread and never waits, so its whole cost shows in that thread's
  CPU time, which the server's latency does not move: the same quantity, usually less noisy;
* the **A/A ratio**: plain measured again as a separate mode, which shows what this run can
  resolve at all.

The verdict is the wall ratio's when its interval lies wholly on one side of the bar, else the
CPU-derived ratio's when its interval does (said so); when both straddle the bar the run is
reported as unresolved, and counts as not meeting it (exit status 1).
"""

from __future__ import annotations

import math
import os
import statistics
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AGAIN", "Blocks", "interleave", "report", "require_observed"]

#: The name of the second, separate plain mode (the A/A check).
AGAIN = "plain (again)"

#: ``setup(mode)`` runs in the child: it makes ``mode`` (``AGAIN`` means plain) the only one
#: active, builds what the operation needs and returns ``(loop, close)``: ``loop(n)`` runs n
#: operations, ``close()`` releases what setup made (after the timing).
Setup = Callable[[str], tuple[Callable[[int], None], Callable[[], None]]]

_RESULT = struct.Struct("dd")


@dataclass
class Blocks:
    """Seconds per operation of each mode, block by block (lists of equal length)."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def require_observed(registry: Any, mode: str) -> None:
    """In a block's ``close()``: the instrumented mode must have recorded its operations (a
    benchmark that timed the plain path twice once reported a wrong ratio here)."""
    returns = sum(snap.use_time.count for snap in registry.snapshot())
    if mode == "poolmon" and returns == 0:
        raise RuntimeError("benchmark bug: the instrumented block recorded no return")
    if mode != "poolmon" and returns != 0:
        raise RuntimeError("benchmark bug: a plain block was observed")


def _child(setup: Setup, mode: str, per_block: int, warm: int, out: int) -> None:
    loop, close = setup(mode)
    try:
        loop(warm)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        loop(per_block)
        wall = (time.perf_counter() - wall0) / per_block
        cpu = (time.thread_time() - cpu0) / per_block
    finally:
        close()
    os.write(out, _RESULT.pack(wall, cpu))


def _run_forked(setup: Setup, mode: str, per_block: int, warm: int) -> tuple[float, float]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, leave without running the parent's cleanup
        status = 0
        try:
            os.close(read)
            _child(setup, mode, per_block, warm, write)
        except BaseException:
            import traceback

            traceback.print_exc()
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    try:
        data = b""
        while len(data) < _RESULT.size:
            chunk = os.read(read, _RESULT.size - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    if status != 0 or len(data) != _RESULT.size:
        raise SystemExit(f"benchmark: the {mode!r} block failed (child status {status})")
    wall, cpu = _RESULT.unpack(data)
    return wall, cpu


def interleave(
    modes: Sequence[str], setup: Setup, *, per_block: int, blocks: int, warm: int = 300
) -> Blocks:
    """``blocks`` rounds; in each, one forked child per mode runs ``warm`` untimed operations,
    then ``per_block`` timed ones. The parent must hold no pool or thread the children use."""
    out = Blocks({m: [] for m in modes}, {m: [] for m in modes})
    for index in range(blocks):
        for mode in modes if index % 2 == 0 else tuple(reversed(modes)):
            wall, cpu = _run_forked(setup, mode, per_block, warm)
            out.wall[mode].append(wall)
            out.cpu[mode].append(cpu)
    return out


def _median_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(low, median, high): the median with its distribution-free 95% confidence interval, the
    order statistics the binomial distribution of "values below the median" puts it between."""
    xs = sorted(values)
    n = len(xs)
    # The largest k with P(Binomial(n, 1/2) < k) <= 2.5%: the CI is [x_k, x_(n-k+1)] (1-based).
    k, below = 0, 0.0
    while k < n:
        below += math.comb(n, k) / 2**n
        if below > 0.025:
            break
        k += 1
    low, high = (xs[k - 1], xs[n - k]) if k >= 1 else (xs[0], xs[-1])
    return low, statistics.median(xs), high


def report(title: str, blocks: Blocks, mode: str, bar: float, base: str = "plain") -> bool:
    """Print the ratios of ``mode`` against ``base`` with 95% confidence intervals, and the
    verdict; True when met.

    The verdict is the wall ratio's (the bar's quantity): met when its whole interval is under
    the bar, missed when its whole interval is over it; otherwise the CPU-derived ratio's (the
    same quantity with the server's noise removed) by the same rule; otherwise unresolved."""
    wall_plain = statistics.median(blocks.wall[base])
    ratios = [m / b for m, b in zip(blocks.wall[mode], blocks.wall[base], strict=True)]
    added = [m - b for m, b in zip(blocks.cpu[mode], blocks.cpu[base], strict=True)]
    w_low, wall, w_high = _median_ci(ratios)
    c_low, cpu_added, c_high = _median_ci(added)
    cpu = 1.0 + cpu_added / wall_plain
    print(f"\n{title}: {len(ratios)} interleaved blocks, one forked process per mode and block")
    print(f"  plain {wall_plain * 1e6:.1f} us/op (median block)")
    print(f"  wall ratio {mode}/plain: {wall:.4f} (95% CI {w_low:.4f}-{w_high:.4f})")
    print(
        f"  CPU-derived ratio: {cpu:.4f} (95% CI {1 + c_low / wall_plain:.4f}-"
        f"{1 + c_high / wall_plain:.4f}; {cpu_added * 1e6:+.2f} us of this thread's CPU per op)"
    )
    if AGAIN in blocks.wall:
        again = [a / b for a, b in zip(blocks.wall[AGAIN], blocks.wall[base], strict=True)]
        a_low, a_mid, a_high = _median_ci(again)
        print(
            f"  A/A wall ratio (plain against plain): {a_mid:.4f} (95% CI {a_low:.4f}-{a_high:.4f})"
        )
    cpu_low, cpu_high = 1 + c_low / wall_plain, 1 + c_high / wall_plain
    if w_high <= bar:
        verdict, met = "meets", True
    elif w_low > bar:
        verdict, met = "MISSES", False
    elif cpu_high <= bar:
        verdict, met = "wall ratio unresolved by this run; the CPU-derived one meets it", True
    elif cpu_low > bar:
        verdict, met = "wall ratio unresolved by this run; the CPU-derived one MISSES it", False
    else:
        # Neither interval lies on one side of the bar: this run cannot tell, and says so.
        verdict, met = "UNRESOLVED: both intervals straddle the bar (a noisy machine)", False
    print(f"  bar <= {bar:.2f}: {verdict}")
    return met
