"""asyncpg shim against the real PostgreSQL on loopback.

Each scenario collects the pool's events, checks the exact sequence, runs the stream through the
conformance checker and checks the final counts. Backends are killed only by their own pid and
this test's unique ``application_name``. (The asyncpg shim has no compiled hook; the directory's
``implementation`` fixture still runs each test on both ledger lanes.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest

import poolmon
import poolmon.shims.asyncpg as shim
from poolmon.core.registry import PoolRegistry
from tests.support.events import Events

pytestmark = pytest.mark.integration

SECRET = "pm-i17-apg-Sekr3t"


@pytest.fixture
def events(registry: PoolRegistry) -> Iterator[Events]:
    assert shim.instrument()
    try:
        yield Events(registry)
    finally:
        shim.uninstrument()


def _app() -> str:
    return f"poolmon-apg-{uuid.uuid4().hex[:12]}"


async def _pool(pg_dsn: str, app: str, **kw: Any) -> asyncpg.Pool:
    kw.setdefault("min_size", 1)
    kw.setdefault("max_size", 1)
    return await asyncpg.create_pool(pg_dsn, server_settings={"application_name": app}, **kw)


def _kill(pg_dsn: str, pid: int, app: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = %s AND application_name = %s",
            (pid, app),
        ).fetchone()
        assert row == (True,)


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def test_borrow_return_shortcuts(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    async def main() -> None:
        pool = await _pool(pg_dsn, _app())
        assert await pool.fetchval("SELECT 1") == 1
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT 2") == 2
        con = await pool.acquire()
        await pool.release(con)
        await pool.execute("SELECT 3")
        await pool.close()

    asyncio.run(main())
    parts = urlsplit(pg_dsn)
    (ledger,) = registry.ledgers()
    assert ledger.name == f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"
    assert events.seq() == [
        ("create", 1, "ok"),
        *[("borrow", 1, None), ("return", 1, None)] * 4,
        ("evict", 1, "pool_closed"),
        ("close", None, None),
    ]
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending, snap.max, snap.min) == (0, 0, 0, 1, 1)
    assert snap.closed and snap.identity.library == "asyncpg"
    events.assert_conformant()


def test_timeout_cancel_and_waiter(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    async def main() -> None:
        pool = await _pool(pg_dsn, _app())
        (ledger,) = registry.ledgers()
        held = await pool.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await pool.acquire(timeout=0.01)
        waiting = asyncio.ensure_future(pool.acquire())
        await _until(lambda: ledger.snapshot().pending == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert ledger.snapshot().pending == 0  # the cancelled waiter left nothing pending
        waiter = asyncio.ensure_future(pool.acquire())
        await _until(lambda: ledger.snapshot().pending == 1)
        await pool.release(held)
        got = await waiter
        await pool.release(got)
        await pool.close()

    asyncio.run(main())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("wait", None, None),
        ("error", None, "timeout"),
        ("wait", None, None),
        ("error", None, "cancelled"),
        ("wait", None, None),
        ("return", 1, None),
        ("borrow", 1, "queued"),
        ("return", 1, None),
        ("evict", 1, "pool_closed"),
        ("close", None, None),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert (snap.pending, snap.errors["timeout"], snap.errors["cancelled"]) == (0, 1, 1)
    events.assert_conformant()


def test_max_queries_is_max_uses(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    async def main() -> None:
        pool = await _pool(pg_dsn, _app(), min_size=0, max_queries=1)
        await pool.fetchval("SELECT 1")
        await pool.fetchval("SELECT 1")
        await pool.close()

    asyncio.run(main())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("evict", 1, "max_uses"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 2, None),
        ("evict", 2, "max_uses"),
        ("close", None, None),
    ]
    assert registry.ledgers()[0].snapshot().evictions["max_uses"] == 2
    events.assert_conformant()


def test_idle_timeout(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    async def main() -> None:
        pool = await _pool(pg_dsn, _app(), min_size=0, max_inactive_connection_lifetime=3600)
        (ledger,) = registry.ledgers()
        await pool.fetchval("SELECT 1")
        # The inactivity timer asyncio scheduled, fired now rather than in an hour.
        (holder,) = [h for h in pool._holders if h._con is not None]
        holder._inactive_callback.cancel()
        holder._inactive_callback = None
        holder._deactivate_inactive_connection()
        await _until(lambda: ledger.snapshot().idle == 0)
        await pool.close()

    asyncio.run(main())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("evict", 1, "idle_timeout"),
        ("close", None, None),
    ]
    events.assert_conformant()


def test_killed_mid_checkout_and_idle(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    app = _app()

    async def main() -> None:
        # min_size=0: no background refill racing the next acquire for the holder.
        pool = await _pool(pg_dsn, app, min_size=0)
        async with pool.acquire() as con:
            pid = await con.fetchval("SELECT pg_backend_pid()")
            _kill(pg_dsn, pid, app)
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await con.fetchval("SELECT 1")
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        _kill(pg_dsn, pid, app)  # killed while idle in the pool
        (holder,) = pool._holders
        idle_con = holder._con
        await _until(idle_con.is_closed)  # the loop has seen the server close it
        # asyncpg notices a dead idle connection when it next hands it out: evicted there.
        assert await pool.fetchval("SELECT 1") == 1
        await pool.close()

    asyncio.run(main())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("evict", 1, "broken"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 2, None),
        ("evict", 2, "broken"),
        ("create", 3, "ok"),
        ("borrow", 3, None),
        ("return", 3, None),
        ("evict", 3, "pool_closed"),
        ("close", None, None),
    ]
    events.assert_conformant()


def test_reset_failed_and_terminate(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    async def reset(con: Any) -> None:
        raise RuntimeError("reset refused")

    async def main() -> None:
        pool = await _pool(pg_dsn, _app(), reset=reset, min_size=0, max_size=2)
        with pytest.raises(RuntimeError, match="reset refused"):
            await pool.fetchval("SELECT 1")
        pool.terminate()

    asyncio.run(main())
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("evict", 1, "reset_failed"),
        ("close", None, None),
    ]
    events.assert_conformant()


def test_many_tasks_exact(registry: PoolRegistry, pg_dsn: str) -> None:
    assert shim.instrument()
    tasks, cycles = 12, 25

    async def main() -> None:
        pool = await _pool(pg_dsn, _app(), min_size=0, max_size=3)
        (ledger,) = registry.ledgers()

        async def work() -> None:
            for _ in range(cycles):
                await pool.fetchval("SELECT 1")

        await asyncio.gather(*(work() for _ in range(tasks)))
        snap = ledger.snapshot()
        assert snap.wait_time.count == tasks * cycles
        assert snap.use_time.count == tasks * cycles
        assert (snap.used, snap.pending) == (0, 0)
        assert snap.idle == pool.get_idle_size() == snap.create_time["ok"].count
        await pool.close()
        assert ledger.snapshot().evictions["pool_closed"] == snap.idle

    try:
        asyncio.run(main())
    finally:
        shim.uninstrument()


def test_credentials_never_reach_output(
    events: Events, registry: PoolRegistry, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg_dsn)
    dsn = f"postgresql://nobody:{SECRET}@{parts.hostname}:{parts.port or 5432}/poolmon_no_such_db"
    caplog.set_level(logging.DEBUG, logger="poolmon")

    async def main() -> None:
        for kwargs in ({"dsn": dsn}, {"dsn": dsn.replace(SECRET, "x"), "password": SECRET}):
            with pytest.raises((asyncpg.PostgresError, OSError)):
                await asyncpg.create_pool(min_size=1, max_size=1, **kwargs)

    asyncio.run(main())
    text = repr(events.items) + caplog.text
    text += repr([ledger.snapshot() for ledger in registry.ledgers()])
    assert SECRET not in text
    assert sum(1 for e in events.items if e.get("outcome") == "error") == 2


def test_instrument_twice_and_exact_restore(registry: PoolRegistry) -> None:
    import asyncpg.connection as connection
    import asyncpg.pool as apool

    names = {
        apool.Pool: ("_initialize", "_acquire", "_get_new_connection", "close", "terminate"),
        apool.PoolConnectionHolder: ("_deactivate_inactive_connection",),
        connection.Connection: ("_set_proxy", "_cleanup"),
    }
    before = {(c, n): vars(c)[n] for c, ns in names.items() for n in ns}
    assert poolmon.instrument("asyncpg") == ["asyncpg"]
    patched = {k: vars(k[0])[k[1]] for k in before}
    assert all(patched[k] is not before[k] for k in before)
    assert shim.instrument() and {k: vars(k[0])[k[1]] for k in before} == patched
    poolmon.uninstrument("asyncpg")
    assert all(vars(k[0])[k[1]] is before[k] for k in before)
