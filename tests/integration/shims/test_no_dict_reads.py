"""No shim reads a library object's ``__dict__`` (see :mod:`poolmon.shims._attrs`).

Reading ``obj.__dict__`` turns CPython's inline attribute values into a real dict for good, and
attribute reads on that object stop being specialised: every ``self.x`` in the library's own
code gets slower (4,000 instructions per redis-py cycle, measured). The objects here are of
subclasses whose ``__dict__`` is a watching property: a read by a ``poolmon`` module is recorded
(and still answered, so the scenario runs on). Each scenario covers borrow, return, a killed or
closed connection, and close, on the real servers.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid
from typing import Any, TypeVar, cast

import aiohttp
import aiohttp.client_proto
import aiohttp.connector
import httpcore
import httpcore._backends.sync
import httpcore._sync.connection
import psycopg
import psycopg_pool
import pytest
import redis
import redis.asyncio
import urllib3
from urllib3.connection import HTTPConnection

import poolmon.shims.aiohttp as aiohttp_shim
import poolmon.shims.httpcore as httpcore_shim
import poolmon.shims.psycopg as psycopg_shim
import poolmon.shims.redis as redis_shim
import poolmon.shims.urllib3 as urllib3_shim
from poolmon.core.registry import PoolRegistry
from tests.support.http_servers import LoopbackServer

pytestmark = pytest.mark.integration

T = TypeVar("T")


class DictReads:
    """Makes watched subclasses; ``readers`` lists each poolmon read as ``module:function``."""

    def __init__(self) -> None:
        self.readers: list[str] = []

    def watched(self, cls: type[T]) -> type[T]:
        real = next(k.__dict__["__dict__"] for k in cls.__mro__ if "__dict__" in k.__dict__)
        readers = self.readers

        def read(obj: object) -> Any:
            caller = sys._getframe(1)
            module = str(caller.f_globals.get("__name__", ""))
            if module.split(".")[0] == "poolmon":
                readers.append(f"{module}:{caller.f_code.co_name}")
            return real.__get__(obj, type(obj))

        # A subclass of cls, so it is a type[T]; type() with three arguments is typed as plain type.
        return cast(type[T], type(f"Watched{cls.__name__}", (cls,), {"__dict__": property(read)}))


@pytest.fixture
def reads() -> DictReads:
    return DictReads()


def test_the_watch_sees_a_poolmon_read(reads: DictReads) -> None:
    """The detector itself: a read from a function of a ``poolmon`` module is recorded."""

    class Plain:
        x: int

    obj = reads.watched(Plain)()
    scope: dict[str, Any] = {"__name__": "poolmon.probe"}
    exec("def peek(o):\n    return vars(o)", scope)  # a function whose module is poolmon's
    obj.x = 1
    assert scope["peek"](obj) == {"x": 1}
    assert vars(obj) == {"x": 1}  # this test module is not poolmon: not recorded
    assert reads.readers == ["poolmon.probe:peek"]


def test_redis_sync(reads: DictReads, registry: PoolRegistry, redis_url: str) -> None:
    assert redis_shim.instrument()
    try:
        pool_cls = reads.watched(redis.ConnectionPool)
        conn_cls = reads.watched(redis.Connection)
        pool = pool_cls.from_url(redis_url, connection_class=conn_cls)
        client = redis.Redis(connection_pool=pool)
        key = f"poolmon-test-{uuid.uuid4().hex}"
        assert client.set(key, b"v") is True
        conn = pool.get_connection()
        assert type(conn) is conn_cls
        conn.disconnect()  # an evict
        pool.release(conn)
        assert client.get(key) == b"v"  # a new socket: a create
        client.delete(key)
        pool.disconnect()
        pool.close()
        (ledger,) = registry.ledgers()
        assert (
            ledger.snapshot().create_time["ok"].count == 2
        )  # the watched objects were instrumented
    finally:
        redis_shim.uninstrument()
    assert reads.readers == []


def test_redis_asyncio(reads: DictReads, registry: PoolRegistry, redis_url: str) -> None:
    async def scenario() -> None:
        pool_cls = reads.watched(redis.asyncio.ConnectionPool)
        conn_cls = reads.watched(redis.asyncio.Connection)
        pool = pool_cls.from_url(redis_url, connection_class=conn_cls)
        client = redis.asyncio.Redis(connection_pool=pool)
        assert await client.ping() is True
        conn = await pool.get_connection()
        await conn.disconnect()
        await pool.release(conn)
        assert await client.ping() is True
        await pool.disconnect()
        await client.aclose()

    assert redis_shim.instrument()
    try:
        asyncio.run(scenario())
        (ledger,) = registry.ledgers()
        assert ledger.snapshot().create_time["ok"].count == 2
    finally:
        redis_shim.uninstrument()
    assert reads.readers == []


def test_psycopg_pool(reads: DictReads, registry: PoolRegistry, pg_dsn: str) -> None:
    assert psycopg_shim.instrument()
    try:
        pool_cls = reads.watched(psycopg_pool.ConnectionPool)
        conn_cls = reads.watched(psycopg.Connection)
        with pool_cls(pg_dsn, min_size=1, max_size=2, connection_class=conn_cls) as pool:
            pool.wait()
            with pool.connection() as conn:
                assert type(conn) is conn_cls
                assert conn.execute("SELECT 1").fetchone() == (1,)
            conn = pool.getconn()
            conn.close()  # returned closed: evicted as broken
            pool.putconn(conn)
            with pool.connection() as conn:
                assert conn.execute("SELECT 2").fetchone() == (2,)
        (ledger,) = registry.ledgers()
        assert ledger.snapshot().create_time["ok"].count >= 2
    finally:
        psycopg_shim.uninstrument()
    assert reads.readers == []


def test_psycopg_async_pool(reads: DictReads, registry: PoolRegistry, pg_dsn: str) -> None:
    async def scenario() -> None:
        pool_cls = reads.watched(psycopg_pool.AsyncConnectionPool)
        conn_cls = reads.watched(psycopg.AsyncConnection)
        async with pool_cls(
            pg_dsn, min_size=1, max_size=2, connection_class=conn_cls, open=False
        ) as pool:
            await pool.wait()
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
            conn = await pool.getconn()
            await conn.close()
            await pool.putconn(conn)

    assert psycopg_shim.instrument()
    try:
        asyncio.run(scenario())
        (ledger,) = registry.ledgers()
        assert ledger.snapshot().create_time["ok"].count >= 1
    finally:
        psycopg_shim.uninstrument()
    assert reads.readers == []


def test_urllib3(reads: DictReads, registry: PoolRegistry) -> None:
    server = LoopbackServer()
    assert urllib3_shim.instrument(registry=registry)
    try:
        conn_cls = reads.watched(HTTPConnection)
        pool_cls = reads.watched(urllib3.HTTPConnectionPool)
        pool_cls.ConnectionCls = conn_cls
        pool = pool_cls(server.host, server.port, maxsize=1)
        assert pool.request("GET", "/ok").data == b"ok"
        assert pool.request("GET", "/close").data == b"closing"  # the server closes: an evict
        assert pool.request("GET", "/ok").data == b"ok"  # a new socket
        pool.close()
        (ledger,) = registry.ledgers()
        assert ledger.snapshot().create_time["ok"].count == 2
    finally:
        urllib3_shim.uninstrument()
        server.close()
    assert reads.readers == []


def test_httpcore(
    reads: DictReads, registry: PoolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's pools: the pool, its connections, their HTTP/1.1 connections and sockets."""
    # httpcore makes these objects itself: its module globals are pointed at watched subclasses
    # (they inherit the shim's wrappers, which are installed on the base classes).
    h11_cls = reads.watched(httpcore._sync.http11.HTTP11Connection)
    stream_cls = reads.watched(httpcore._backends.sync.SyncStream)
    monkeypatch.setattr(httpcore._sync.connection, "HTTP11Connection", h11_cls)
    monkeypatch.setattr(httpcore._backends.sync, "SyncStream", stream_cls)
    conn_cls = reads.watched(httpcore.HTTPConnection)
    base_pool = reads.watched(httpcore.ConnectionPool)

    class Pool(base_pool):  # type: ignore[valid-type,misc]
        def create_connection(self, origin: Any) -> Any:
            conn = super().create_connection(origin)  # the shim's wrapper runs in there
            conn.__class__ = conn_cls
            return conn

    server = LoopbackServer()
    assert httpcore_shim.instrument(registry=registry)
    try:
        pool = Pool(max_connections=1)
        assert pool.request("GET", f"{server.url}/ok").content == b"ok"
        assert pool.request("GET", f"{server.url}/close").content == b"closing"  # an evict
        assert pool.request("GET", f"{server.url}/ok").content == b"ok"  # a new socket
        pool.close()
        (ledger,) = registry.ledgers()
        snap = ledger.snapshot()
        assert (snap.create_time["ok"].count, snap.borrows, snap.closed) == (2, 3, True)
    finally:
        httpcore_shim.uninstrument()
        server.close()
    assert reads.readers == []


