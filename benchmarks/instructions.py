"""Shim cost in instructions and cache misses (callgrind): deterministic, whatever the machine does.

Wall-clock ratios on a shared machine swing by several percent from one run to the next, more
than the two percent an end-to-end bar allows. callgrind counts what the calling thread executes,
and the same binary with the same inputs gives the same count (``PYTHONHASHSEED`` is fixed), so
this is the steady view of what poolmon adds, with callgrind's model of the first-level caches
(32 KB instruction and data): on an end-to-end operation the client thread sleeps on a socket
between requests, and the misses poolmon's extra code and data cause cost about as much time
again as its extra instructions.

Each case runs in ``benchmarks._cg_driver`` under ``valgrind --tool=callgrind`` four times
(plain and instrumented, each at two operation counts); the difference between the two counts
divided by the difference in operations is the cost of one operation, free of start-up and
import costs. Printed per case: instructions per operation plain and instrumented and their
ratio, and the extra first-level misses (instruction, data) per operation.

Where the OpenTelemetry contrib project instruments the same library (httpx, aiohttp:
``benchmarks._cg_driver.PEERS``), a third pair of runs measures it on the same operation, with
the SDK's tracer and meter providers and no exporter, printed as ``peer Ir`` and ``peer ratio``
beside poolmon's.

Needs valgrind and the local PostgreSQL/Redis. ``python -m benchmarks instructions [CASE ...]``
(cases: see ``benchmarks._cg_driver.CASES``; default: all). About 20 s a case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._cg_driver import CASES, PEERS, SIZES

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
#: callgrind's event columns in its summary line, with --cache-sim=yes.
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def _count(mode: str, case: str, n: int) -> dict[str, int]:
    """callgrind's totals for the calling (first) thread of one run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
        cmd = ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--separate-threads=yes"]
        cmd += [f"--callgrind-out-file={out}.%p", sys.executable, "-m", "benchmarks._cg_driver"]
        cmd += [mode, case, str(n)]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{case} ({mode}) failed under callgrind:\n{done.stderr[-2000:]}")
        (first,) = sorted(Path(tmp).glob("cg.out.*-01"))
        for line in first.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return dict(zip(EVENTS, map(int, line.split()[1:]), strict=False))
    raise SystemExit(f"{case} ({mode}): no totals in callgrind's output")


def _per_op(mode: str, case: str, small: int, large: int) -> dict[str, float]:
    a, b = _count(mode, case, small), _count(mode, case, large)
    return {event: (b[event] - a[event]) / (large - small) for event in a}


def main(argv: list[str]) -> int:
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (Debian: apt-get install valgrind)")
        return 2
    unknown = [c for c in argv if c not in CASES]
    if unknown:
        print(f"unknown cases {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    print(
        f"{'case':22s} {'plain Ir':>10s} {'poolmon Ir':>11s} {'ratio':>7s} {'+I1 miss':>9s} "
        f"{'+D1 miss':>9s} {'peer Ir':>10s} {'peer ratio':>10s}  (per operation, calling thread)"
    )
    for case in argv or list(CASES):
        small, large = (500, 1500) if case.endswith(("select", "get")) else (2000, 6000)
        if case in SIZES:
            small, large = SIZES[case][:2]
        plain = _per_op("plain", case, small, large)
        ours = _per_op("poolmon", case, small, large)
        d1 = (ours["D1mr"] + ours["D1mw"]) - (plain["D1mr"] + plain["D1mw"])
        peer_ir, peer_ratio = "-", "-"
        if case in PEERS:
            peer = _per_op("peer", case, small, large)
            peer_ir, peer_ratio = f"{peer['Ir']:.0f}", f"{peer['Ir'] / plain['Ir']:.4f}"
        print(
            f"{case:22s} {plain['Ir']:10.0f} {ours['Ir']:11.0f} {ours['Ir'] / plain['Ir']:7.4f} "
            f"{ours['I1mr'] - plain['I1mr']:+9.0f} {d1:+9.0f} {peer_ir:>10s} {peer_ratio:>10s}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
