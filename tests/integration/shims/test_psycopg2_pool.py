"""psycopg2.pool shim against a real PostgreSQL: event sequences, counts, conformance, identity."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import pool as pg2pool

from poolmon.conformance import validate_stream
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import CallbackSink
from poolmon.shims import psycopg2 as shim
from poolmon.shims._psycopg_common import TRACKER_ATTR

Event = dict[str, Any]
CLASSES = [pg2pool.SimpleConnectionPool, pg2pool.ThreadedConnectionPool]


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


def ledger_of(pool: Any) -> PoolLedger:
    ledger: PoolLedger = pool.__dict__[TRACKER_ATTR].ledger
    return ledger


def kill_backends(dsn: str, app: str) -> int:
    admin = psycopg2.connect(dsn)
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "select count(pg_terminate_backend(pid, 5000)) from pg_stat_activity "
                "where application_name = %s",
                (app,),
            )
            row = cur.fetchone()
    finally:
        admin.close()
    return int(row[0])


def seq(events: list[Event]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        kind = e["kind"]
        if kind in ("open", "close"):
            out.append((kind,))
        elif kind == "evict":
            out.append(("evict", e["conn"], e["reason"]))
        elif kind == "error":
            out.append(("error", e["error_type"], e["phase"]))
        else:
            out.append((kind, e.get("conn")))
    return out


def assert_conformant(events: list[Event]) -> None:
    problems = validate_stream([json.dumps(e) for e in events])
    assert problems == [], problems


@pytest.mark.parametrize("cls", CLASSES)
def test_borrow_return_overflow_exhaustion_close(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    pool = cls(1, 2, pg_dsn, application_name=app)
    a = pool.getconn()
    b = pool.getconn()
    with pytest.raises(pg2pool.PoolError, match="exhausted"):
        pool.getconn()  # psycopg2 never waits: refused at once
    with a.cursor() as cur:
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
    pool.putconn(a)
    pool.putconn(b)  # beyond minconn idle: closed
    ledger = ledger_of(pool)
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.max, snap.idle_max) == (1, 0, 2, 1)
    pool.closeall()
    with pytest.raises(pg2pool.PoolError, match="closed"):
        pool.getconn()
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1),
        ("create", 2),
        ("borrow", 2),
        ("error", "exhausted", "borrow"),
        ("return", 1),
        ("return", 2),
        ("evict", 2, "overflow"),
        ("evict", 1, "pool_closed"),
        ("close",),
        ("error", "pool_closed", "borrow"),
    ]
    assert_conformant(events)
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.closed) == (0, 0, True)
    assert snap.errors["exhausted"] == 1 and snap.evictions["overflow"] == 1


def test_keyed_getconn_returns_the_same_connection_without_a_second_borrow(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    pool = pg2pool.ThreadedConnectionPool(1, 1, pg_dsn, application_name=app)
    first = pool.getconn(key="job")
    assert pool.getconn(key="job") is first
    pool.putconn(first, key="job")
    pool.closeall()
    assert [k for k, *_ in seq(events)] == ["open", "create", "borrow", "return", "evict", "close"]
    assert_conformant(events)


@pytest.mark.parametrize("cls", CLASSES)
def test_server_kills_a_connection_then_next_borrow(
    instrumented: None, events: list[Event], pg_dsn: str, app: str, cls: type[Any]
) -> None:
    pool = cls(1, 1, pg_dsn, application_name=app)
    conn = pool.getconn()
    assert kill_backends(pg_dsn, app) == 1
    with pytest.raises(psycopg2.OperationalError), conn.cursor() as cur:
        cur.execute("select 1")
    pool.putconn(conn)  # closed by the server: psycopg2 discards it
    conn = pool.getconn()  # a fresh connection
    with conn.cursor() as cur:
        cur.execute("select 2")
        assert cur.fetchone() == (2,)
    pool.putconn(conn)
    pool.closeall()
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1),
        ("return", 1),
        ("evict", 1, "broken"),
        ("create", 2),
        ("borrow", 2),
        ("return", 2),
        ("evict", 2, "pool_closed"),
        ("close",),
    ]
    assert_conformant(events)


def test_close_true_and_borrowed_connections_at_closeall(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    pool = pg2pool.ThreadedConnectionPool(1, 2, pg_dsn, application_name=app)
    a = pool.getconn()
    pool.putconn(a, close=True)  # the caller discards it
    b = pool.getconn()
    pool.closeall()  # closes borrowed connections too
    assert b.closed
    assert seq(events)[3:] == [
        ("return", 1),
        ("evict", 1, "other"),
        ("create", 2),
        ("borrow", 2),
        ("evict", 2, "pool_closed"),
        ("close",),
    ]
    assert_conformant(events)


def test_threaded_pool_exact_counts_under_threads(
    instrumented: None, pg_dsn: str, app: str
) -> None:
    pool = pg2pool.ThreadedConnectionPool(4, 4, pg_dsn, application_name=app)
    cycles, threads = 200, 4
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        for _ in range(cycles):
            pool.putconn(pool.getconn())

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    snap = ledger_of(pool).snapshot()
    assert snap.wait_time.count == cycles * threads == snap.use_time.count
    assert (snap.idle, snap.used) == (4, 0)
    pool.closeall()


def test_pool_created_before_instrument_is_adopted(
    registry: PoolRegistry, events: list[Event], pg_dsn: str, app: str
) -> None:
    pool = pg2pool.SimpleConnectionPool(2, 2, pg_dsn, application_name=app)
    try:
        assert shim.instrument(registry)
        conn = pool.getconn()
        snap = ledger_of(pool).snapshot()
        assert (snap.idle, snap.used) == (1, 1)
        pool.putconn(conn)
        assert [k for k, *_ in seq(events)] == ["open", "borrow", "return"]
        assert_conformant(events)
    finally:
        pool.closeall()
        shim.uninstrument()


def test_credentials_appear_in_no_output(
    instrumented: None,
    registry: PoolRegistry,
    events: list[Event],
    pg_dsn: str,
    app: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn_secret, kw_secret, bad_secret = "P2-Dsn-S3cret", "P2-Kw-S3cret", "P2-Bad-S3cret"
    with caplog.at_level(logging.DEBUG):
        good = pg2pool.ThreadedConnectionPool(
            1,
            1,
            f"host=127.0.0.1 dbname=postgres user=postgres password={dsn_secret}",
            application_name=app,
        )
        good2 = pg2pool.SimpleConnectionPool(
            0, 1, host="127.0.0.1", user="postgres", password=kw_secret, dbname="postgres"
        )
        good2.putconn(good2.getconn())
        bad = pg2pool.SimpleConnectionPool(0, 1, f"postgresql://u:{bad_secret}@127.0.0.1:1/x")
        with pytest.raises(psycopg2.OperationalError):
            bad.getconn()
        good.closeall()
        good2.closeall()
    assert any(e.get("outcome") == "error" for e in events)
    names = " ".join(ledger.name for ledger in registry.ledgers())
    for text in (json.dumps(events), caplog.text, repr(registry.snapshot()), names):
        for secret in (dsn_secret, kw_secret, bad_secret):
            assert secret not in text


def test_lent_dict_replaced_and_restored_by_identity(
    registry: PoolRegistry, events: list[Event], pg_dsn: str, app: str
) -> None:
    """A pool made before instrument(), with a connection lent: found at instrument(), the lent
    one adopted as borrowed; uninstrument() puts the pool's own dict back, same object."""
    pool = pg2pool.ThreadedConnectionPool(1, 2, pg_dsn, application_name=app)
    own = pool._used
    lent = pool.getconn()
    try:
        assert shim.instrument(registry)
        assert pool._used is not own and dict(pool._used) == dict(own)
        snap = ledger_of(pool).snapshot()
        assert (snap.idle, snap.used) == (0, 1)
        pool.putconn(lent)
        snap = ledger_of(pool).snapshot()
        assert (snap.idle, snap.used) == (1, 0) and snap.use_time.count == 1
        again = pool.getconn()
        shim.uninstrument()
        assert pool._used is own and list(own.values()) == [again]
        pool.putconn(again)  # plain psycopg2 again: nothing recorded
        assert [k for k, *_ in seq(events)] == ["open", "borrow", "return", "borrow"]
    finally:
        shim.uninstrument()
        pool.closeall()


def test_rollback_failing_in_putconn_leaves_the_connection_borrowed(
    instrumented: None, events: list[Event], pg_dsn: str, app: str
) -> None:
    """The server goes away inside an open transaction: putconn's rollback raises and psycopg2
    keeps the connection in its lent dict, holding a slot; poolmon shows it still borrowed."""
    pool = pg2pool.ThreadedConnectionPool(1, 1, pg_dsn, application_name=app)
    conn = pool.getconn()
    with conn.cursor() as cur:
        cur.execute("select 1")  # a transaction is open now
    assert kill_backends(pg_dsn, app) == 1
    with pytest.raises(psycopg2.Error):
        pool.putconn(conn)
    snap = ledger_of(pool).snapshot()
    assert len(pool._used) == 1 and (snap.idle, snap.used) == (0, 1)
    with pytest.raises(pg2pool.PoolError):
        pool.getconn()  # the slot is gone: exhausted, recorded as such
    pool.closeall()
    assert seq(events) == [
        ("open",),
        ("create", 1),
        ("borrow", 1),
        ("error", "exhausted", "borrow"),
        ("evict", 1, "pool_closed"),
        ("close",),
    ]
    assert_conformant(events)
