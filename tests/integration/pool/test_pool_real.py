"""Real servers kill the pool's connections; the pool evicts them and the next borrow works."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from poolmon.core.registry import PoolRegistry
from poolmon.pool import Pool
from tests.unit.pool._support import Recorder

_EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"poolmon_example_{name}", _EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_postgres_terminated_connections_are_evicted(pg_dsn: str, registry: PoolRegistry) -> None:
    psycopg = pytest.importorskip("psycopg")
    rec = Recorder(registry)
    app = f"poolmon-test-{uuid.uuid4().hex[:12]}"
    # Trust auth ignores the password: it is here to prove it never reaches an event.
    secret_dsn = pg_dsn.replace("postgres@", "postgres:s3cr3t-pw@", 1)
    factory = _example("pool_psycopg").PsycopgFactory(secret_dsn, application_name=app)
    pool = Pool(factory, max_size=2, validate_after=0, maintain=False)

    def kill_ours() -> int:
        # Only backends carrying our unique application_name: never a colleague's.
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (app,),
            ).fetchall()
        return len(rows)

    try:
        idle = pool.getconn()
        pool.putconn(idle)
        assert kill_ours() == 1
        conn = pool.getconn()  # validation on borrow finds it dead
        assert conn is not idle
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert kill_ours() == 1  # now kill it while lent
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        pool.putconn(conn)  # broken: evicted, not parked
        with pool.connection() as fresh:
            assert fresh.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
    assert rec.reasons()[:2] == ["failed_validation", "broken"]
    assert "s3cr3t-pw" not in "".join(rec.lines) + pool.name
    rec.assert_valid()


def test_redis_killed_clients_are_evicted(redis_url: str, registry: PoolRegistry) -> None:
    redis = pytest.importorskip("redis")
    rec = Recorder(registry)
    name = f"poolmon-test-{uuid.uuid4().hex[:12]}"
    factory = _example("pool_redis").RedisFactory(redis_url, client_name=name)
    pool = Pool(factory, max_size=2, validate_after=0, maintain=False)
    admin = redis.Redis.from_url(redis_url)

    def kill_ours() -> int:
        # CLIENT KILL ID of our own clients only (found by their unique name).
        ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
        for client_id in ids:
            admin.client_kill_filter(_id=client_id)
        return len(ids)

    try:
        first = pool.getconn()
        pool.putconn(first)
        assert kill_ours() == 1
        conn = pool.getconn()
        assert conn is not first
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", True)
        assert kill_ours() == 1
        with pytest.raises(redis.ConnectionError):
            conn.send_command("PING")
            conn.read_response()
        pool.putconn(conn)
        with pool.connection() as fresh:
            fresh.send_command("PING")
            assert fresh.read_response() in (b"PONG", True)
    finally:
        pool.close()
        admin.close()
    assert rec.reasons()[:2] == ["failed_validation", "broken"]
    rec.assert_valid()


def test_sqlite_factory(tmp_path: Path, registry: PoolRegistry) -> None:
    from poolmon.pool import SqliteFactory

    pool = Pool(SqliteFactory(tmp_path / "db.sqlite"), max_size=2, maintain=False)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
    with pool.connection() as conn:  # reset rolled the open transaction back
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert pool.name == "sqlite://db.sqlite"
    pool.close()
