"""urllib3 shim overhead: raw _get_conn/_put_conn and HTTP GET on loopback, instrumented / plain.

Bars (DESIGN.md section 8): raw cycle <= 1.25, end-to-end GET <= 1.02. Everything runs on the
same pool and the same keep-alive socket (instrument/uninstrument between runs). The raw cycle
alternates plain and instrumented rounds and keeps each one's best round; the GET runs in
hundreds of short interleaved blocks with an A/A check (benchmarks._paired explains the three
ratios printed). Exit status 1 when a bar is missed.

    python -m benchmarks shim_urllib3 [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._paired import AGAIN, interleave, report, require_observed
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
    from poolmon.shims import urllib3 as shim
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

        raw_n, rounds, blocks = (20_000, 3, 4) if args.quick else (50_000, 21, 30)
        cycle = _alternate(raw, raw_n, rounds)

        pool.close()  # the end-to-end blocks run in forked processes with pools of their own

        def setup(mode: str) -> tuple[Loop, Callable[[], None]]:
            observed = PoolRegistry()
            set_default_registry(observed)
            if mode == "poolmon":
                shim.instrument()
            own = HTTPConnectionPool(server.host, server.port, maxsize=1)

            def get(n: int) -> None:
                request = own.request
                for _ in range(n):
                    request("GET", "/ok")

            def teardown() -> None:
                require_observed(observed, mode)
                own.close()

            return get, teardown

        gets = interleave(("plain", "poolmon", AGAIN), setup, per_block=1000, blocks=blocks)
    finally:
        server.close()

    print_table(
        "urllib3 raw _get_conn + _put_conn (one keep-alive connection), best round",
        [("raw cycle, plain", cycle[0]), ("raw cycle, instrumented", cycle[1])],
        baseline="raw cycle, plain",
    )
    added = cycle[1] - cycle[0]
    raw_met = cycle[2] <= 1.25
    print(
        f"  median of paired rounds: {cycle[2]:.3f} "
        f"(bar <= 1.25: {'meets' if raw_met else 'MISSES'})"
    )
    print(f"  shim cost per borrow+return (best rounds): {added * 1e6:.2f} us")
    get_met = report(
        "urllib3 HTTP GET on loopback (keep-alive, 2-byte body)", gets, "poolmon", 1.02
    )
    return 0 if raw_met and get_met else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
