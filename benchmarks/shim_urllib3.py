"""urllib3 shim overhead: raw _get_conn/_put_conn and HTTP GET on loopback, instrumented / plain.

Bars (DESIGN.md section 8): raw cycle <= 1.25, end-to-end GET <= 1.02. Plain and instrumented runs
alternate round by round on the same pool and the same keep-alive socket (instrument/uninstrument
between rounds), and each case keeps its best round, so a noisy neighbour on a shared machine
hurts both sides alike.

    python -m benchmarks shim_urllib3 [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._timing import print_table

__all__ = ["main"]

Loop = Callable[[int], None]


def _alternate(cases: dict[str, tuple[Loop, bool]], n: int, rounds: int) -> dict[str, float]:
    """Best seconds per iteration of each case; instrumentation toggled to each case's need."""
    from poolmon.shims import urllib3 as shim

    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, (loop, instrumented) in cases.items():
            if instrumented:
                shim.instrument()
            else:
                shim.uninstrument()
            loop(max(1, n // 10))  # warm up this configuration
            t = time.perf_counter()
            loop(n)
            best[name] = min(best[name], (time.perf_counter() - t) / n)
    shim.uninstrument()
    return best


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
        get_conn, put_conn = pool._get_conn, pool._put_conn

        def raw(n: int) -> None:
            for _ in range(n):
                put_conn(get_conn())

        def http_get(n: int) -> None:
            request = pool.request
            for _ in range(n):
                request("GET", "/ok")

        raw_n, get_n, rounds = (20_000, 300, 3) if args.quick else (200_000, 2_000, 7)
        raw_best = _alternate({"plain": (raw, False), "instrumented": (raw, True)}, raw_n, rounds)
        get_best = _alternate(
            {"plain": (http_get, False), "instrumented": (http_get, True)}, get_n, rounds
        )
    finally:
        server.close()

    r1 = print_table(
        "urllib3 raw _get_conn + _put_conn (one keep-alive connection)",
        [(f"raw cycle, {k}", v) for k, v in raw_best.items()],
        baseline="raw cycle, plain",
    )
    r2 = print_table(
        "urllib3 HTTP GET on loopback (keep-alive, 2-byte body)",
        [(f"GET, {k}", v) for k, v in get_best.items()],
        baseline="GET, plain",
    )
    raw_ratio = r1["raw cycle, instrumented"]
    get_ratio = r2["GET, instrumented"]
    print(f"\nbars: raw cycle {raw_ratio:.3f} (<= 1.25)   HTTP GET {get_ratio:.3f} (<= 1.02)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
