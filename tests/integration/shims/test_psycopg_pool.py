"""psycopg_pool shim against a real PostgreSQL: exact event sequences, final counts, conformance.

Every pool uses a unique ``application_name`` so that killing "its" backends never touches a
colleague's connections. Expiry is driven through the pool's own mechanisms (``max_lifetime=0``,
its ``_shrink_pool`` maintenance hook), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import (
    AsyncConnectionPool,
    AsyncNullConnectionPool,
    ConnectionPool,
    NullConnectionPool,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
)

from poolmon.conformance import validate_stream
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import CallbackSink
from poolmon.shims import psycopg as shim
from poolmon.shims._psycopg_common import TRACKER_ATTR

Event = dict[str, Any]


@pytest.fixture
def events(registry: PoolRegistry) -> list[Event]:
    out: list[Event] = []
    registry.subscribe(CallbackSink(out.append))
    return out


@pytest.fixture
def instrumented(registry: PoolRegistry) -> Iterator[None]:
    assert shim.instrument(registry)
    try:
        yield
    finally:
        shim.uninstrument()


@pytest.fixture
def app() -> str:
    return f"poolmon-test-{uuid.uuid4().hex[:10]}"


def make(cls: type[Any], dsn: str, app: str, **kw: Any) -> Any:
    null = cls in (NullConnectionPool, AsyncNullConnectionPool)
    kw.setdefault("min_size", 0 if null else 1)
    kw.setdefault("max_size", 1)
    return cls(dsn, open=False, kwargs={"application_name": app}, **kw)


def ready(pool: Any) -> Any:
    """Wait for a regular pool's min_size connections (a null pool has none to wait for)."""
    if isinstance(pool, ConnectionPool) and not isinstance(pool, NullConnectionPool):
        pool.wait()
    return pool


def ledger_of(pool: Any) -> PoolLedger:
    ledger: PoolLedger = pool.__dict__[TRACKER_ATTR].ledger
    return ledger


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll real state until ``cond`` holds (no sleep stands in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.005)