def test_aiohttp(reads: DictReads, registry: PoolRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's connector, the Connection it lends and the protocol (one per socket)."""
    monkeypatch.setattr(
        aiohttp.connector, "Connection", reads.watched(aiohttp.connector.Connection)
    )
    proto_cls = reads.watched(aiohttp.client_proto.ResponseHandler)
    connector_cls = reads.watched(aiohttp.TCPConnector)
    server = LoopbackServer()

    async def scenario() -> aiohttp.TCPConnector:
        connector = connector_cls(limit=1)
        # The connector's protocol factory, as its __init__ sets it, with the watched class.
        connector._factory = functools.partial(proto_cls, loop=asyncio.get_running_loop())
        async with aiohttp.ClientSession(connector=connector) as session:
            for path, body in (("/ok", b"ok"), ("/close", b"closing"), ("/ok", b"ok")):
                async with session.get(f"{server.url}{path}") as response:
                    assert await response.read() == body
        return connector  # kept alive: its pools stay in the registry (their owner is weak)

    assert aiohttp_shim.instrument(registry=registry)
    try:
        connector = asyncio.run(scenario())
        (ledger,) = registry.ledgers()
        snap = ledger.snapshot()
        assert (snap.create_time["ok"].count, snap.borrows, snap.closed) == (2, 3, True)
        assert connector.closed
    finally:
        aiohttp_shim.uninstrument()
        server.close()
    assert reads.readers == []
