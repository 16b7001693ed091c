"""psycopg_pool and psycopg2.pool shim cost: plain vs instrumented, measured in one run.

Against the real PostgreSQL on loopback (``POOLMON_TEST_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``):

* raw cycle: ``pool.getconn()`` + ``pool.putconn(conn)`` on a warm pool (psycopg_pool
  ``ConnectionPool``; psycopg2 ``ThreadedConnectionPool``);
* end to end: borrow, ``SELECT 1``, fetch, return (psycopg_pool's ``connection()`` context
  manager; psycopg2 getconn/cursor/putconn).

Plain and instrumented rounds alternate (``instrument()``/``uninstrument()`` between them), so
drift on this shared machine hits both alike; end-to-end cases run in 4x as many short rounds, in
ABBA order, because the server's latency drifts within seconds. The headline is the median over rounds of the
paired ratio (instrumented / plain of the same round); the ratio of the best rounds is printed
alongside. The psycopg implementation in use (``psycopg.pq.__impl__``: python, binary or c) is
printed: the pure-Python one makes every libpq call a ctypes call, which slows both sides. Raw cycles do no
I/O and are timed with ``time.thread_time`` (CPU time of this thread), so that other processes
on the machine taking the CPU away do not count; end-to-end cases wait on the server and are
timed with the wall clock. Instrumented means
the production configuration: no event subscriber attached.

Bars (DESIGN.md section 8): instrumented/plain <= 1.25 on the psycopg_pool raw cycle and
<= 1.02 end to end.

Usage: python -m benchmarks shim_psycopg [--n N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks._timing import print_table

__all__ = ["main"]

PG_DSN = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
Loop = Callable[[int], None]


def _pp_raw(pool: Any) -> Loop:
    def run(n: int) -> None:
        get, put = pool.getconn, pool.putconn
        for _ in range(n):
            put(get())

    return run


def _pp_e2e(pool: Any) -> Loop:
    def run(n: int) -> None:
        for _ in range(n):
            with pool.connection() as conn:
                conn.execute("select 1").fetchone()

    return run


def _pg2_raw(pool: Any) -> Loop:
    def run(n: int) -> None:
        get, put = pool.getconn, pool.putconn
        for _ in range(n):
            put(get())

    return run


def _pg2_e2e(pool: Any) -> Loop:
    def run(n: int) -> None:
        for _ in range(n):
            conn = pool.getconn()
            with conn.cursor() as cur:
                cur.execute("select 1")
                cur.fetchone()
            pool.putconn(conn)

    return run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shim_psycopg")
    parser.add_argument("--n", type=int, default=20000, help="raw cycles per round")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per mode")
    args = parser.parse_args(argv)

    import psycopg
    from psycopg2.pool import ThreadedConnectionPool
    from psycopg_pool import ConnectionPool

    from poolmon.core.identity import PoolIdentity
    from poolmon.core.registry import PoolRegistry
    from poolmon.shims import psycopg as pp_shim
    from poolmon.shims import psycopg2 as pg2_shim

    registry = PoolRegistry()
    pp = ConnectionPool(PG_DSN, min_size=1, max_size=1, open=True, name="bench")
    pp.wait()
    pg2 = ThreadedConnectionPool(1, 1, PG_DSN)
    e2e_n = max(200, args.n // 20)
    cpu, wall = time.thread_time, time.perf_counter
    cases: list[tuple[str, Loop, int, Callable[[], float]]] = [
        ("psycopg_pool raw getconn/putconn", _pp_raw(pp), args.n, cpu),
        ("psycopg_pool SELECT 1 (connection())", _pp_e2e(pp), e2e_n, wall),
        ("psycopg2 raw getconn/putconn", _pg2_raw(pg2), args.n, cpu),
        ("psycopg2 SELECT 1", _pg2_e2e(pg2), e2e_n, wall),
    ]
    best: dict[tuple[str, str], float] = {}
    per_round: dict[tuple[str, str], list[float]] = {}
    print(f"psycopg {psycopg.__version__}, libpq wrapper implementation: {psycopg.pq.__impl__}")

    def measure(mode: str, selected: list[tuple[str, Loop, int, Callable[[], float]]]) -> None:
        if mode == "poolmon":
            pp_shim.instrument(registry)
            pg2_shim.instrument(registry)
        try:
            for name, loop, n, clock in selected:
                loop(max(10, n // 10))  # warm up (first sight, adoption, caches)
                start = clock()
                loop(n)
                took = (clock() - start) / n
                key = (name, mode)
                best[key] = min(best.get(key, float("inf")), took)
                per_round.setdefault(key, []).append(took)
        finally:
            pp_shim.uninstrument()
            pg2_shim.uninstrument()

    raw = [case for case in cases if case[3] is cpu]
    # End-to-end cases wait on the server, whose latency drifts by 2x within seconds here: they
    # run in many short blocks, plain and instrumented back to back in ABBA order, so each pair
    # of blocks sees the same server weather.
    e2e = [(name, loop, max(50, n // 10), clock) for name, loop, n, clock in cases if clock is wall]
    try:
        for _ in range(args.rounds):
            for mode in ("plain", "poolmon"):
                measure(mode, raw)
        for i in range(args.rounds * 4):
            for mode in ("plain", "poolmon") if i % 2 == 0 else ("poolmon", "plain"):
                measure(mode, e2e)
    finally:
        pp_shim.uninstrument()
        pg2_shim.uninstrument()
        pp.close()
        pg2.closeall()

    # Where the cost goes: the recorder's own borrow+return (poolmon.core.ledger) alone.
    ledger = registry.register(PoolIdentity("bench-ledger"))
    now, borrow, release = ledger.now, ledger.borrow, ledger.release
    ledger_best = float("inf")
    for _ in range(args.rounds):
        start = time.thread_time()
        for _ in range(args.n):
            borrow(1, now(), False)
            release(1)
        ledger_best = min(ledger_best, (time.thread_time() - start) / args.n)
    print(
        f"\nrecorder alone (ledger borrow+release, 3 clock reads): {ledger_best * 1e6:.3f} us/cycle"
    )

    status = 0
    bars = {
        "psycopg_pool raw getconn/putconn": 1.25,
        "psycopg_pool SELECT 1 (connection())": 1.02,
    }
    for name, _, _, _ in cases:
        rows = [
            (f"{name} [plain]", best[(name, "plain")]),
            (f"{name} [poolmon]", best[(name, "poolmon")]),
        ]
        print_table(name, rows, baseline=f"{name} [plain]")
        ratio = statistics.median(
            ours / plain
            for ours, plain in zip(
                per_round[(name, "poolmon")], per_round[(name, "plain")], strict=True
            )
        )
        pairs = len(per_round[(name, "plain")])
        print(f"  median paired ratio over {pairs} rounds: {ratio:.3f}")
        bar = bars.get(name)
        if bar is not None:
            verdict = "meets" if ratio <= bar else "MISSES"
            print(f"  bar <= {bar:.2f}: {verdict} ({ratio:.3f})")
            print(
                f"  poolmon cost per op: {(best[(name, 'poolmon')] - best[(name, 'plain')]) * 1e6:.3f} us"
            )
    return status
