"""poolmon.Pool vs psycopg_pool, SQLAlchemy QueuePool, redis BlockingConnectionPool, LifoQueue.

One run, ratios printed (DESIGN.md section 8):
* single thread, borrow+return per cycle: each peer against poolmon.Pool over the same resource
  (real PostgreSQL / Redis connections, sqlite3, plain objects). Bars: poolmon <= 0.7x
  psycopg_pool and <= 0.4x QueuePool, for poolmon as it runs in production: every event
  recorded into the pool's ledger (counters, histograms, live state: what the exporters read).
  The ``+events`` rows add a subscriber that receives every event *object* (the opt-in JSONL
  log / callback path of DESIGN.md section 2, where each event is built, timestamped and
  delivered under the ledger's lock): printed for information, with no bar.
* contention, 8 threads on 4 connections for a fixed time: throughput and per-thread fairness
  (slowest / fastest thread's cycles). Bars: poolmon's throughput >= every peer's (the bare
  LifoQueue included), and poolmon's fairness >= 0.5.

The contention trade-off. Under the GIL a strict FIFO hand-off costs a thread switch per queued
borrow (the returning thread queues and sleeps, the head waiter must be scheduled), while a
barging pool lets the returning thread take its connection straight back and cycle through its
whole switch interval. Barging pools are fast and unfair: LifoQueue, SQLAlchemy and redis-py
starve threads (fairness near 0 with a hold). poolmon.Pool barges *boundedly*
(``handoff_after``, default 1 ms): once the oldest waiter has waited that long, returns hand
connections straight to it until the backlog is served. The row "strict" is
``handoff_after=0`` (FIFO hand-off always): the fairest and slowest.

Contention cases run in interleaved rounds (each case once per round, so a burst of load from
elsewhere on this noisy machine hits every case alike); printed: the best round's throughput
and the worst round's fairness.

    python -m benchmarks pool [--seconds 1.0] [--rounds 5] [--cycles 5000] [--hold-us 0,50]
"""

from __future__ import annotations

import argparse
import os
import queue
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks._timing import best_of, print_table
from poolmon.core.events import PoolEvent
from poolmon.core.registry import PoolRegistry
from poolmon.pool import BaseFactory, Factory, Pool, SqliteFactory, factory