def kill_backends(dsn: str, app: str) -> int:
    """Terminate only the backends of this test's pool (unique application_name); wait for it."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "select count(pg_terminate_backend(pid, 5000)) from pg_stat_activity "
            "where application_name = %s",
            (app,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def seq(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events as compact tuples: kind, conn, and the reason / error type / queued flag."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        kind = e["kind"]
        if kind in ("open", "close"):
            out.append((kind,))
        elif kind == "wait":
            out.append(("wait", e["pending"]))
        elif kind == "borrow":
            out.append(("borrow", e["conn"], bool(e.get("queued"))))
        elif kind == "evict":
            out.append(("evict", e["conn"], e["reason"]))
        elif kind == "error":
            out.append(("error", e["error_type"], e["phase"]))
        elif kind == "validate":
            out.append(("validate", e["conn"], e["outcome"]))
        else:
            out.append((kind, e.get("conn")))
    return out


def per_conn(events: list[Event]) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for item, e in zip(seq(events), events, strict=True):
        if e.get("conn") is not None and e["kind"] != "error":
            out.setdefault(e["conn"], []).append(item)
    return out


def assert_conformant(events: list[Event]) -> None:
    problems = validate_stream([json.dumps(e) for e in events])
    assert problems == [], problems


def assert_settled(pool: Any, **expected: int) -> None:
    snap = ledger_of(pool).snapshot()
    assert (snap.used, snap.pending) == (0, 0)
    for key, value in expected.items():
        got = snap.evictions.get(key, snap.errors.get(key))
        assert got == value, (key, got, value)


SYNC = [ConnectionPool, NullConnectionPool]


def _return_reason(cls: type[Any]) -> str:
    # A null pool keeps no idle connection: every return nobody waits for closes it.
    return "overflow" if cls in (NullConnectionPool, AsyncNullConnectionPool) else "pool_closed"


# --------------------------------------------------------------------------- sync scenarios


@pytest.mark.parametrize("cls", SYNC)
def test_normal_borrow_return(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    with make(cls, pg_dsn, app) as pool, ready(pool).connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("return", 1),
        ("evict", 1, _return_reason(cls)),
        ("close",),
    ]
    assert_conformant(events)
    snap = ledger_of(pool).snapshot()
    assert (snap.idle, snap.used, snap.closed) == (0, 0, True)
    assert snap.create_time["ok"].count == 1
    assert snap.wait_time.count == 1 and snap.use_time.count == 1


@pytest.mark.parametrize("cls", SYNC)
def test_exhaustion_with_a_waiting_caller(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    with make(cls, pg_dsn, app) as pool:
        held = ready(pool).getconn()
        results: list[Any] = []

        def waiter() -> None:
            with pool.connection(timeout=10) as conn:
                results.append(conn.execute("select 2").fetchone())

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: ledger_of(pool).snapshot().pending == 1)
        pool.putconn(held)
        thread.join(10)
        assert results == [(2,)]
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("wait", 1),
        ("return", 1),
        ("borrow", 1, True),
        ("return", 1),
        ("evict", 1, _return_reason(cls)),
        ("close",),
    ]
    assert_conformant(events)
    assert_settled(pool)


@pytest.mark.parametrize("cls", SYNC)
def test_timeout(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    with make(cls, pg_dsn, app) as pool:
        held = ready(pool).getconn()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.05)
        pool.putconn(held)
    assert seq(events)[2:5] == [("borrow", 1, False), ("wait", 1), ("error", "timeout", "wait")]
    assert_conformant(events)
    assert_settled(pool, timeout=1)
    assert ledger_of(pool).snapshot().wait_time.count == 1  # the timed-out wait is no borrow


def test_max_waiting_refuses_at_once(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    with make(ConnectionPool, pg_dsn, app, max_waiting=1) as pool:
        held = ready(pool).getconn()
        thread = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=10)))
        thread.start()
        wait_until(lambda: ledger_of(pool).snapshot().pending == 1)
        with pytest.raises(TooManyRequests):
            pool.getconn()
        pool.putconn(held)
        thread.join(10)
    assert ("error", "exhausted", "borrow") in seq(events)
    assert_conformant(events)
    assert_settled(pool, exhausted=1)


@pytest.mark.parametrize("cls", SYNC)
def test_server_kills_a_connection_then_next_borrow(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    with make(cls, pg_dsn, app) as pool:
        with pytest.raises(psycopg.OperationalError), ready(pool).connection() as conn:
            assert kill_backends(pg_dsn, app) == 1
            conn.execute("select 1")
        if cls is ConnectionPool:  # the pool replaces the lost connection in the background
            wait_until(lambda: ledger_of(pool).snapshot().idle == 1)
        with pool.connection() as conn:
            assert conn.execute("select 3").fetchone() == (3,)
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("return", 1),
        ("evict", 1, "broken"),
        ("create", 2),
        ("borrow", 2, False),
        ("return", 2),
        ("evict", 2, _return_reason(cls)),
        ("close",),
    ]
    assert_conformant(events)
    assert_settled(pool, broken=1)


def test_check_callback_detects_a_killed_connection(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    with make(ConnectionPool, pg_dsn, app, check=ConnectionPool.check_connection) as pool:
        pool.wait()
        assert kill_backends(pg_dsn, app) == 1
        with pool.connection(timeout=10) as conn:
            assert conn.execute("select 4").fetchone() == (4,)
    conns = per_conn(events)
    assert conns[1] == [("create", 1), ("validate", 1, "error"), ("evict", 1, "failed_validation")]
    assert conns[2] == [
        ("create", 2),
        ("validate", 2, "ok"),
        ("borrow", 2, conns[2][2][2]),  # queued or not: depends on the replacement's speed
        ("return", 2),
        ("evict", 2, "pool_closed"),
    ]
    assert_conformant(events)
    snap = ledger_of(pool).snapshot()
    assert snap.validations == {"ok": 1, "error": 1}
    assert snap.evictions["failed_validation"] == 1 and snap.pending == 0


def test_pool_check_drops_killed_connections(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    with make(ConnectionPool, pg_dsn, app, min_size=2, max_size=2) as pool:
        pool.wait()
        assert kill_backends(pg_dsn, app) == 2
        pool.check()
        wait_until(lambda: ledger_of(pool).snapshot().idle == 2)
    conns = per_conn(events)
    for cid in (1, 2):
        assert conns[cid] == [
            ("create", cid),
            ("validate", cid, "error"),
            ("evict", cid, "failed_validation"),
        ]
    assert sorted(conns) == [1, 2, 3, 4]
    assert_conformant(events)
    assert_settled(pool, failed_validation=2, pool_closed=2)


def test_idle_expiry_through_the_shrink_hook(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    with make(ConnectionPool, pg_dsn, app, min_size=1, max_size=2) as pool:
        pool.wait()
        first = pool.getconn()
        second = pool.getconn(timeout=10)  # queues while the pool grows
        pool.putconn(first)
        pool.putconn(second)
        pool._shrink_pool()  # the ShrinkPool task's body: first run notes both were in use
        pool._shrink_pool()  # second run: one unused above min_size -> closed
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("wait", 1),
        ("create", 2),
        ("borrow", 2, True),
        ("return", 1),
        ("return", 2),
        ("evict", 1, "idle_timeout"),
        ("evict", 2, "pool_closed"),
        ("close",),
    ]
    assert_conformant(events)
    assert_settled(pool, idle_timeout=1)


def test_lifetime_expiry(instrumented: None, events: list[Event], pg_dsn: str, app: str) -> None:
    # max_lifetime=0: psycopg_pool enforces no minimum, so every connection is expired on return.
    with make(ConnectionPool, pg_dsn, app, max_lifetime=0.0) as pool:
        pool.wait()
        with pool.connection() as conn:
            conn.execute("select 1")
        wait_until(lambda: ledger_of(pool).snapshot().idle == 1)  # the replacement
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("return", 1),
        ("evict", 1, "max_lifetime"),
        ("create", 2),
        ("evict", 2, "pool_closed"),
        ("close",),
    ]
    assert_conformant(events)
    assert_settled(pool, max_lifetime=1)


@pytest.mark.parametrize("cls", SYNC)
def test_close_with_a_waiter_and_a_borrowed_connection(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    pool = make(cls, pg_dsn, app)
    pool.open()
    held = ready(pool).getconn()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            pool.getconn(timeout=10)
        except PoolClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: ledger_of(pool).snapshot().pending == 1)
    pool.close()
    thread.join(10)
    pool.putconn(held)  # returned after close: the pool closes it
    assert len(errors) == 1
    got = seq(events)
    assert got[:4] == [("open",), ("create", 1), ("borrow", 1, False), ("wait", 1)]
    # The waiter is failed inside close(); whether its error lands before or after the close
    # event depends on thread scheduling.
    assert sorted(got[4:6]) == sorted([("close",), ("error", "pool_closed", "wait")])
    assert got[6:] == [("return", 1), ("evict", 1, "pool_closed")]
    assert_conformant(events)
    assert_settled(pool, pool_closed=1)


def test_pool_created_before_instrument_is_adopted(
    registry: PoolRegistry, events: list[Event], pg_dsn: str, app: str
) -> None:
    pool = make(ConnectionPool, pg_dsn, app, min_size=2, max_size=2)
    pool.open(wait=True)
    try:
        assert shim.instrument(registry)
        conn = pool.getconn()
        snap = ledger_of(pool).snapshot()
        assert (snap.idle, snap.used) == (1, 1)  # the other idle connection was adopted
        pool.putconn(conn)
        assert (ledger_of(pool).snapshot().idle, ledger_of(pool).snapshot().used) == (2, 0)
        assert [k for k, *_ in seq(events)] == ["open", "borrow", "return"]
        assert_conformant(events)
    finally:
        pool.close()
        shim.uninstrument()
    assert TRACKER_ATTR not in pool.__dict__  # uninstrument forgets the pools it tracked


def test_user_name_kept_and_derived_name_stable(
    instrumented: None, registry: PoolRegistry, pg_dsn: str, app: str
) -> None:
    named = make(ConnectionPool, pg_dsn, app, name="orders-db")
    unnamed = make(ConnectionPool, pg_dsn, app)
    with named, unnamed:
        names = [ledger_of(named).name, ledger_of(unnamed).name]
    assert names == ["orders-db", "postgresql://127.0.0.1:5432/postgres"]
    ident = ledger_of(unnamed).identity
    assert (ident.library, ident.system, ident.server_port) == ("psycopg-pool", "postgresql", 5432)


# --------------------------------------------------------------------------- asyncio pools

ASYNC = [AsyncConnectionPool, AsyncNullConnectionPool]


@pytest.mark.parametrize("cls", ASYNC)
def test_async_waiting_timeout_and_close(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    async def scenario() -> list[Any]:
        results: list[Any] = []
        async with make(cls, pg_dsn, app) as pool:
            if cls is AsyncConnectionPool:
                await pool.wait()
            held = await pool.getconn()
            try:
                await pool.getconn(timeout=0.05)
            except PoolTimeout:
                results.append("timeout")

            async def waiter() -> None:
                async with pool.connection(timeout=10) as conn:
                    cur = await conn.execute("select 5")
                    results.append(await cur.fetchone())

            task = asyncio.create_task(waiter())
            while ledger_of(pool).snapshot().pending != 1:
                await asyncio.sleep(0.005)
            await pool.putconn(held)
            await task
        return results

    assert asyncio.run(scenario()) == ["timeout", (5,)]
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("wait", 1),
        ("error", "timeout", "wait"),
        ("wait", 1),
        ("return", 1),
        ("borrow", 1, True),
        ("return", 1),
        ("evict", 1, _return_reason(cls)),
        ("close",),
    ]
    assert_conformant(events)


@pytest.mark.parametrize("cls", ASYNC)
def test_async_server_kill_then_next_borrow(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    async def scenario() -> Any:
        async with make(cls, pg_dsn, app) as pool:
            if cls is AsyncConnectionPool:
                await pool.wait()
            try:
                async with pool.connection() as conn:
                    assert kill_backends(pg_dsn, app) == 1
                    await conn.execute("select 1")
            except psycopg.OperationalError:
                pass
            if cls is AsyncConnectionPool:
                while ledger_of(pool).snapshot().idle != 1:
                    await asyncio.sleep(0.005)
            async with pool.connection() as conn:
                cur = await conn.execute("select 6")
                return await cur.fetchone()

    assert asyncio.run(scenario()) == (6,)
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("return", 1),
        ("evict", 1, "broken"),
        ("create", 2),
        ("borrow", 2, False),
        ("return", 2),
        ("evict", 2, _return_reason(cls)),
        ("close",),
    ]
    assert_conformant(events)


def test_async_idle_expiry(instrumented: None, events: list[Event], pg_dsn: str, app: str) -> None:
    async def scenario() -> None:
        async with make(AsyncConnectionPool, pg_dsn, app, min_size=1, max_size=2) as pool:
            await pool.wait()
            first = await pool.getconn()
            second = await pool.getconn(timeout=10)  # queues while the pool grows
            await pool.putconn(first)
            await pool.putconn(second)
            await pool._shrink_pool()
            await pool._shrink_pool()

    asyncio.run(scenario())
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1, False),
        ("wait", 1),
        ("create", 2),
        ("borrow", 2, True),
        ("return", 1),
        ("return", 2),
        ("evict", 1, "idle_timeout"),
        ("evict", 2, "pool_closed"),
        ("close",),
    ]
    assert_conformant(events)


# --------------------------------------------------------------------------- secrets


def test_credentials_appear_in_no_output(
    instrumented: None,
    registry: PoolRegistry,
    events: list[Event],
    pg_dsn: str,
    app: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Trust auth accepts any password, so real connections carry credentials end to end."""
    from prometheus_client import CollectorRegistry, generate_latest

    from poolmon.exporters.prometheus import register_collector

    dsn_secret, kw_secret, bad_secret = "Dsn-S3cret-71", "Kw-S3cret-72", "Bad-S3cret-73"
    good = ConnectionPool(
        f"host=127.0.0.1 port=5432 dbname=postgres user=postgres password={dsn_secret}",
        kwargs={"application_name": app, "password": kw_secret},
        min_size=1,
        open=False,
    )
    bad = ConnectionPool(  # nothing listens on port 1: create failures carry libpq's message
        f"postgresql://postgres:{bad_secret}@127.0.0.1:1/postgres",
        min_size=0,
        max_size=1,
        open=False,
        reconnect_timeout=0.0,
    )
    with caplog.at_level(logging.DEBUG), good, bad:
        good.wait()
        with good.connection() as conn:
            conn.execute("select 1")
        with pytest.raises(PoolTimeout):
            bad.getconn(timeout=0.3)
        wait_until(lambda: ledger_of(bad).snapshot().create_time["error"].count >= 1)
        prom = CollectorRegistry()
        register_collector(prom, registry=registry)
        exposition = generate_latest(prom).decode()
    outputs = [
        json.dumps(events),
        exposition,
        caplog.text,
        repr(registry.snapshot()),
        " ".join(ledger.name for ledger in registry.ledgers()),
    ]
    assert any(e.get("outcome") == "error" for e in events)  # the failure path was exercised
    for text in outputs:
        for secret in (dsn_secret, kw_secret, bad_secret):
            assert secret not in text


