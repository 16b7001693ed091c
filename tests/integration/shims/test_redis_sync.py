"""redis-py shim, synchronous pools, against the real Redis on loopback.

Each scenario collects the pool's events (registry subscriber), checks the exact sequence, runs
the stream through the conformance checker and checks the final counts. Connections are killed
only by their own ``CLIENT KILL ID``; keys carry a per-test unique prefix.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import poolmon.shims.redis as shim
from poolmon.core.registry import PoolRegistry
from tests.support.events import Events

pytestmark = pytest.mark.integration


@pytest.fixture
def events(registry: PoolRegistry) -> Iterator[Events]:
    assert shim.instrument()
    try:
        yield Events(registry)
    finally:
        shim.uninstrument()


def _name() -> str:
    return f"poolmon-test-{uuid.uuid4().hex[:12]}"


def _kill_own(redis_url: str, conn: Any) -> None:
    """CLIENT KILL ID of exactly this connection (its id asked on the connection itself)."""
    conn.send_command("CLIENT", "ID")
    client_id = conn.read_response()
    # A bare Connection, outside any pool: poolmon records nothing for it.
    parts = urlsplit(redis_url)
    admin = redis.Connection(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
    try:
        admin.send_command("CLIENT", "KILL", "ID", client_id)
        assert admin.read_response() == 1
    finally:
        admin.disconnect()


def _wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


POOLS = [redis.ConnectionPool, redis.BlockingConnectionPool]


@pytest.mark.parametrize("pool_cls", POOLS, ids=lambda c: c.__name__)
def test_borrow_return(
    events: Events, registry: PoolRegistry, redis_url: str, pool_cls: Any
) -> None:
    pool = pool_cls.from_url(redis_url, client_name=_name())
    client = redis.Redis(connection_pool=pool)
    key = f"{_name()}:k"
    assert client.set(key, b"v") is True
    assert client.get(key) == b"v"
    client.delete(key)
    (ledger,) = registry.ledgers()
    assert ledger.name == "redis://127.0.0.1:6379/0"
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("borrow", 1, None),
        ("return", 1, None),
        ("borrow", 1, None),
        ("return", 1, None),
    ]
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (1, 0, 0)
    assert snap.wait_time.count == 3 and snap.use_time.count == 3
    events.assert_conformant()
    pool.disconnect()


def test_exhausted_fail_fast(events: Events, registry: PoolRegistry, redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, max_connections=1, client_name=_name())
    held = pool.get_connection()
    with pytest.raises(redis.exceptions.MaxConnectionsError, match="Too many connections"):
        pool.get_connection()
    pool.release(held)
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("error", None, "exhausted"),
        ("return", 1, None),
    ]
    assert registry.ledgers()[0].snapshot().errors["exhausted"] == 1
    events.assert_conformant()
    pool.disconnect()


def test_blocking_waiter(events: Events, registry: PoolRegistry, redis_url: str) -> None:
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=1, timeout=20, client_name=_name()
    )
    held = pool.get_connection()
    (ledger,) = registry.ledgers()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get_connection()))
    waiter.start()
    # The waiter is really blocked: the ledger counts it pending and it holds nothing yet.
    _wait_until(lambda: ledger.snapshot().pending == 1, "the waiter to queue")
    assert waiter.is_alive() and not got
    pool.release(held)
    waiter.join(10)
    assert got == [held]  # the same connection object, handed over
    pool.release(got[0])
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("wait", None, None),
        ("return", 1, None),
        ("borrow", 1, "queued"),
        ("return", 1, None),
    ]
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (1, 0, 0)
    assert snap.wait_time.count == 2 and snap.wait_time.sum > 0
    events.assert_conformant()
    pool.disconnect()


def test_blocking_timeout(events: Events, registry: PoolRegistry, redis_url: str) -> None:
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=1, timeout=0.05, client_name=_name()
    )
    held = pool.get_connection()
    with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
        pool.get_connection()
    pool.release(held)
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("wait", None, None),
        ("error", None, "timeout"),
        ("return", 1, None),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert snap.errors["timeout"] == 1 and snap.pending == 0
    events.assert_conformant()
    pool.disconnect()


@pytest.mark.parametrize("pool_cls", POOLS, ids=lambda c: c.__name__)
def test_server_kills_connection(
    events: Events, registry: PoolRegistry, redis_url: str, pool_cls: Any
) -> None:
    pool = pool_cls.from_url(redis_url, client_name=_name())
    conn = pool.get_connection()
    _kill_own(redis_url, conn)
    pool.release(conn)
    # The next borrow finds the socket dead, drops it and reconnects: a new physical connection.
    again = pool.get_connection()
    assert again is conn
    again.send_command("PING")
    assert again.read_response() == b"PONG"
    pool.release(again)
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("evict", 1, "broken"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 2, None),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert snap.evictions["broken"] == 1 and (snap.idle, snap.used) == (1, 0)
    assert snap.lifetime.count == 1
    events.assert_conformant()
    pool.disconnect()


@pytest.mark.parametrize("pool_cls", POOLS, ids=lambda c: c.__name__)
def test_pool_close(events: Events, registry: PoolRegistry, redis_url: str, pool_cls: Any) -> None:
    pool = pool_cls.from_url(redis_url, client_name=_name())
    a = pool.get_connection()
    b = pool.get_connection()
    pool.release(a)
    pool.close()  # disconnects idle and lent-out connections alike
    pool.release(b)
    seq = events.seq()
    assert seq[:4] == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("create", 2, "ok"),
        ("borrow", 2, None),
    ]
    assert seq[4] == ("return", 1, None)
    assert sorted(seq[5:7]) == [("evict", 1, "pool_closed"), ("evict", 2, "pool_closed")]
    assert seq[7:] == [("close", None, None)]
    snap = registry.ledgers()[0].snapshot()
    assert snap.evictions["pool_closed"] == 2 and (snap.idle, snap.used) == (0, 0)
    assert snap.closed
    events.assert_conformant()


def test_health_check_validates(events: Events, registry: PoolRegistry, redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(
        redis_url, health_check_interval=1, retry=Retry(NoBackoff(), 1), client_name=_name()
    )
    client = redis.Redis(connection_pool=pool)
    client.ping()
    conn = pool.get_connection()
    conn.next_health_check = 0  # due now, without sleeping
    conn.send_command("PING")
    assert conn.read_response() == b"PONG"
    conn.next_health_check = 0
    _kill_own(redis_url, conn)  # the kill's own commands ran the check once more
    conn.next_health_check = 0
    conn.send_command("PING")  # the due health check finds the socket dead and reconnects
    assert conn.read_response() == b"PONG"
    pool.release(conn)
    kinds = events.seq()
    assert kinds[:3] == [("create", 1, "ok"), ("borrow", 1, None), ("return", 1, None)]
    assert ("validate", 1, "ok") in kinds
    fail = kinds.index(("validate", 1, "error"))
    assert kinds[fail + 1 : fail + 4] == [
        ("evict", 1, "failed_validation"),
        ("create", 2, "ok"),
        ("validate", 2, "ok"),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert snap.validations["error"] == 1 and snap.evictions["failed_validation"] == 1
    events.assert_conformant()
    pool.disconnect()


def test_pool_made_before_instrument(registry: PoolRegistry, redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, client_name=_name())
    client = redis.Redis(connection_pool=pool)
    client.ping()  # one idle, connected connection exists before poolmon
    assert shim.instrument()
    try:
        ev = Events(registry)
        client.ping()
        pool.disconnect()
        # No create (poolmon did not see it open): adopted, then borrowed, returned, evicted.
        seq = ev.seq()
        assert [s[0] for s in seq] == ["borrow", "return", "evict"]
        assert seq[2][2] == "pool_closed"
        snap = registry.ledgers()[0].snapshot()
        assert (snap.idle, snap.used) == (0, 0)
    finally:
        shim.uninstrument()