PG_DSN = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("POOLMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

Cycle = tuple[Callable[[], Any], Callable[[Any], None]]  # (borrow, give back)
STRICT = "poolmon.Pool(object) strict"  # handoff_after=0: FIFO hand-off always
OURS = "poolmon.Pool(object)"
#: Tenants and priority classes on (issue 23): bar <= 1.5x the features-off cycle (OURS).
FEATURED = "poolmon.Pool(object) tenants+prio"


# ---------------------------------------------------------------------- resources


class _PgFactory(BaseFactory[Any]):
    """What psycopg_pool does per cycle: check the transaction status on return."""

    def __init__(self) -> None:
        import psycopg

        self._psycopg = psycopg

    def create(self) -> Any:
        return self._psycopg.connect(PG_DSN, autocommit=True)

    def reset(self, conn: Any) -> None:
        # conn.pgconn, as psycopg_pool reads it: conn.info builds an object per access (~2 us).
        if conn.pgconn.transaction_status != 0:  # TransactionStatus.IDLE
            conn.rollback()

    def is_broken(self, conn: Any) -> bool:
        return bool(conn.pgconn.status != 0)  # ConnStatus.OK


class _RedisFactory(BaseFactory[Any]):
    def create(self) -> Any:
        from redis.connection import Connection, parse_url

        conn = Connection(**parse_url(REDIS_URL))
        conn.connect()
        return conn

    def destroy(self, conn: Any) -> None:
        conn.disconnect()


def _poolmon(
    fac: Factory[Any], registry: PoolRegistry, *, events: bool, **options: Any
) -> tuple[Cycle, Any]:
    pool: Pool[Any] = Pool(fac, min_size=4, max_size=4, eager=True, registry=registry, **options)
    if events:
        pool.ledger.subscribe(_count_event)
    return (pool.getconn, pool.putconn), pool.close


def _featured(registry: PoolRegistry) -> tuple[Cycle, Any]:
    """Every borrow names a tenant (with a quota and a reserve) and a priority class."""
    from poolmon.pool import TenantQuota

    pool: Pool[Any] = Pool(
        factory(object),
        min_size=4,
        max_size=4,
        eager=True,
        registry=registry,
        tenants={"acme": TenantQuota(limit=4, reserve=1), "globex": 2},
        tenant_limit=4,
        priorities=3,
    )

    def borrow() -> Any:
        return pool.getconn(tenant="acme", priority=1)

    return (borrow, pool.putconn), pool.close


_events_seen = [0]


def _count_event(event: PoolEvent) -> None:
    _events_seen[0] += 1  # a minimal subscriber: every event object is built


def _peers(registry: PoolRegistry) -> dict[str, tuple[Cycle, Callable[[], None]]]:
    """name -> (borrow/return pair, closer). Each peer is skipped if its service is absent."""
    out: dict[str, tuple[Cycle, Callable[[], None]]] = {}
    lifo: queue.LifoQueue[object] = queue.LifoQueue()
    for _ in range(4):
        lifo.put(object())
    out["queue.LifoQueue"] = ((lifo.get, lifo.put), lambda: None)
    out["poolmon.Pool(object)"] = _poolmon(factory(object), registry, events=False)
    out["poolmon.Pool(object)+events"] = _poolmon(factory(object), registry, events=True)
    out[STRICT] = _poolmon(factory(object), registry, events=False, handoff_after=0)
    out[FEATURED] = _featured(registry)

    from sqlalchemy.pool import QueuePool

    def sqlite_memory() -> Any:  # SQLAlchemy's creator protocol types the DBAPI connection
        return sqlite3.connect(":memory:", check_same_thread=False)

    qp = QueuePool(sqlite_memory, pool_size=4, max_overflow=0)
    out["sqlalchemy QueuePool(sqlite)"] = ((qp.connect, lambda c: c.close()), qp.dispose)
    path = f"/tmp/poolmon-bench-{os.getpid()}.sqlite"
    out["poolmon.Pool(sqlite)"] = _poolmon(SqliteFactory(path), registry, events=False)
    try:
        from psycopg_pool import ConnectionPool

        pg = ConnectionPool(PG_DSN, min_size=4, max_size=4, kwargs={"autocommit": True})
        pg.wait(10)
        out["psycopg_pool getconn/putconn"] = ((pg.getconn, pg.putconn), pg.close)
        out["poolmon.Pool(psycopg)"] = _poolmon(_PgFactory(), registry, events=False)
        out["poolmon.Pool(psycopg)+events"] = _poolmon(_PgFactory(), registry, events=True)
    except Exception as exc:  # no PostgreSQL here: say so, measure the rest
        print(f"  (PostgreSQL peers skipped: {type(exc).__name__}: {exc})")
    try:
        import redis

        rp = redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=4, timeout=30)
        warm = [rp.get_connection() for _ in range(4)]
        for c in warm:
            rp.release(c)
        out["redis BlockingConnectionPool"] = ((rp.get_connection, rp.release), rp.disconnect)
        out["poolmon.Pool(redis)"] = _poolmon(_RedisFactory(), registry, events=False)
    except Exception as exc:
        print(f"  (Redis peers skipped: {type(exc).__name__}: {exc})")
    return out


# ---------------------------------------------------------------------- measurements


def _single(cycles: dict[str, Cycle], n: int, rounds: int = 9) -> list[tuple[str, float]]:
    """Best seconds per cycle of each case. Rounds interleave the cases, so a burst of load from
    elsewhere on the machine hits every case alike instead of skewing one of them."""
    loops = {name: _loop(cycle) for name, cycle in cycles.items()}
    for run in loops.values():
        run(1000)  # warm up
    best = dict.fromkeys(cycles, float("inf"))
    for _ in range(rounds):
        for name, run in loops.items():
            best[name] = min(best[name], best_of(run, n, repeat=1))
    return list(best.items())


def _loop(cycle: Cycle) -> Callable[[int], None]:
    borrow, give = cycle

    def run(k: int) -> None:
        for _ in range(k):
            give(borrow())

    return run


def _contention(
    cycle: Cycle, seconds: float, hold: float, threads: int = 8
) -> tuple[float, int, int]:
    """(cycles per second, fewest cycles of a thread, most cycles of a thread)."""
    borrow, give = cycle
    counts = [0] * threads
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        barrier.wait()
        n = 0
        while not stop.is_set():
            conn = borrow()
            if hold:
                time.sleep(hold)  # stands for a query: releases the GIL like real I/O
            give(conn)
            n += 1
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    return sum(counts) / elapsed, min(counts), max(counts)


_PAIRS = [
    ("poolmon.Pool(psycopg)", "psycopg_pool getconn/putconn", 0.7),
    ("poolmon.Pool(psycopg)+events", "psycopg_pool getconn/putconn", None),
    ("poolmon.Pool(sqlite)", "sqlalchemy QueuePool(sqlite)", 0.4),
    ("poolmon.Pool(redis)", "redis BlockingConnectionPool", None),
    ("poolmon.Pool(object)", "queue.LifoQueue", None),
    ("poolmon.Pool(object)+events", "queue.LifoQueue", None),
    (FEATURED, OURS, 1.5),
]