# --------------------------------------------------------------------------- equivalence


def _scenario(dsn: str, app: str) -> list[Any]:
    """One run of psycopg_pool's observable behaviour: values, exceptions, blocking outcomes."""
    out: list[Any] = []

    def outcome(fn: Callable[[], Any]) -> None:
        try:
            out.append(("ok", fn()))
        except Exception as exc:
            message = re.sub(r" at 0x[0-9a-f]+", " at 0x?", str(exc))  # object addresses differ
            out.append(("raised", type(exc).__name__, message))

    kwargs = {"application_name": app}
    pool = ConnectionPool(
        dsn, kwargs=kwargs, min_size=1, max_size=1, max_waiting=1, open=False, name="eq-main"
    )
    other = ConnectionPool(dsn, kwargs=kwargs, min_size=0, max_size=1, open=True, name="eq-other")
    with pool:
        pool.wait()
        with pool.connection() as conn:
            outcome(lambda: conn.execute("select 40 + 2").fetchone())
        held = pool.getconn()
        blocked = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=10)))
        blocked.start()
        wait_until(lambda: len(pool._waiting) == 1)
        outcome(lambda: pool.getconn())  # TooManyRequests
        outcome(lambda: other.putconn(held))  # ValueError: not this pool's connection
        outcome(lambda: pool.putconn(held))  # handed to the blocked caller
        blocked.join(10)
        outcome(lambda: blocked.is_alive())
        held = pool.getconn()
        outcome(lambda: pool.getconn(timeout=0.05))  # PoolTimeout, same message
        outcome(lambda: pool.putconn(held))
        outcome(lambda: {k: v for k, v in pool.get_stats().items() if not k.endswith("_ms")})
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            kill_backends(dsn, app)
            conn.execute("select 1")
        outcome(lambda: pool.getconn(timeout=10).execute("select 7").fetchone())
    other.close()
    outcome(lambda: pool.getconn())  # PoolClosed
    return out


def test_behaviour_is_the_same_with_and_without_poolmon(
    registry: PoolRegistry, pg_dsn: str
) -> None:
    """psycopg_pool's own test suite is not shipped in its wheel, so it cannot be run here with
    instrumentation on; this runs one scenario both ways and compares everything observable."""
    plain = _scenario(pg_dsn, f"poolmon-eq-{uuid.uuid4().hex[:8]}")
    assert shim.instrument(registry)
    try:
        observed = _scenario(pg_dsn, f"poolmon-eq-{uuid.uuid4().hex[:8]}")
    finally:
        shim.uninstrument()
    assert observed == plain
    assert [o[1] for o in plain if o[0] == "raised"] == [
        "TooManyRequests",
        "ValueError",
        "PoolTimeout",
        "PoolClosed",
    ]
    assert registry.self_metrics.snapshot()["poolmon.shim.errors"] == {}
