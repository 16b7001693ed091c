"""SQLAlchemy shim against the real PostgreSQL on loopback (psycopg and asyncpg drivers).

Each scenario collects the pool's events, checks the exact sequence, runs the stream through the
conformance checker and checks the final counts. Backends are killed only by their own pid and
this test's unique ``application_name``. Runs on the compiled and the pure-Python paths (the
autouse ``implementation`` fixture of this directory).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import pool as sa_pool
from sqlalchemy.ext.asyncio import create_async_engine

import poolmon
import poolmon.shims.sqlalchemy as shim
from poolmon.core.registry import PoolRegistry
from tests.support.events import Events

pytestmark = pytest.mark.integration

SECRET = "pm-i17-Sekr3t"


@pytest.fixture
def events(registry: PoolRegistry) -> Iterator[Events]:
    assert shim.instrument()
    try:
        yield Events(registry)
    finally:
        shim.uninstrument()


def _app() -> str:
    return f"poolmon-sa-{uuid.uuid4().hex[:12]}"


def _url(pg_dsn: str, driver: str = "psycopg") -> str:
    parts = urlsplit(pg_dsn)
    user, port = parts.username or "postgres", parts.port or 5432
    return f"postgresql+{driver}://{user}@{parts.hostname}:{port}{parts.path}"


def _engine(pg_dsn: str, app: str, **kw: Any) -> sa.Engine:
    return sa.create_engine(_url(pg_dsn), connect_args={"application_name": app}, **kw)


def _kill(pg_dsn: str, pid: int, app: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = %s AND application_name = %s",
            (pid, app),
        ).fetchone()
        assert row == (True,)


def _pid(conn: sa.Connection) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_queuepool_identity_borrow_return(
    events: Events, registry: PoolRegistry, pg_dsn: str
) -> None:
    engine = _engine(pg_dsn, _app(), pool_size=2, max_overflow=3)
    for _ in range(2):
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    (ledger,) = registry.ledgers()
    parts = urlsplit(pg_dsn)
    assert ledger.name == f"postgresql+psycopg://{parts.hostname}:{parts.port or 5432}{parts.path}"
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("borrow", 1, None),
        ("return", 1, None),
    ]
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending, snap.max, snap.idle_max) == (1, 0, 0, 5, 2)
    assert snap.identity.system == "postgresql" and snap.identity.library == "sqlalchemy"
    events.assert_conformant()
    engine.dispose()


def test_logging_name_wins(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    engine = _engine(pg_dsn, _app(), pool_logging_name="orders-pool")
    with engine.connect():
        pass
    assert [ledger.name for ledger in registry.ledgers()] == ["orders-pool"]
    engine.dispose()


def test_overflow_wait_timeout_and_waiter(
    events: Events, registry: PoolRegistry, pg_dsn: str
) -> None:
    engine = _engine(pg_dsn, _app(), pool_size=1, max_overflow=1, pool_timeout=0.05)
    a = engine.connect()
    b = engine.connect()  # overflow beyond pool_size
    with pytest.raises(sa.exc.TimeoutError, match="QueuePool limit"):
        engine.connect()
    (ledger,) = registry.ledgers()
    engine.pool._timeout = 30  # type: ignore[attr-defined]
    got: list[sa.Connection] = []
    waiter = threading.Thread(target=lambda: got.append(engine.connect()))
    waiter.start()
    deadline = threading.Event()
    while ledger.snapshot().pending != 1:
        assert not deadline.wait(0.005) and waiter.is_alive()
    b.close()  # the waiter gets it
    waiter.join(10)
    got[0].close()
    a.close()  # the pool (size 1) is full: the overflow connection is closed
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("wait", None, None),
        ("error", None, "timeout"),
        ("wait", None, None),
        ("return", 2, None),
        ("borrow", 2, "queued"),
        ("return", 2, None),
        ("return", 1, None),
        ("evict", 1, "overflow"),
    ]
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (1, 0, 0)
    assert snap.errors["timeout"] == 1 and snap.evictions["overflow"] == 1
    events.assert_conformant()
    engine.dispose()


def test_killed_mid_checkout_is_broken_then_new_create(
    events: Events, registry: PoolRegistry, pg_dsn: str
) -> None:
    app = _app()
    engine = _engine(pg_dsn, app, pool_size=1, max_overflow=0)
    conn = engine.connect()
    _kill(pg_dsn, _pid(conn), app)
    with pytest.raises(sa.exc.OperationalError):
        conn.execute(sa.text("SELECT 1"))
    conn.close()
    with engine.connect() as again:
        assert again.execute(sa.text("SELECT 1")).scalar() == 1
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("evict", 1, "broken"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 2, None),
    ]
    events.assert_conformant()
    engine.dispose()


def test_pre_ping_failure(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    app = _app()
    engine = _engine(pg_dsn, app, pool_size=1, max_overflow=0, pool_pre_ping=True)
    with engine.connect() as conn:
        pid = _pid(conn)
    with engine.connect() as conn:  # a healthy ping
        assert _pid(conn) == pid
    _kill(pg_dsn, pid, app)
    with engine.connect() as conn:  # the ping fails: a new connection, transparently
        assert _pid(conn) != pid
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("validate", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("validate", 1, "error"),
        ("evict", 1, "failed_validation"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 2, None),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert snap.validations == {"ok": 1, "error": 1}
    assert snap.evictions["failed_validation"] == 1
    events.assert_conformant()
    engine.dispose()


def test_recycle_dispose_detach(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    engine = _engine(pg_dsn, _app(), pool_size=2, max_overflow=0, pool_recycle=1800)
    with engine.connect() as conn:
        record = conn.connection._connection_record
    record.starttime -= 3600  # opened an hour ago (SQLAlchemy compares time.time() with it)
    with engine.connect():
        pass
    raw = engine.raw_connection()
    raw.detach()
    raw.close()  # closes the detached DBAPI connection; the pool never sees it again
    with engine.connect():
        pass
    engine.pool.dispose()
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("return", 1, None),
        ("evict", 1, "max_lifetime"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("return", 2, None),
        ("borrow", 2, None),
        ("evict", 2, "detached"),
        ("create", 3, "ok"),
        ("borrow", 3, None),
        ("return", 3, None),
        ("evict", 3, "pool_closed"),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert (snap.idle, snap.used) == (0, 0)
    events.assert_conformant()


@pytest.mark.parametrize(
    "poolclass",
    [sa_pool.NullPool, sa_pool.StaticPool, sa_pool.AssertionPool, sa_pool.SingletonThreadPool],
    ids=lambda c: c.__name__,
)
def test_other_pool_classes(
    events: Events, registry: PoolRegistry, pg_dsn: str, poolclass: Any
) -> None:
    engine = _engine(pg_dsn, _app(), poolclass=poolclass)
    for _ in range(2):
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.pool.dispose()
    if poolclass is sa_pool.NullPool:  # churn: every checkout a create, every checkin an eviction
        expected = [
            ("create", 1, "ok"), ("borrow", 1, None), ("return", 1, None), ("evict", 1, "overflow"),
            ("create", 2, "ok"), ("borrow", 2, None), ("return", 2, None), ("evict", 2, "overflow"),
        ]  # fmt: skip
    else:
        expected = [
            ("create", 1, "ok"), ("borrow", 1, None), ("return", 1, None),
            ("borrow", 1, None), ("return", 1, None), ("evict", 1, "pool_closed"),
        ]  # fmt: skip
    assert events.seq() == expected
    snap = registry.ledgers()[0].snapshot()
    assert (snap.idle, snap.used, snap.pending) == (0, 0, 0)
    events.assert_conformant()


def test_engine_created_before_instrument(registry: PoolRegistry, pg_dsn: str) -> None:
    engine = _engine(pg_dsn, _app(), pool_size=2)
    with engine.connect():
        pass
    assert shim.instrument()
    try:
        events = Events(registry)
        with engine.connect():
            pass
        assert events.seq() == [("borrow", 1, None), ("return", 1, None)]  # adopted, no create
        (ledger,) = registry.ledgers()
        parts = urlsplit(pg_dsn)
        assert (
            ledger.name == f"postgresql+psycopg://{parts.hostname}:{parts.port or 5432}{parts.path}"
        )
        events.assert_conformant()
    finally:
        shim.uninstrument()
        engine.dispose()


def test_many_threads_exact(registry: PoolRegistry, pg_dsn: str) -> None:
    # No subscriber: the lock-free lane and, on the compiled path, the compiled hooks.
    assert shim.instrument()
    engine = _engine(pg_dsn, _app(), pool_size=2, max_overflow=2, pool_timeout=60)
    threads, cycles = 8, 60

    def work() -> None:
        for _ in range(cycles):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    (ledger,) = registry.ledgers()
    snap = ledger.snapshot()
    created = snap.create_time["ok"].count
    assert snap.wait_time.count == threads * cycles
    assert snap.use_time.count == threads * cycles
    assert (snap.used, snap.pending) == (0, 0)
    assert snap.idle == engine.pool.checkedin()  # type: ignore[attr-defined]
    assert snap.evictions["overflow"] == created - snap.idle
    assert ledger.lane.open  # the lane really was the path taken
    engine.dispose()
    shim.uninstrument()


def test_async_engine_tasks_exact(events: Events, registry: PoolRegistry, pg_dsn: str) -> None:
    app = _app()

    async def main() -> None:
        engine = create_async_engine(
            _url(pg_dsn, "asyncpg"),
            pool_size=2,
            max_overflow=0,
            connect_args={"server_settings": {"application_name": app}},
        )

        async def work() -> None:
            for _ in range(5):
                async with engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")

        await asyncio.gather(*(work() for _ in range(6)))
        ledgers.extend(registry.ledgers())
        await engine.dispose()

    ledgers: list[Any] = []
    asyncio.run(main())
    kinds = [kind for kind, _, _ in events.seq()]
    assert kinds.count("borrow") == 30 and kinds.count("return") == 30
    assert kinds.count("create") == 2 and kinds.count("evict") == 2
    assert kinds.count("wait") == sum(1 for e in events.items if e.get("queued"))
    (ledger,) = ledgers
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (0, 0, 0)
    assert snap.evictions["pool_closed"] == 2
    assert ledger.name.startswith("postgresql+asyncpg://")
    events.assert_conformant()


def test_credentials_never_reach_output(
    events: Events, registry: PoolRegistry, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg_dsn)
    port = parts.port or 5432
    url = f"postgresql+psycopg://nobody:{SECRET}@{parts.hostname}:{port}/poolmon_no_such_db"
    engine = sa.create_engine(url, connect_args={"password": SECRET, "application_name": _app()})
    caplog.set_level(logging.DEBUG, logger="poolmon")
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    text = repr(events.items) + caplog.text
    text += repr([ledger.snapshot() for ledger in registry.ledgers()])
    assert SECRET not in text
    assert any(e.get("outcome") == "error" for e in events.items)
    engine.dispose()


def test_instrument_twice_and_exact_restore(registry: PoolRegistry) -> None:
    from sqlalchemy.pool import base, impl

    before = {
        (cls, name): vars(cls).get(name)
        for cls in (base.Pool, impl.QueuePool, impl.AsyncAdaptedQueuePool, impl.NullPool)
        for name in ("connect", "_do_return_conn")
    }
    assert poolmon.instrument("sqlalchemy") == ["sqlalchemy"]
    patched = {key: vars(key[0]).get(key[1]) for key in before}
    assert shim.instrument() and {k: vars(k[0]).get(k[1]) for k in before} == patched
    poolmon.uninstrument("sqlalchemy")
    assert {key: vars(key[0]).get(key[1]) for key in before} == before
    assert "_poolmon_link" not in vars(base._ConnectionFairy)
    assert not shim.is_instrumented()


def test_unsupported_version_stays_off(
    registry: PoolRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A version of its own per run: the warning is logged once per version and process.
    version = f"1.4.{uuid.uuid4().int % 10_000}"
    monkeypatch.setattr(shim, "_installed_version", lambda: version)
    caplog.set_level(logging.WARNING, logger="poolmon")
    assert shim.instrument() is False
    assert not shim.is_instrumented()
    assert "outside the supported range" in caplog.text


def test_reset_failure_and_explicit_invalidate(
    events: Events, registry: PoolRegistry, pg_dsn: str
) -> None:
    engine = _engine(pg_dsn, _app(), pool_size=1, max_overflow=0)

    def refuse(dbapi_connection: Any, record: Any, state: Any) -> None:
        raise RuntimeError("reset refused")

    sa.event.listen(engine.pool, "reset", refuse)
    with engine.connect():
        pass  # the reset on return fails: SQLAlchemy invalidates the connection
    sa.event.remove(engine.pool, "reset", refuse)
    conn = engine.connect()
    conn.invalidate()  # explicit, without an error
    conn.close()
    assert events.seq() == [
        ("create", 1, "ok"),
        ("borrow", 1, None),
        ("evict", 1, "reset_failed"),
        ("create", 2, "ok"),
        ("borrow", 2, None),
        ("evict", 2, "other"),
    ]
    snap = registry.ledgers()[0].snapshot()
    assert (snap.idle, snap.used) == (0, 0)
    events.assert_conformant()
    engine.dispose()