def _contended(
    peers: dict[str, Cycle], seconds: float, hold: float, rounds: int
) -> dict[str, tuple[float, float]]:
    """name -> (best round's cycles/s, worst round's slowest/fastest thread), interleaved."""
    rates = {name: 0.0 for name in peers}
    fairness = {name: 1.0 for name in peers}
    for _ in range(rounds):
        for name, cycle in peers.items():
            rate, low, high = _contention(cycle, seconds, hold)
            rates[name] = max(rates[name], rate)
            fairness[name] = min(fairness[name], low / high if high else 0.0)
    return {name: (rates[name], fairness[name]) for name in peers}


def _sleep_ceiling(hold: float, connections: int = 4, samples: int = 200) -> float:
    """Cycles/s no pool can beat when each cycle holds a connection for ``time.sleep(hold)``:
    ``connections`` / the sleep's real duration (median; the OS adds its timer slack)."""
    took = []
    for _ in range(samples):
        t = time.perf_counter()
        time.sleep(hold)
        took.append(time.perf_counter() - t)
    return connections / statistics.median(took)


def _print_contention(results: dict[str, tuple[float, float]], ceiling: float | None) -> None:
    if ceiling is not None:
        # With a hold, the barging pools reach this ceiling: their throughputs then differ by
        # noise only, and what separates them is fairness.
        print(f"  ceiling: 4 connections / the measured sleep = {ceiling:.0f} cycles/s")
    print(f"  {'case':34s} {'cycles/s':>10s} {'min/max thread':>15s} {'of ceiling':>11s}")
    for name, (rate, fair) in results.items():
        share = "" if ceiling is None else f"{rate / ceiling:10.0%}"
        print(f"  {name:34s} {rate:10.0f} {fair:15.2f} {share:>11s}")
    ours, our_fair = results[OURS]
    print(f"  {OURS} / each peer (throughput; bar >= 1):")
    for name, (rate, _) in results.items():
        if not name.startswith("poolmon"):
            ratio = ours / rate
            print(f"    / {name:32s} {ratio:6.2f}  {'ok' if ratio >= 1 else 'MISSED'}")
    print(f"  {OURS} fairness {our_fair:.2f}  bar >= 0.5: {'ok' if our_fair >= 0.5 else 'MISSED'}")
    strict = results.get(STRICT)
    if strict:
        print(f"  {OURS} / strict hand-off: {ours / strict[0]:.2f}x throughput")


def _psycopg_impl() -> str:
    try:
        import psycopg
    except ImportError:
        return "not installed"
    return f"{psycopg.__version__}, psycopg.pq.__impl__ = {psycopg.pq.__impl__!r}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pool")
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=1.0, help="per contention round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved contention rounds")
    parser.add_argument("--hold-us", default="0,50", help="comma list of hold times (us)")
    args = parser.parse_args(argv)
    print(f"  psycopg {_psycopg_impl()}")
    registry = PoolRegistry()
    peers = _peers(registry)
    try:
        rows = _single({name: cycle for name, (cycle, _) in peers.items()}, args.cycles)
        costs = dict(rows)
        print_table("single thread: one borrow+return", rows, baseline="queue.LifoQueue")
        print("\n  poolmon / peer (same resource):")
        for ours, peer, bar in _PAIRS:
            if ours in costs and peer in costs:
                ratio = costs[ours] / costs[peer]
                if bar is not None:
                    verdict = f"  bar <= {bar}: {'ok' if ratio <= bar else 'MISSED'}"
                elif ours.endswith("+events"):
                    verdict = "  (a subscriber gets every event object: opt-in, no bar)"
                else:
                    verdict = ""
                print(f"    {ours:32s} / {peer:30s} {ratio:6.2f}{verdict}")
        for hold_us in (float(h) for h in args.hold_us.split(",")):
            print(
                f"\ncontention: 8 threads x 4 connections, hold {hold_us:g} us,"
                f" best of {args.rounds} x {args.seconds:g}s"
            )
            cycles = {name: cycle for name, (cycle, _) in peers.items()}
            ceiling = _sleep_ceiling(hold_us / 1e6) if hold_us else None
            _print_contention(_contended(cycles, args.seconds, hold_us / 1e6, args.rounds), ceiling)
    finally:
        for _, closer in peers.values():
            closer()
    return 0
