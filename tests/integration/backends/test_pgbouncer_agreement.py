"""poolmon's numbers equal PgBouncer's and PostgreSQL's own, read at the same quiescent moment.

Two instrumented psycopg_pool pools ("two instances" of one service, through the real shim) and a
raw asyncpg client go through a real PgBouncer in transaction mode with 3 server connections.
Five callers hold a transaction each, so 3 get a server connection and 2 wait in PgBouncer, and
one more caller waits inside its application pool. Everything is then blocked: the state cannot
move, so the poller's reading and a direct ``SHOW POOLS`` / ``pg_stat_activity`` must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import poolmon
from poolmon.backends import PgBouncerReader, Poller, PostgresReader, application_name
from poolmon.backends.labels import label_psycopg_pool
from poolmon.core.registry import PoolRegistry
from poolmon.top.model import TopModel
from poolmon.top.sources import MetricsUrlSource
from tests.integration.backends.helpers import Exposition, admin_rows, wait_until
from tests.support.pgbouncer import DATABASE, PgBouncer


@pytest.fixture
def instrumented(registry: PoolRegistry) -> Iterator[PoolRegistry]:
    poolmon.instrument("psycopg")
    try:
        yield registry
    finally:
        poolmon.uninstrument()


def _pool(bouncer: PgBouncer, name: str, size: int) -> ConnectionPool[Any]:
    # Transaction pooling: no prepared statements (PgBouncer 1.18 cannot route them).
    pool: ConnectionPool[Any] = ConnectionPool(
        bouncer.client_dsn(), min_size=size, max_size=size, kwargs={"prepare_threshold": None},
        name=name, open=False, timeout=60,
    )  # fmt: skip
    # What the shims will do when they first see the pool (see poolmon.backends.labels).
    assert label_psycopg_pool(pool, name)
    pool.open()
    return pool


class _Holders:
    """Threads that borrow a connection, run a query in a transaction, and hold it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def hold(self, pool: ConnectionPool[Any]) -> None:
        def run() -> None:
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT 1")  # opens a transaction: holds a server connection
                    self.release.wait(60)
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self) -> None:
        self.release.set()
        for t in self.threads:
            t.join(30)


def _asyncpg_client(bouncer: PgBouncer, label: str, stop: threading.Event) -> threading.Thread:
    """A raw asyncpg connection (no pool) through PgBouncer: one more idle client."""
    asyncpg = pytest.importorskip("asyncpg")
    ready = threading.Event()

    async def main() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=bouncer.port, user=bouncer_user(), password=bouncer_pw(),
            database=DATABASE, statement_cache_size=0, server_settings={"application_name": label},
        )  # fmt: skip
        await conn.fetchval("SELECT 1")
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await conn.close()

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(30), "asyncpg client did not connect"
    return t


def bouncer_user() -> str:
    from tests.support.pgbouncer import APP_USER

    return APP_USER


def bouncer_pw() -> str:
    from tests.support.pgbouncer import APP_PASSWORD

    return APP_PASSWORD


def _pool_row(bouncer: PgBouncer) -> dict[str, Any]:
    rows = [r for r in admin_rows(bouncer.admin_dsn, "SHOW POOLS") if r["database"] == DATABASE]
    assert len(rows) == 1, rows
    return rows[0]


def _activity(pg_dsn: str, labels: set[str]) -> dict[tuple[str, str], int]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, state, count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND application_name = ANY(%s) GROUP BY 1, 2",
            (sorted(labels),),
        ).fetchall()
    return {(str(a), str(s).replace(" ", "_")): int(n) for a, s, n in rows}


