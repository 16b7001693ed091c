"""Read/write routing on the real PostgreSQL: a second database of our own acts as the
replica; it is taken down (connections refused, our backends terminated by application_name),
reads fail over to the primary with an event, and it comes back through check()."""

from __future__ import annotations

import contextvars
import uuid

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.pool import RoutingPool
from tests.integration.pool.test_pool_real import _example
from tests.unit.pool._support import Recorder


def test_replica_killed_reads_fail_over_and_come_back(pg_dsn: str, registry: PoolRegistry) -> None:
    psycopg = pytest.importorskip("psycopg")
    rec = Recorder(registry)
    tag = uuid.uuid4().hex[:10]
    replica_db = f"poolmon_replica_{tag}"
    app_primary, app_replica = f"poolmon-rw-p-{tag}", f"poolmon-rw-r-{tag}"
    admin = psycopg.connect(pg_dsn, autocommit=True)
    admin.execute(f'CREATE DATABASE "{replica_db}"')
    replica_dsn = pg_dsn.rsplit("/", 1)[0] + f"/{replica_db}"
    primary_db = admin.execute("SELECT current_database()").fetchone()[0]
    make = _example("pool_psycopg").PsycopgFactory
    clock = ManualClock()
    pool = RoutingPool(
        make(pg_dsn, application_name=app_primary),
        [make(replica_dsn, application_name=app_replica)],
        name=f"orders-{tag}",
        read_after_write=5.0,
        probe_timeout=0.3,
        clock=clock,
        max_size=2,
        validate_after=0,
        maintain=False,
        backoff_jitter=0.0,
    )

    def where(*, readonly: bool) -> str:
        with pool.connection(readonly=readonly) as conn:
            return str(conn.execute("SELECT current_database()").fetchone()[0])

    def fresh(*, readonly: bool) -> str:  # a new request context: no recent write
        return contextvars.copy_context().run(where, readonly=readonly)

    try:
        assert fresh(readonly=True) == replica_db
        assert fresh(readonly=False) == primary_db

        def write_then_read() -> tuple[str, str]:
            return where(readonly=False), where(readonly=True)

        assert contextvars.copy_context().run(write_then_read) == (primary_db, primary_db)
        clock.advance(5.0)  # ... and after the window, reads from that context go back
        # Take the replica down: refuse new connections, terminate our own backends there.
        admin.execute(f'ALTER DATABASE "{replica_db}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app_replica,),
        )
        assert fresh(readonly=True) == primary_db  # failed over, no error for the caller
        assert pool.healthy() == {f"orders-{tag}/replica-1": False}
        assert fresh(readonly=True) == primary_db  # stays on the primary while out of service
        assert pool.check() == []  # still down
        admin.execute(f'ALTER DATABASE "{replica_db}" ALLOW_CONNECTIONS true')
        clock.advance(60.0)  # past the replica pool's create backoff
        assert pool.check() == [f"orders-{tag}/replica-1"]
        assert fresh(readonly=True) == replica_db  # back in service
        rows = {r["pool.name"]: r["pool.route.healthy"] for r in pool.routes()}
        assert rows == {f"orders-{tag}/primary": "true", f"orders-{tag}/replica-1": "true"}
    finally:
        pool.close()
        admin.execute(f'ALTER DATABASE "{replica_db}" ALLOW_CONNECTIONS true')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app_replica,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{replica_db}"')
        admin.close()
    opens = {e["pool"]: (e.get("route"), e.get("route_group")) for e in rec.kinds("open")}
    assert opens[f"orders-{tag}/primary"] == ("primary", f"orders-{tag}")
    assert opens[f"orders-{tag}/replica-1"] == ("replica", f"orders-{tag}")
    failovers = [e for e in rec.kinds("error") if e["error_type"] == "failover"]
    assert len(failovers) == 2 and {e["pool"] for e in failovers} == {f"orders-{tag}/primary"}
    rec.assert_valid()
