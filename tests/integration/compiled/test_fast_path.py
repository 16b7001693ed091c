"""The compiled fast path (``poolmon._hot``) against real PostgreSQL, Redis and HTTP servers.

The shim scenario suites run on both implementations, but they subscribe to events, which closes
the ledger's hot lane: there the compiled wrappers hand every call to the Python ones. These
tests run the lane-open production configuration (no subscriber) and check that the compiled
path counts exactly what the pure-Python path counts, and that its own failures never reach the
host.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg2
import psycopg2.pool
import psycopg_pool
import pytest
import redis
import urllib3

from poolmon.core.catalog import BUCKETS
from poolmon.core.clock import ManualClock
from poolmon.core.compiled import compiled_module, set_compiled
from poolmon.core.registry import PoolRegistry
from poolmon.core.snapshot import PoolSnapshot
from poolmon.shims import psycopg as psycopg_shim
from poolmon.shims import psycopg2 as psycopg2_shim
from poolmon.shims import redis as redis_shim
from poolmon.shims import urllib3 as urllib3_shim
from tests.conftest import require
from tests.support.http_servers import LoopbackServer

pytestmark = pytest.mark.integration

CYCLES = 40


class SteppingClock(ManualClock):
    """Moves 1 ms at every reading: both implementations read it in the same order, so equal
    bookkeeping gives equal histograms, bucket for bucket."""

    def monotonic(self) -> float:
        with self._lock:
            self._mono += 0.001
            return self._mono


@pytest.fixture
def hot() -> Any:
    module = compiled_module()
    require(module is not None, "poolmon._hot (build it: pip install -e .)")
    return module


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


def _summary(snap: PoolSnapshot) -> tuple[Any, ...]:
    return (
        snap.used,
        snap.idle,
        snap.pending,
        snap.wait_time.counts,
        round(snap.wait_time.sum, 6),
        snap.use_time.counts,
        round(snap.use_time.sum, 6),
        dict(snap.evictions),
        dict(snap.errors),
    )


def _run_psycopg(pg_dsn: str) -> tuple[Any, ...]:
    registry = PoolRegistry(clock=SteppingClock())
    psycopg_shim.instrument(registry)
    try:
        with psycopg_pool.ConnectionPool(pg_dsn, min_size=2, max_size=2, name="fast") as pool:
            pool.wait()
            for _ in range(CYCLES):
                conn = pool.getconn()
                pool.putconn(conn)
            with pool.connection() as conn:
                assert conn.execute("select 1").fetchone() == (1,)
            (ledger,) = registry.ledgers()
            assert ledger.lane.open  # the production configuration: nothing subscribed
            return _summary(ledger.snapshot())
    finally:
        psycopg_shim.uninstrument()


def _run_psycopg_lost(pg_dsn: str) -> tuple[Any, ...]:
    """A borrowed connection the server kills: returned, dropped by the pool, evicted broken."""
    app = f"poolmon-fast-lost-{uuid.uuid4().hex[:8]}"
    registry = PoolRegistry(clock=SteppingClock())
    psycopg_shim.instrument(registry)
    try:
        with psycopg_pool.ConnectionPool(
            pg_dsn, min_size=1, max_size=1, name="fast-lost", kwargs={"application_name": app}
        ) as pool:
            pool.wait()
            conn = pool.getconn()
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute(
                    "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
                    " where application_name = %s",
                    (app,),
                )
            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")
            pool.putconn(conn)
            (ledger,) = registry.ledgers()
            # The pool replaces the lost connection in a worker: wait for its create.
            deadline = time.monotonic() + 10
            while ledger.snapshot().idle != 1:
                assert time.monotonic() < deadline, "the replacement was never created"
                time.sleep(0.005)
            assert ledger.lane.open
            return _summary(ledger.snapshot())
    finally:
        psycopg_shim.uninstrument()


def _run_psycopg2(pg_dsn: str, pool_class: Any) -> tuple[Any, ...]:
    """Every outcome of a psycopg2 return: kept, overflow, the caller's close, a lost server;
    and a refused borrow (exhausted), a foreign connection (refused), a keyed borrow."""
    app = f"poolmon-fast-pg2-{uuid.uuid4().hex[:8]}"
    registry = PoolRegistry(clock=SteppingClock())
    psycopg2_shim.instrument(registry)
    try:
        pool = pool_class(1, 3, pg_dsn, application_name=app)
        try:
            for _ in range(CYCLES):
                pool.putconn(pool.getconn())  # kept
            first, second, third = pool.getconn(), pool.getconn(), pool.getconn()
            with pytest.raises(psycopg2.pool.PoolError):
                pool.getconn()  # exhausted
            pool.putconn(first)  # kept (the pool keeps minconn=1 idle)
            pool.putconn(second)  # overflow: closed
            pool.putconn(third, close=True)  # the caller's close (the Python wrapper's case)
            with pytest.raises(psycopg2.pool.PoolError):
                pool.putconn(psycopg2.connect(pg_dsn))  # not this pool's: refused
            doomed = pool.getconn()
            with psycopg2.connect(pg_dsn) as admin, admin.cursor() as cur:
                admin.autocommit = True
                cur.execute(
                    "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
                    " where application_name = %s",
                    (app,),
                )
            with pytest.raises(psycopg2.OperationalError):
                doomed.cursor().execute("select 1")
            pool.putconn(doomed)  # lost: psycopg2 closes it
            keyed = pool.getconn(key="job")  # a keyed borrow: the Python wrapper
            assert pool.getconn(key="job") is keyed
            pool.putconn(keyed, key="job")
            (ledger,) = registry.ledgers()
            assert ledger.lane.open
            return _summary(ledger.snapshot())
        finally:
            pool.closeall()
    finally:
        psycopg2_shim.uninstrument()


def _run_redis(redis_url: str) -> tuple[Any, ...]:
    registry = PoolRegistry(clock=SteppingClock())
    redis_shim.instrument(registry)
    try:
        pool = redis.ConnectionPool.from_url(redis_url, max_connections=4)
        client = redis.Redis(connection_pool=pool)
        for i in range(CYCLES):
            client.set("poolmon-fast-path", i)
        assert client.get("poolmon-fast-path") == str(CYCLES - 1).encode()
        (ledger,) = registry.ledgers()
        assert ledger.lane.open
        summary = _summary(ledger.snapshot())
        pool.disconnect()
        return summary
    finally:
        redis_shim.uninstrument()


def _run_urllib3(server: LoopbackServer) -> tuple[Any, ...]:
    registry = PoolRegistry(clock=SteppingClock())
    urllib3_shim.instrument(registry)
    try:
        pool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=2)
        for _ in range(CYCLES):
            assert pool.request("GET", "/ok").data == b"ok"
        (ledger,) = registry.ledgers()
        assert ledger.lane.open
        summary = _summary(ledger.snapshot())
        pool.close()
        return summary
    finally:
        urllib3_shim.uninstrument()


def _both(run: Callable[[], tuple[Any, ...]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    try:
        set_compiled(enabled=True)
        compiled = run()
        set_compiled(enabled=False)
        python = run()
    finally:
        set_compiled(enabled=None)
    return compiled, python


def test_psycopg_counts_match_the_python_path(hot: Any, pg_dsn: str) -> None:
    compiled, python = _both(lambda: _run_psycopg(pg_dsn))
    assert compiled == python
    used, idle, pending, waits, _, uses, _, _, _ = compiled
    assert (used, idle, pending) == (0, 2, 0)
    assert sum(waits) == sum(uses) == CYCLES + 1


@pytest.mark.parametrize(
    "pool_class", [psycopg2.pool.SimpleConnectionPool, psycopg2.pool.ThreadedConnectionPool]
)
def test_psycopg2_counts_match_the_python_path(hot: Any, pg_dsn: str, pool_class: Any) -> None:
    compiled, python = _both(lambda: _run_psycopg2(pg_dsn, pool_class))
    assert compiled == python
    used, idle, pending, waits, _, uses, _, evictions, errors = compiled
    assert (used, idle, pending) == (0, 1, 0)
    assert sum(waits) == sum(uses) == CYCLES + 5
    assert {k: v for k, v in evictions.items() if v} == {"overflow": 1, "other": 1, "broken": 1}
    assert {k: v for k, v in errors.items() if v} == {"exhausted": 1}


def test_psycopg_lost_connection_is_evicted_on_both_paths(hot: Any, pg_dsn: str) -> None:
    compiled, python = _both(lambda: _run_psycopg_lost(pg_dsn))
    assert compiled == python
    evictions = compiled[7]
    assert evictions.get("broken") == 1


def test_redis_counts_match_the_python_path(hot: Any, redis_url: str) -> None:
    compiled, python = _both(lambda: _run_redis(redis_url))
    assert compiled == python
    used, idle, pending, waits, _, uses, _, _, _ = compiled
    assert (used, idle, pending) == (0, 1, 0)
    assert sum(waits) == sum(uses) == CYCLES + 1


def test_urllib3_counts_match_the_python_path(hot: Any, server: LoopbackServer) -> None:
    compiled, python = _both(lambda: _run_urllib3(server))
    assert compiled == python
    used, idle, pending, waits, _, uses, _, _, _ = compiled
    assert (used, idle, pending) == (0, 1, 0)
    assert sum(waits) == sum(uses) == CYCLES


def _flaky_clock() -> Callable[[], float]:
    """Every other reading raises: a borrow's reading succeeds, the return's fails (and so on)."""
    readings = itertools.count()

    def now() -> float:
        n = next(readings)
        if n % 2:
            raise RuntimeError("poolmon bug: clock")
        return float(n)

    return now


def _flaky_lane(hot: Any) -> Any:
    return hot.Lane(_flaky_clock(), BUCKETS["wait_time"], BUCKETS["use_time"])


def _swap_psycopg_lane(hot: Any, pool: Any, lane: Any) -> None:
    """Give a tracked pool a new lane everywhere the compiled hooks read one: its tracker, its
    ledger, its link and the tags of its idle connections."""
    tracker = pool._poolmon_tracker
    tracker.lane = tracker.ledger.lane = lane
    pool._poolmon_link = hot.Link(lane, key=tracker, items=pool._pool)
    for conn in pool._pool:
        conn._poolmon_conn = hot.Link(lane, conn._poolmon_conn.cid, key=tracker)


def test_failures_on_the_compiled_path_never_reach_the_host(
    hot: Any, pg_dsn: str, redis_url: str, server: LoopbackServer
) -> None:
    registry = PoolRegistry()
    set_compiled(enabled=True)
    for shim in (psycopg_shim, redis_shim, urllib3_shim):
        shim.instrument(registry)
    try:
        with psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, name="flaky") as pool:
            pool.wait()
            _swap_psycopg_lane(hot, pool, _flaky_lane(hot))
            for _ in range(5):
                with pool.connection() as conn:
                    assert conn.execute("select 1").fetchone() == (1,)
        rpool = redis.ConnectionPool.from_url(redis_url)
        client = redis.Redis(connection_pool=rpool)
        assert client.ping() is True
        rpool._poolmon_ledger.lane = _flaky_lane(hot)  # type: ignore[attr-defined]
        rpool.disconnect()  # a socket's link holds the lane it was opened under: reopen it
        for _ in range(5):
            assert client.ping() is True
        rpool.disconnect()
        hpool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1)
        ledger = next(led for led in registry.ledgers() if led.identity.name.startswith("http"))
        ledger.lane = _flaky_lane(hot)
        for _ in range(5):
            assert hpool.request("GET", "/ok").data == b"ok"
        hpool.close()
    finally:
        for shim in (psycopg_shim, redis_shim, urllib3_shim):
            shim.uninstrument()
        set_compiled(enabled=None)
    errors = registry.self_metrics.snapshot()["poolmon.shim.errors"]
    # Each library's failed readings were absorbed and counted, every call still answered.
    assert errors.get("psycopg", 0) >= 5 and errors.get("redis", 0) >= 5
    assert errors.get("urllib3", 0) >= 4


def test_compiled_wrappers_are_installed_and_removed(hot: Any) -> None:
    set_compiled(enabled=True)
    try:
        assert redis_shim.instrument(PoolRegistry())
        # The generic kinds: borrow, return and the connected-socket skip are compiled.
        for owner, name in HOOKED_REDIS:
            installed = owner.__dict__[name]
            assert isinstance(installed, hot.HotMethod), name
            assert installed.__wrapped__.__name__ == name
    finally:
        redis_shim.uninstrument()
        set_compiled(enabled=None)
    for owner, name in HOOKED_REDIS:
        assert not isinstance(owner.__dict__[name], hot.HotMethod), name


#: The redis-py methods the shim wraps with a compiled hook (BORROW, RELEASE, SKIP_IF_TRUTHY).
HOOKED_REDIS = [
    (redis.ConnectionPool, "get_connection"),
    (redis.ConnectionPool, "release"),
    (redis.BlockingConnectionPool, "release"),
    (redis.connection.AbstractConnection, "connect_check_health"),
]


def test_threads_on_the_compiled_path_lose_no_count(hot: Any, redis_url: str) -> None:
    registry = PoolRegistry()
    set_compiled(enabled=True)
    redis_shim.instrument(registry)
    try:
        pool = redis.ConnectionPool.from_url(redis_url, max_connections=8)
        client = redis.Redis(connection_pool=pool)
        barrier = threading.Barrier(4)

        def work() -> None:
            barrier.wait()
            for _ in range(200):
                client.ping()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        (ledger,) = registry.ledgers()
        snap = ledger.snapshot()
        assert snap.used == 0
        assert sum(snap.use_time.counts) == sum(snap.wait_time.counts) == 800
        pool.disconnect()
    finally:
        redis_shim.uninstrument()
        set_compiled(enabled=None)
