"""A password rotated mid-run on a real Redis (an ACL user of our own) and a token provider on
the real PostgreSQL: no failed borrow, and the secrets never reach an event or an error."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from poolmon.core.registry import PoolRegistry
from tests.integration.pool.test_pool_real import _example
from tests.unit.pool._support import Recorder


def test_redis_password_rotated_mid_run_without_a_failed_borrow(
    redis_url: str, registry: PoolRegistry, tmp_path: Path
) -> None:
    redis = pytest.importorskip("redis")
    rec = Recorder(registry)
    user = f"poolmon-cred-{uuid.uuid4().hex[:10]}"
    old, new = f"pw1-{uuid.uuid4().hex}", f"pw2-{uuid.uuid4().hex}"
    prefix = f"poolmon:{user}:"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{old}"], keys=[f"{prefix}*"], commands=["+@all"]
    )
    secret = tmp_path / "password"
    secret.write_text(old)
    example = _example("pool_credentials_redis")
    pool = example.redis_pool(
        redis_url, example.FileSecret(user, str(secret)), max_size=2, maintain=False
    )
    try:
        for i in range(40):
            if i == 20:  # rotate: the server accepts only the new password from now on
                admin.acl_setuser(user, enabled=True, reset_passwords=True, passwords=[f"+{new}"])
                secret.write_text(new)
                pool.drain()  # the old connections are replaced (as max_lifetime would)
            with pool.connection() as conn:  # never raises: a failed borrow fails the test
                conn.send_command("SET", f"{prefix}k", str(i))
                assert conn.read_response() in (b"OK", "OK", True)
        # A connection opened after the rotation authenticated with the new password.
        with pool.connection() as conn:
            conn.send_command("ACL", "WHOAMI")
            assert conn.read_response() in (user.encode(), user)
    finally:
        pool.close()
        admin.delete(f"{prefix}k")
        admin.acl_deluser(user)
    creates = rec.kinds("create")
    assert len(creates) >= 2 and all(c["outcome"] == "ok" for c in creates)
    for line in rec.lines:
        assert old not in line and new not in line
    assert old not in repr(pool) and new not in repr(pool.config)
    rec.assert_valid()


def test_postgres_token_provider_and_a_stale_token(pg_dsn: str, registry: PoolRegistry) -> None:
    pytest.importorskip("psycopg")
    rec = Recorder(registry)
    app = f"poolmon-cred-{uuid.uuid4().hex[:12]}"
    token = f"tok-{uuid.uuid4().hex}"
    asked: list[int] = []

    def provider() -> dict[str, str]:
        asked.append(1)
        # Trust auth ignores the password: it is here to prove it never reaches an event.
        return {"user": "postgres", "password": token, "application_name": app}

    dsn = pg_dsn.replace("postgres@", "", 1) if "postgres@" in pg_dsn else pg_dsn
    example = _example("pool_credentials_psycopg")
    pool = example.psycopg_pool(dsn, provider, max_size=2, maintain=False)
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == (app,)
        pool.drain()
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        pool.close()
    assert len(asked) == 2  # at each connect
    for line in rec.lines:
        assert token not in line
    rec.assert_valid()
