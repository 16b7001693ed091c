"""poolmon.api: tracker calls with no recorder vs an empty function; enabled vs the shims' Python
path.

Two comparisons, measured in one run, round-robin (every round times each case once, the best
round per case counts):

1. **No recorder attached**: a borrow+return pair of tracker calls (``tracker.borrowed(cid,
   None)``, ``tracker.returned(cid)``) against the same two calls of an empty module-level Python
   function with the same signature. The loop's own cost (an empty ``for``) is subtracted from
   both, so the ratio compares the calls alone. Bar: <= 1.5.
2. **poolmon enabled** (``poolmon.instrument("api")``, pure-Python ledger lane, as the shims'
   Python path runs): the same pair, now bound straight to the ledger, against what the psycopg2
   shim's pure-Python wrappers add to a real ``SimpleConnectionPool`` getconn/putconn cycle
   (instrumented minus plain, PostgreSQL from ``POOLMON_TEST_PG_DSN``). Bar: <= 1.0. Without a
   reachable PostgreSQL the second comparison is skipped (said so, exit status 0).

Usage: python -m benchmarks api [--n N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from benchmarks._timing import best_of, print_table

__all__ = ["main"]

PG_DSN = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _empty(conn: int, t0: float | None = None, *, queued: bool = False) -> None:
    return None


def _empty1(conn: int) -> None:
    return None


def _loop_case() -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            pass

    return run


def _empty_case() -> Callable[[int], None]:
    def run(n: int) -> None:
        borrowed, returned = _empty, _empty1
        for _ in range(n):
            borrowed(1, None)
            returned(1)

    return run


def _tracker_case(name: str) -> Callable[[int], None]:
    from poolmon import api

    tracker = api.register(name, max=4)
    cid = tracker.created(tracker.now())

    def run(n: int) -> None:
        t = tracker
        for _ in range(n):
            t.borrowed(cid, None)
            t.returned(cid)

    run.tracker = tracker  # type: ignore[attr-defined]  # keep it alive with the case
    return run


def _psycopg2_cases() -> tuple[Callable[[int], None], Callable[[int], None]] | str:
    try:
        import psycopg2
        from psycopg2 import pool as pg_pool
    except ImportError:
        return "psycopg2 is not installed"
    try:
        psycopg2.connect(PG_DSN, application_name="poolmon-bench-api").close()
    except Exception as exc:
        return f"PostgreSQL unreachable ({type(exc).__name__})"
    from poolmon.core.registry import PoolRegistry
    from poolmon.shims import psycopg2 as shim

    plain_pool = pg_pool.SimpleConnectionPool(1, 2, PG_DSN, application_name="poolmon-bench-api")
    shim.instrument(registry=PoolRegistry())
    shimmed_pool = pg_pool.SimpleConnectionPool(1, 2, PG_DSN, application_name="poolmon-bench-api")

    def cycle(pool: pg_pool.SimpleConnectionPool) -> Callable[[int], None]:
        def run(n: int) -> None:
            getconn, putconn = pool.getconn, pool.putconn
            for _ in range(n):
                putconn(getconn())

        return run

    # The class is patched for both pools: time the plain one with the shim off, in the loop.
    def plain(n: int) -> None:
        shim.uninstrument()
        try:
            cycle(plain_pool)(n)
        finally:
            shim.instrument(registry=PoolRegistry())

    return plain, cycle(shimmed_pool)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks api")
    parser.add_argument("--n", type=int, default=200_000, help="pairs per timed run")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best counts")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be >= 1")
    from poolmon import api
    from poolmon.core.compiled import set_compiled
    from poolmon.core.registry import PoolRegistry
    from poolmon.shims import api as api_shim

    if api.attached() is not None:
        api.detach()
    set_compiled(enabled=False)  # the shims' Python path: ledgers and wrappers made from now on
    silent = _tracker_case("bench-silent")
    loop = _loop_case()
    empty = _empty_case()
    cases: list[tuple[str, Callable[[int], None], int]] = [
        ("empty loop", loop, args.n),
        ("empty function pair", empty, args.n),
        ("api pair, no recorder", silent, args.n),
    ]
    best = {name: float("inf") for name, _, _ in cases}
    for _ in range(args.repeat):
        for name, fn, n in cases:
            best[name] = min(best[name], best_of(fn, n, repeat=1))
    rows = [(name, best[name]) for name, _, _ in cases]
    print_table(
        "no recorder attached: per borrow+return pair", rows, baseline="empty function pair"
    )
    base = best["empty loop"]
    ratio = (best["api pair, no recorder"] - base) / (best["empty function pair"] - base)
    print(f"\nbar: api pair / empty function pair, loop subtracted = {ratio:.2f} (<= 1.50)")
    status = 0 if ratio <= 1.5 else 1

    api_shim.instrument(registry=PoolRegistry())
    try:
        enabled = _tracker_case("bench-enabled")
        assert enabled.tracker.observed  # type: ignore[attr-defined]
        pg = _psycopg2_cases()
        cases = [("api pair, poolmon enabled (pure Python)", enabled, args.n)]
        if isinstance(pg, str):
            print(f"\nshim comparison skipped: {pg}")
        else:
            plain, shimmed = pg
            m = max(args.n // 20, 1)
            cases += [("psycopg2 getconn/putconn plain", plain, m)]
            cases += [("psycopg2 getconn/putconn + shim (pure Python)", shimmed, m)]
        best = {name: float("inf") for name, _, _ in cases}
        for _ in range(args.repeat):
            for name, fn, n in cases:
                best[name] = min(best[name], best_of(fn, n, repeat=1))
        if not isinstance(pg, str):
            added = (
                best["psycopg2 getconn/putconn + shim (pure Python)"]
                - best["psycopg2 getconn/putconn plain"]
            )
            rows = [(name, best[name]) for name, _, _ in cases]
            rows.append(("psycopg2 shim's added cost (shim - plain)", added))
            print_table(
                "poolmon enabled: per borrow+return pair",
                rows,
                baseline="psycopg2 shim's added cost (shim - plain)",
            )
            ratio2 = best["api pair, poolmon enabled (pure Python)"] / added
            print(f"\nbar: api pair enabled / psycopg2 shim's Python path = {ratio2:.2f} (<= 1.00)")
            status |= 0 if ratio2 <= 1.0 else 1
        else:
            us = best["api pair, poolmon enabled (pure Python)"] * 1e6
            print(f"  api pair, poolmon enabled (pure Python): {us:.3f} us")
    finally:
        api_shim.uninstrument()
        from poolmon.shims import psycopg2 as shim

        shim.uninstrument()
        set_compiled(enabled=None)
    return status


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
