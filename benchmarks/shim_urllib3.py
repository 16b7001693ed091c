"""urllib3 shim overhead: raw _get_conn/_put_conn and HTTP GET on loopback, instrumented / plain.

Bars (DESIGN.md section 8): raw cycle <= 1.25, end-to-end GET <= 1.02. Plain and instrumented runs
alternate round by round on the same pool and the same keep-alive socket (instrument/uninstrument
between rounds), and each case keeps its best round, so a noisy neighbour on a shared machine
hurts both sides alike.

    python -m benchmarks shim_urllib3 [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._timing import print_table

__all__ = ["main"]

Loop = Callable[[int], None]


def _check_observed(n: int) -> None:
    """Guard against timing the plain path twice: the instrumented loop must have been recorded."""
    from poolmon.core.registry import get_default_registry

    borrows = sum(snap.use_time.count for snap in get_default_registry().snapshot())
    if borrows < n:
        raise SystemExit(f"benchmark bug: {n} instrumented cycles but {borrows} recorded returns")


def _alternate(loop: Loop, n: int, rounds: int) -> tuple[float, float, float]:
    """(best plain, best instrumented, median of per-round ratios), seconds per iteration.

    Each round measures plain then instrumented back to back, so the per-round ratio compares
    two runs under the same machine load; the median of those ratios is robust to load bursts.
    """
    from poolmon.shims import urllib3 as shim

    best_plain = best_inst = float("inf")
    ratios: list[float] = []
    for _ in range(rounds):
        pair = []
        for instrumented in (False, True):
            if instrumented:
                shim.instrument()
            else:
                shim.uninstrument()
            loop(max(1, n // 10))  # warm up this configuration
            t = time.perf_counter()
            loop(n)
            pair.append((time.perf_counter() - t) / n)
            if instrumented:
                _check_observed(n)
        best_plain = min(best_plain, pair[0])
        best_inst = min(best_inst, pair[1])
        ratios.append(pair[1] / pair[0])
    shim.uninstrument()
    return best_plain, best_inst, statistics.median(ratios)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shim_urllib3")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from urllib3 import HTTPConnectionPool

    from poolmon.core.registry import PoolRegistry, set_default_registry
    from tests.support.http_servers import LoopbackServer

    set_default_registry(PoolRegistry())
    server = LoopbackServer()
    try:
        pool = HTTPConnectionPool(server.host, server.port, maxsize=1)
        pool.request("GET", "/ok")  # one keep-alive socket, idle in the pool

        def raw(n: int) -> None:
            # Bound here, per round, not once up front: a method bound before instrument() keeps
            # calling the original functions and would time the plain cycle in both modes.
            get_conn, put_conn = pool._get_conn, pool._put_conn
            for _ in range(n):
                put_conn(get_conn())

        def http_get(n: int) -> None:
            request = pool.request
            for _ in range(n):
                request("GET", "/ok")

        raw_n, get_n, rounds = (20_000, 200, 3) if args.quick else (50_000, 300, 21)
        raw = _alternate(raw, raw_n, rounds)
        get = _alternate(http_get, get_n, rounds)
    finally:
        server.close()

    print_table(
        "urllib3 raw _get_conn + _put_conn (one keep-alive connection), best round",
        [("raw cycle, plain", raw[0]), ("raw cycle, instrumented", raw[1])],
        baseline="raw cycle, plain",
    )
    print_table(
        "urllib3 HTTP GET on loopback (keep-alive, 2-byte body), best round",
        [("GET, plain", get[0]), ("GET, instrumented", get[1])],
        baseline="GET, plain",
    )
    added = raw[1] - raw[0]
    print(
        f"\nmedian of paired rounds: raw cycle {raw[2]:.3f} (bar <= 1.25), GET {get[2]:.3f} (bar <= 1.02)"
    )
    print(
        f"shim cost per borrow+return: {added * 1e6:.2f} us, i.e. "
        f"{1 + added / get[0]:.4f} x a {get[0] * 1e6:.0f} us GET"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
