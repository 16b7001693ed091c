"""psycopg_pool and psycopg2.pool shim cost: plain vs instrumented, measured in one run.

Against the real PostgreSQL on loopback (``POOLMON_TEST_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``):

* raw cycle: ``pool.getconn()`` + ``pool.putconn(conn)`` on a warm pool (psycopg_pool
  ``ConnectionPool``; psycopg2 ``ThreadedConnectionPool``);
* end to end: borrow, ``SELECT 1``, fetch, return (psycopg_pool's ``connection()`` context
  manager; psycopg2 getconn/cursor/putconn).

Plain and instrumented rounds of the raw cycle alternate (``instrument()``/``uninstrument()``
between them), timed with ``time.thread_time`` (CPU time of this thread: no I/O, and other
processes taking the CPU away do not count); the headline is the median over rounds of the
paired ratio, the cost of the best rounds alongside. End-to-end cases wait on the server, whose
latency drifts within seconds: they run in hundreds of short interleaved blocks with an A/A
check (:mod:`benchmarks._paired` explains the three ratios printed). The psycopg implementation
in use (``psycopg.pq.__impl__``: python, binary or c) is printed: the pure-Python one makes
every libpq call a ctypes call, which slows both sides. Instrumented means the production
configuration: no event subscriber attached.

Bars (DESIGN.md section 8): instrumented/plain <= 1.25 on the psycopg_pool raw cycle and
<= 1.02 end to end (both libraries). Exit status 1 when a bar is missed.

Usage: python -m benchmarks shim_psycopg [--n N] [--rounds R] [--blocks B]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from benchmarks._paired import AGAIN, interleave, report, require_observed
from benchmarks._timing import print_table

if TYPE_CHECKING:
    from poolmon.core.registry import PoolRegistry

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
    parser.add_argument("--rounds", type=int, default=15, help="alternating raw rounds per mode")
    parser.add_argument(
        "--blocks", type=int, default=30, help="interleaved end-to-end blocks (1000 queries each)"
    )
    args = parser.parse_args(argv)

    import psycopg
    from psycopg2.pool import ThreadedConnectionPool
    from psycopg_pool import ConnectionPool

    from poolmon.core.registry import PoolRegistry
    from poolmon.shims import psycopg as pp_shim
    from poolmon.shims import psycopg2 as pg2_shim

    registry = PoolRegistry()
    pp = ConnectionPool(PG_DSN, min_size=1, max_size=1, open=True, name="bench")
    pp.wait()
    pg2 = ThreadedConnectionPool(1, 1, PG_DSN)
    cpu = time.thread_time
    raw_cases: list[tuple[str, Loop]] = [
        ("psycopg_pool raw getconn/putconn", _pp_raw(pp)),
        ("psycopg2 raw getconn/putconn", _pg2_raw(pg2)),
    ]
    best: dict[tuple[str, str], float] = {}
    per_round: dict[tuple[str, str], list[float]] = {}
    print(f"psycopg {psycopg.__version__}, libpq wrapper implementation: {psycopg.pq.__impl__}")

    def switch(mode: str) -> None:
        if mode == "poolmon":
            pp_shim.instrument(registry)
            pg2_shim.instrument(registry)
        else:
            pp_shim.uninstrument()
            pg2_shim.uninstrument()

    status = 0
    try:
        # Raw cycles do no I/O: timed in this thread's CPU time, plain and instrumented rounds
        # alternating.
        for _ in range(args.rounds):
            for mode in ("plain", "poolmon"):
                switch(mode)
                for name, loop in raw_cases:
                    loop(max(10, args.n // 10))  # warm up (first sight, adoption, caches)
                    start = cpu()
                    loop(args.n)
                    took = (cpu() - start) / args.n
                    key = (name, mode)
                    best[key] = min(best.get(key, float("inf")), took)
                    per_round.setdefault(key, []).append(took)
        switch("plain")
        for name, _ in raw_cases:
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
            extra = (best[(name, "poolmon")] - best[(name, "plain")]) * 1e6
            print(f"  median paired ratio over {args.rounds} rounds: {ratio:.3f}")
            print(f"  poolmon cost per cycle (best rounds): {extra:+.3f} us")
            if name.startswith("psycopg_pool"):  # DESIGN.md section 8 sets no raw bar for psycopg2
                met = ratio <= 1.25
                print(f"  bar <= 1.25: {'meets' if met else 'MISSES'} ({ratio:.3f})")
                status |= 0 if met else 1
    finally:
        switch("plain")
        pp.close()
        pg2.closeall()

    status |= _end_to_end(args.blocks)
    _ledger_alone(registry, args.rounds, args.n)
    return status


def _end_to_end(blocks: int) -> int:
    """End to end: the server's latency drifts; many short interleaved blocks, each mode in a
    forked process of its own (benchmarks._paired says why). No pool is open here now."""
    from psycopg2.pool import ThreadedConnectionPool
    from psycopg_pool import ConnectionPool

    from poolmon.core.registry import PoolRegistry
    from poolmon.shims import psycopg as pp_shim
    from poolmon.shims import psycopg2 as pg2_shim

    def pp_setup(mode: str) -> tuple[Loop, Callable[[], None]]:
        observed = PoolRegistry()
        if mode == "poolmon":
            pp_shim.instrument(observed)
        pool = ConnectionPool(PG_DSN, min_size=1, max_size=1, open=True, name="bench-e2e")
        pool.wait()

        def teardown() -> None:
            require_observed(observed, mode)
            pool.close()

        return _pp_e2e(pool), teardown

    def pg2_setup(mode: str) -> tuple[Loop, Callable[[], None]]:
        observed = PoolRegistry()
        if mode == "poolmon":
            pg2_shim.instrument(observed)
        pool = ThreadedConnectionPool(1, 1, PG_DSN)

        def teardown() -> None:
            require_observed(observed, mode)
            pool.closeall()

        return _pg2_e2e(pool), teardown

    status = 0
    modes = ("plain", "poolmon", AGAIN)
    for name, setup in (
        ("psycopg_pool SELECT 1 (connection())", pp_setup),
        ("psycopg2 SELECT 1", pg2_setup),
    ):
        results = interleave(modes, setup, per_block=1000, blocks=blocks)
        status |= 0 if report(name, results, "poolmon", bar=1.02) else 1
    return status


def _ledger_alone(registry: PoolRegistry, rounds: int, n: int) -> None:
    """Where the cost goes: the recorder's own borrow+return (poolmon.core.ledger) alone."""
    from poolmon.core.identity import PoolIdentity

    ledger = registry.register(PoolIdentity("bench-ledger"))
    now, borrow, release = ledger.now, ledger.borrow, ledger.release
    ledger_best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(n):
            borrow(1, now())
            release(1)
        ledger_best = min(ledger_best, (time.thread_time() - start) / n)
    print(
        f"\nrecorder alone (ledger borrow+release, 3 clock reads): {ledger_best * 1e6:.3f} us/cycle"
    )
