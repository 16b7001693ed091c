"""redis-py shim, ``redis.asyncio`` pools, against the real Redis on loopback.

Same scenarios as the synchronous suite: exact event sequences, the conformance checker, final
counts. Each test runs its own event loop (``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aredis
from packaging.version import Version

import poolmon.shims.redis as shim
from poolmon.core.registry import PoolRegistry
from tests.support.events import Events

pytestmark = pytest.mark.integration

POOLS = [aredis.ConnectionPool, aredis.BlockingConnectionPool]
#: redis-py 8.2 checks a connection's health again when the asyncio pool lends it (8.0 and 8.1
#: skip that check with RESP3's maintenance notifications on, lending a dead connection).
CHECKS_AT_CHECKOUT = Version(redis.__version__) >= Version("8.2")


@pytest.fixture
def events(registry: PoolRegistry) -> Iterator[Events]:
    assert shim.instrument()
    try:
        yield Events(registry)
    finally:
        shim.uninstrument()


def _name() -> str:
    return f"poolmon-test-{uuid.uuid4().hex[:12]}"


async def _kill_own(redis_url: str, conn: Any) -> None:
    await conn.send_command("CLIENT", "ID")
    client_id = await conn.read_response()
    parts = urlsplit(redis_url)  # a bare sync Connection outside any pool: poolmon ignores it
    admin = redis.Connection(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
    try:
        admin.send_command("CLIENT", "KILL", "ID", client_id)
        assert admin.read_response() == 1
    finally:
        admin.disconnect()


@pytest.mark.parametrize("pool_cls", POOLS, ids=lambda c: c.__name__)
def test_borrow_return(
    events: Events, registry: PoolRegistry, redis_url: str, pool_cls: Any
) -> None:
    async def run() -> None:
        pool = pool_cls.from_url(redis_url, client_name=_name())
        client = aredis.Redis(connection_pool=pool)
        key = f"{_name()}:k"
        assert await client.set(key, b"v") is True
        assert await client.get(key) == b"v"
        await client.delete(key)
        await pool.aclose()

    asyncio.run(run())
    (ledger,) = registry.ledgers()
    assert ledger.name == "redis://127.0.0.1:6379/0"
    assert events.seq() == [
        ("create", 1, "ok"),
        *[("borrow", 1, None), ("return", 1, None)] * 3,
        ("evict", 1, "pool_closed"),
        ("close", None, None),
    ]
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (0, 0, 0)
    assert snap.use_time.count == 3 and snap.evictions["pool_closed"] == 1 and snap.closed
    events.assert_conformant()


def test_exhausted_fail_fast(events: Events, registry: PoolRegistry, redis_url: str) -> None:
    async def run() -> None:
        pool = aredis.ConnectionPool.from_url(redis_url, max_connections=1, client_name=_name())
        held = await pool.get_connection()
        with pytest.raises(redis.exceptions.MaxConnectionsError, match="Too many connections"):
            await pool.get_connection()
        await pool.release(held)
        await pool.disconnect()

    asyncio.run(run())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("error", None, "exhausted"),
        ("return", 1, None),
        ("evict", 1, "pool_closed"),
    ]
    events.assert_conformant()


def test_blocking_waiter(events: Events, registry: PoolRegistry, redis_url: str) -> None:
    async def run() -> None:
        pool = aredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=1, timeout=20, client_name=_name()
        )
        held = await pool.get_connection()
        (ledger,) = registry.ledgers()
        waiter = asyncio.create_task(pool.get_connection())
        while ledger.snapshot().pending == 0:  # the waiter queued (real state, not a sleep)
            await asyncio.sleep(0)
        assert not waiter.done()
        await pool.release(held)
        got = await asyncio.wait_for(waiter, 10)
        assert got is held
        await pool.release(got)
        await pool.aclose()

    asyncio.run(run())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("wait", None, None),
        ("return", 1, None),
        ("borrow", 1, "queued"),
        ("return", 1, None),
        ("evict", 1, "pool_closed"),
        ("close", None, None),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert snap.pending == 0 and snap.wait_time.count == 2
    events.assert_conformant()


def test_blocking_timeout_and_cancel(
    events: Events, registry: PoolRegistry, redis_url: str
) -> None:
    async def run() -> None:
        pool = aredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=1, timeout=0.05, client_name=_name()
        )
        held = await pool.get_connection()
        with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
            await pool.get_connection()
        pool.timeout = None  # now wait forever, and cancel the waiter
        (ledger,) = registry.ledgers()
        waiter = asyncio.create_task(pool.get_connection())
        while ledger.snapshot().pending == 0:
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await pool.release(held)
        await pool.disconnect()

    asyncio.run(run())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("wait", None, None),
        ("error", None, "timeout"),
        ("wait", None, None),
        ("error", None, "cancelled"),
        ("return", 1, None),
        ("evict", 1, "pool_closed"),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert snap.errors["timeout"] == 1 and snap.errors["cancelled"] == 1 and snap.pending == 0
    events.assert_conformant()


@pytest.mark.parametrize("pool_cls", POOLS, ids=lambda c: c.__name__)
def test_server_kills_connection(
    events: Events, registry: PoolRegistry, redis_url: str, pool_cls: Any
) -> None:
    async def run() -> None:
        pool = pool_cls.from_url(redis_url, client_name=_name())
        conn = await pool.get_connection()
        await _kill_own(redis_url, conn)
        # Let the loop see the server's FIN (polling the real reader state, with a deadline).
        deadline = asyncio.get_running_loop().time() + 10
        while not conn._reader.at_eof():
            assert asyncio.get_running_loop().time() < deadline, "the FIN never arrived"
            await asyncio.sleep(0.001)
        await pool.release(conn)
        again = await pool.get_connection()
        assert again is conn  # the same Connection object (on 8.2, on a new socket)
        if CHECKS_AT_CHECKOUT:
            # The pool found the socket dead before lending it, and reconnected it.
            await again.send_command("PING")
            assert await again.read_response() == b"PONG"
        else:
            # Lent out dead: the first command finds it broken (redis-py's behaviour,
            # instrumented or not).
            with pytest.raises(redis.exceptions.ConnectionError):
                await again.send_command("PING")
                await again.read_response()
        await pool.release(again)
        third = await pool.get_connection()
        await third.send_command("PING")
        assert await third.read_response() == b"PONG"
        await pool.release(third)
        await pool.disconnect()

    asyncio.run(run())
    if CHECKS_AT_CHECKOUT:
        expected = [
            ("create", 1, "ok"),
            ("borrow", 1, None),
            ("return", 1, None),
            ("evict", 1, "broken"),  # found dead at the next checkout, before it was lent
            ("create", 2, "ok"),
            ("borrow", 2, None),
            ("return", 2, None),
            ("borrow", 2, None),
            ("return", 2, None),
            ("evict", 2, "pool_closed"),
        ]
    else:
        expected = [
            ("create", 1, "ok"),
            ("borrow", 1, None),
            ("return", 1, None),
            ("borrow", 1, None),
            ("evict", 1, "broken"),  # dropped while lent out: no return follows
            ("create", 2, "ok"),
            ("borrow", 2, None),
            ("return", 2, None),
            ("evict", 2, "pool_closed"),
        ]
    assert events.seq() == expected
    snap = registry.ledgers()[0].snapshot()
    assert snap.evictions["broken"] == 1 and snap.evictions["pool_closed"] == 1
    events.assert_conformant()


@pytest.mark.parametrize("pool_cls", POOLS, ids=lambda c: c.__name__)
def test_pool_close_with_lent_connection(
    events: Events, registry: PoolRegistry, redis_url: str, pool_cls: Any
) -> None:
    async def run() -> None:
        pool = pool_cls.from_url(redis_url, client_name=_name())
        a = await pool.get_connection()
        b = await pool.get_connection()
        await pool.release(a)
        await pool.aclose()
        await pool.release(b)

    asyncio.run(run())
    seq = events.seq()
    assert seq[:5] == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 1, None),
    ]
    assert sorted(seq[5:7]) == [("evict", 1, "pool_closed"), ("evict", 2, "pool_closed")]
    assert seq[7:] == [("close", None, None)]
    snap = registry.ledgers()[0].snapshot()
    assert (snap.idle, snap.used) == (0, 0) and snap.closed
    events.assert_conformant()
