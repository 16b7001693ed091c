"""Credential providers: asked at every connect, never kept; a failure is a create failure
with backoff; secrets never reach the pool's repr, config, events or errors."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolTimeout
from poolmon.pool import AsyncPool, Pool, async_credentialed, credentialed
from poolmon.pool.credentials import CredentialedConnectError
from tests.unit.pool._support import Recorder

SECRET = "tok-3f9a-very-secret"


class Conn:
    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.version = password.rsplit("-", 1)[-1]
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Vault:
    """A secrets manager stand-in: the current token rotates; it can be down."""

    def __init__(self) -> None:
        self.version = 1
        self.down = False
        self.asked = 0

    def __call__(self) -> dict[str, str]:
        self.asked += 1
        if self.down:
            raise ConnectionError("vault unreachable")
        return {"user": "app", "password": f"{SECRET}-v{self.version}"}


def _no_secret_anywhere(rec: Recorder, *texts: str) -> None:
    for text in (*rec.lines, *texts):
        assert SECRET not in text


def test_rotation_applies_to_new_connections_without_a_failed_borrow(
    registry: PoolRegistry,
) -> None:
    rec = Recorder(registry)
    vault = Vault()
    pool = Pool(credentialed(Conn, vault), maintain=False, max_size=2, validate_after=None)
    versions = []
    for i in range(20):
        if i == 10:
            vault.version = 2  # rotated in the secrets manager
            pool.drain()  # e.g. the old token expires: connections are replaced
        with pool.connection() as conn:
            versions.append(conn.version)
    pool.close()
    assert versions[:10] == ["v1"] * 10 and versions[10:] == ["v2"] * 10
    assert vault.asked == 2  # once per physical connection, at connect time
    assert not [e for e in rec.kinds("create") if e["outcome"] != "ok"]
    _no_secret_anywhere(rec, repr(pool), repr(pool.config), repr(pool._factory))
    # Nothing outside the connect call keeps the credentials.
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, dict) and o.get("user") == "app"]


def test_a_provider_failure_is_a_create_failure_with_backoff(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()
    vault = Vault()
    vault.down = True
    pool = Pool(
        credentialed(Conn, vault),
        clock=clock,
        maintain=False,
        max_size=1,
        backoff_initial=1.0,
        backoff_jitter=0.0,
    )
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.05)
    assert isinstance(info.value.__cause__, ConnectionError)  # the last create error, chained
    assert pool._backoff.ready_at == clock.monotonic() + 1.0  # backing off
    vault.down = False
    clock.advance(1.0)
    with pool.connection() as conn:
        assert conn.version == "v1"
    pool.close()
    failed = [e for e in rec.kinds("create") if e["outcome"] == "error"]
    assert len(failed) == 1 and "vault unreachable" in failed[0]["message"]
    rec.assert_valid()


def test_a_connect_error_quoting_the_secret_is_masked(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    def connect(user: str, password: str) -> Conn:
        raise RuntimeError(f"auth failed for {user} with {password}")

    fac = credentialed(connect, Vault())
    with pytest.raises(CredentialedConnectError) as info:
        fac.create()
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
    pool = Pool(fac, maintain=False, max_size=1)
    with pytest.raises(PoolTimeout) as timeout:
        pool.getconn(timeout=0.01)
    pool.close()
    _no_secret_anywhere(rec, str(timeout.value), repr(timeout.value.__cause__))


def test_async_pool_with_an_async_provider(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    vault = Vault()

    async def provider() -> dict[str, str]:
        await asyncio.sleep(0)  # e.g. an HTTP call to the secrets manager
        return vault()

    async def connect(**creds: Any) -> Conn:
        await asyncio.sleep(0)
        return Conn(**creds)

    async def main() -> None:
        async with AsyncPool(async_credentialed(connect, provider), max_size=1) as pool:
            async with pool.connection() as conn:
                assert conn.version == "v1"
            vault.version = 2
            await pool.drain()
            async with pool.connection() as conn:
                assert conn.version == "v2"

    asyncio.run(main())
    _no_secret_anywhere(rec)


def test_a_provider_returning_garbage_is_a_clear_create_failure(registry: PoolRegistry) -> None:
    fac = credentialed(Conn, lambda: "app:secret")  # type: ignore[arg-type, return-value]
    with pytest.raises(CredentialedConnectError, match="expected a mapping"):
        fac.create()