def test_pgbouncer_and_postgres_agree_with_show_pools_and_pg_stat_activity(
    bouncer: PgBouncer, pg_dsn: str, instrumented: PoolRegistry
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = (f"i19-orders-a-{tag}", f"i19-orders-b-{tag}")
    labels = {application_name(n) for n in names}
    stop_asyncpg = threading.Event()
    holders = _Holders()
    pools = [_pool(bouncer, names[0], 3), _pool(bouncer, names[1], 3)]
    poller = Poller([PgBouncerReader(bouncer.admin_dsn), PostgresReader(pg_dsn)])
    try:
        for p in pools:
            p.wait(30)
        asyncpg_thread = _asyncpg_client(bouncer, f"i19-asyncpg-{tag}", stop_asyncpg)
        for _ in range(4):  # pool a: 3 borrowed + 1 waiting in the application pool
            holders.hold(pools[0])
        for _ in range(2):  # pool b: 2 borrowed
            holders.hold(pools[1])
        # Quiescent: 3 transactions on the 3 server connections, 2 clients waiting in PgBouncer,
        # 1 caller waiting in pool a. Nothing can move until the test releases them.
        wait_until(
            lambda: (lambda r: (r["sv_active"], r["cl_waiting"]) == (3, 2))(_pool_row(bouncer)),
            "3 active server connections and 2 waiting clients",
        )
        wait_until(
            lambda: sum(s.pending for s in instrumented.snapshot()) == 1, "one app-side waiter"
        )
        before = _pool_row(bouncer)
        poller.poll_once(force=True)
        after = _pool_row(bouncer)
        activity = _activity(pg_dsn, labels)
        exposition = Exposition(poller, instrumented)
        assert not holders.errors

        stable = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
                  "sv_login")  # fmt: skip
        assert {k: before[k] for k in stable} == {k: after[k] for k in stable}
        # The pool's user is the one PgBouncer logs in as (the database entry forces one).
        pool = f"pgbouncer://127.0.0.1:{bouncer.port}/{DATABASE}?user={after['user']}"
        e = exposition.value
        # Client side.
        assert e("pool_connection_pending_requests", pool_name=pool) == after["cl_waiting"] == 2
        assert (
            e("pool_proxy_client_connections", pool_name=pool, pool_proxy_client_state="active")
            == after["cl_active"]
        )
        assert (
            e("pool_proxy_client_connections", pool_name=pool, pool_proxy_client_state="waiting")
            == after["cl_waiting"]
        )
        # 6 app connections + the asyncpg client: every client of the pool is accounted for.
        assert after["cl_active"] + after["cl_waiting"] == 7
        wait_before = before["maxwait"] + before["maxwait_us"] / 1e6
        wait_after = after["maxwait"] + after["maxwait_us"] / 1e6
        oldest = e("pool_connection_oldest_wait_seconds", pool_name=pool)
        assert oldest is not None and 0 < wait_before <= oldest <= wait_after
        # Server side.
        assert (
            e("pool_connection_usage", pool_name=pool, pool_connection_state="used")
            == after["sv_active"]
            == 3
        )
        assert e("pool_connection_usage", pool_name=pool, pool_connection_state="idle") == (
            after["sv_idle"] + after["sv_used"] + after["sv_tested"]
        )
        for state in ("active", "idle", "used", "tested", "login"):
            assert e("pool_proxy_server_connections", pool_name=pool,
                     pool_proxy_server_state=state) == after[f"sv_{state}"]  # fmt: skip
        assert e("pool_connection_max", pool_name=pool) == 3
        assert e("pool_proxy_info", pool_name=pool, pool_proxy_mode="transaction",
                 backend_name="postgresql://127.0.0.1:5432") == 1  # fmt: skip
        assert e("pool_info", pool_name=pool, pool_system="pgbouncer") == 1
        assert e("backend_connection_limit", backend_system="pgbouncer") == 60
        assert e("pool_proxy_wait_time_seconds_total", db_namespace=DATABASE) is not None
        # Backend: the 3 server connections PgBouncer holds, by the labels the app pools gave.
        ours = exposition.total(
            "backend_connection_usage",
            lambda ls: (
                ls.get("backend_client") in labels
                and ls.get("backend_name") == "postgresql://127.0.0.1:5432"
            ),
        )
        assert ours == sum(activity.values()) == after["sv_active"] + after["sv_idle"]
        for (label, state), count in activity.items():
            assert e("backend_connection_usage", backend_client=label,
                     backend_connection_state=state,
                     client_address="127.0.0.1") == count  # fmt: skip
        assert e("backend_connection_limit", backend_system="postgresql") == int(
            _setting(pg_dsn, "max_connections")
        )
        assert e("backend_connection_reserved", backend_system="postgresql") == int(
            _setting(pg_dsn, "superuser_reserved_connections")
        )
        # The app pools' own totals (the shim's view): 5 borrowed, 1 waiting, 6 max.
        app = [s for s in instrumented.snapshot() if s.name in names]
        assert sorted(s.name for s in app) == sorted(names)
        assert sum(s.used for s in app) == 5 and sum(s.pending for s in app) == 1
        assert sum(s.max or 0 for s in app) == 6
        assert e("pool_connection_usage", pool_name=names[0], pool_connection_state="used") == 3
        # top's capacity chain, read from the same exposition a /metrics URL would serve.
        frame = TopModel().update([MetricsUrlSource("127.0.0.1:1").parse(exposition.text(), 1.0)])
        chain = [c for c in frame.capacity if c.proxy == f"pgbouncer://127.0.0.1:{bouncer.port}"]
        assert len(chain) == 1
        pg_total = next(s for s in poller.snapshot() if s.system == "postgresql").reading
        assert pg_total is not None
        assert chain[0].text == (
            f"127.0.0.1:{bouncer.port}: 1 instance x 6 max = 6 -> pgbouncer 3 server conns "
            f"-> postgres {pg_total.total}/{pg_total.limit}"
        )
        assert e("backend_up", backend_system="pgbouncer") == 1
        assert e("backend_up", backend_system="postgresql") == 1
    finally:
        holders.finish()
        stop_asyncpg.set()
        for p in pools:
            p.close()
        poller.close()
        with contextlib.suppress(NameError):
            asyncpg_thread.join(10)


def _setting(pg_dsn: str, name: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])
