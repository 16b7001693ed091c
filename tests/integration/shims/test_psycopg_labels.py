"""The psycopg shims label the connections they open with their pool's name, only where the
application set no name of its own, and uninstrument() puts the pool's arguments back exactly."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import psycopg2.pool
import psycopg_pool
import pytest

from poolmon.backends.labels import application_name
from poolmon.core.registry import PoolRegistry
from poolmon.shims import psycopg as psycopg_shim
from poolmon.shims import psycopg2 as psycopg2_shim

pytestmark = pytest.mark.integration


@pytest.fixture
def shims(registry: PoolRegistry) -> Iterator[PoolRegistry]:
    psycopg_shim.instrument(registry)
    psycopg2_shim.instrument(registry)
    try:
        yield registry
    finally:
        psycopg_shim.uninstrument()
        psycopg2_shim.uninstrument()


def _names_of(pg_dsn: str, pids: list[int]) -> set[str]:
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "select application_name from pg_stat_activity where pid = any(%s)", (pids,)
        ).fetchall()
    return {row[0] for row in rows}


def test_psycopg_pool_connections_carry_the_pool_name(shims: PoolRegistry, pg_dsn: str) -> None:
    kwargs = {"autocommit": True}
    with psycopg_pool.ConnectionPool(
        pg_dsn, min_size=2, max_size=2, name="labelled", kwargs=kwargs
    ) as pool:
        pool.wait()
        with pool.connection() as a, pool.connection() as b:
            pids = [a.info.backend_pid, b.info.backend_pid]
        (ledger,) = [snap for snap in shims.snapshot() if snap.name == "labelled"]
        assert _names_of(pg_dsn, pids) == {application_name(ledger.name)}
        assert kwargs == {"autocommit": True}  # the caller's dict is never mutated
        psycopg_shim.uninstrument()
        assert pool.kwargs is kwargs  # put back exactly


def test_an_application_name_of_the_application_wins(shims: PoolRegistry, pg_dsn: str) -> None:
    dsn = pg_dsn + ("&" if "?" in pg_dsn else "?") + "application_name=mine"
    with psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=1, name="own") as pool:
        with pool.connection() as conn:
            pids = [conn.info.backend_pid]
        assert _names_of(pg_dsn, pids) == {"mine"}


def test_psycopg2_pool_connections_carry_the_pool_name(shims: PoolRegistry, pg_dsn: str) -> None:
    pool = psycopg2.pool.ThreadedConnectionPool(0, 2, pg_dsn)
    try:
        conn = pool.getconn()
        (snap,) = shims.snapshot()
        assert _names_of(pg_dsn, [conn.info.backend_pid]) == {application_name(snap.name)}
        pool.putconn(conn)
    finally:
        pool.closeall()
