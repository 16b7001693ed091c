"""redis-py shim contract against the real Redis: behaviour preserved, exact restore, idempotence,
version gating, no credentials in any output, hook failures absorbed."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
import redis.asyncio.connection as rac
import redis.connection as rc

import poolmon
import poolmon.shims.redis as shim
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims._patch import WRAPPED_MARK
from tests.support.lanes import ExplodingLane

pytestmark = pytest.mark.integration

#: Every attribute the shim patches (class, name).
PATCHED = [
    (rc.ConnectionPool, "get_connection"),
    (rc.ConnectionPool, "release"),
    (rc.ConnectionPool, "make_connection"),
    (rc.ConnectionPool, "disconnect"),
    (rc.ConnectionPool, "close"),
    (rc.BlockingConnectionPool, "get_connection"),
    (rc.BlockingConnectionPool, "release"),
    (rc.BlockingConnectionPool, "make_connection"),
    (rc.BlockingConnectionPool, "disconnect"),
    (rc.AbstractConnection, "connect_check_health"),
    (rc.AbstractConnection, "disconnect"),
    (rc.AbstractConnection, "check_health"),
    (rac.ConnectionPool, "get_connection"),
    (rac.ConnectionPool, "release"),
    (rac.ConnectionPool, "make_connection"),
    (rac.ConnectionPool, "disconnect"),
    (rac.ConnectionPool, "aclose"),
    (rac.BlockingConnectionPool, "get_connection"),
    (rac.BlockingConnectionPool, "release"),
    (rac.AbstractConnection, "connect_check_health"),
    (rac.AbstractConnection, "disconnect"),
    (rac.AbstractConnection, "check_health"),
]


def _originals() -> dict[tuple[type, str], object]:
    return {(cls, name): vars(cls).get(name) for cls, name in PATCHED}


def test_restore_identity_and_idempotence(registry: PoolRegistry) -> None:
    before = _originals()
    assert all(v is not None for v in before.values())  # each class overrides what we patch
    assert shim.instrument()
    first = _originals()
    for key, value in first.items():
        assert value is not before[key], f"{key} not patched"
        assert getattr(value, WRAPPED_MARK) is before[key]
    assert shim.instrument()  # twice: nothing changes
    assert _originals() == first
    assert shim.is_instrumented()
    assert "redis" in poolmon.shims.instrumented()
    shim.uninstrument()
    after = _originals()
    for key, value in after.items():
        assert value is before[key], f"{key} not restored to the identical object"
    assert not shim.is_instrumented()
    shim.uninstrument()  # twice: harmless
    assert _originals() == before


def test_unsupported_version_warns_once_and_stays_off(
    registry: PoolRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = f"7.0.0.post{uuid.uuid4().int % 10**9}"  # unique: log_once is process-wide
    monkeypatch.setattr(shim, "_installed_version", lambda: fake)
    before = _originals()
    with caplog.at_level(logging.WARNING, logger="poolmon"):
        assert shim.instrument() is False
        assert shim.instrument() is False
    assert _originals() == before
    assert not shim.is_instrumented()
    warnings = [r for r in caplog.records if fake in r.getMessage()]
    assert len(warnings) == 1 and "outside the supported range" in warnings[0].getMessage()


# ---------------------------------------------------------------------------- behaviour


def _returned(call: Callable[..., object], *args: object) -> object:
    """What ``call(*args)`` returned, even from a method typed as returning nothing: the patched
    method must hand back exactly what the library's own does."""
    return call(*args)


async def _areturned(call: Callable[[], Awaitable[object]]) -> object:
    """The awaited result of ``call()`` (see :func:`_returned`)."""
    return await call()


def _sync_scenario(redis_url: str) -> list[Any]:
    """Return values, exceptions and blocking of a small workload, as comparable data."""
    out: list[Any] = []
    key = f"poolmon-test-{uuid.uuid4().hex[:12]}"
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.05)
    client = redis.Redis(connection_pool=pool)
    out.append(client.set(key, b"1"))
    out.append(client.incr(key))
    out.append(client.get(key))
    held = pool.get_connection()
    out.append(type(held).__name__)
    try:
        pool.get_connection()
    except Exception as exc:
        out.append((type(exc).__name__, str(exc)))
    # A second thread blocks until the release: same hand-over with and without poolmon.
    done = threading.Event()
    got: list[Any] = []

    def waiter() -> None:
        got.append(pool.get_connection() is held)
        done.set()

    pool.timeout = 20
    thread = threading.Thread(target=waiter)
    thread.start()
    out.append(done.wait(0.05))  # still blocked while held
    pool.release(held)
    thread.join(10)
    out.append(got)
    pool.release(held)
    fail_fast = redis.ConnectionPool.from_url(redis_url, max_connections=1)
    c1 = fail_fast.get_connection()
    try:
        fail_fast.get_connection()
    except Exception as exc:
        out.append((type(exc).__name__, str(exc)))
    out.append(_returned(fail_fast.release, c1))
    out.append(_returned(fail_fast.release, c1))  # a second release of the same one: ignored
    try:
        client.execute_command("NOSUCHCOMMAND")
    except Exception as exc:
        out.append(type(exc).__name__)
    out.append(client.delete(key))
    out.append(pool.disconnect())
    out.append(_returned(fail_fast.close))
    return out


async def _async_scenario(redis_url: str) -> list[Any]:
    out: list[Any] = []
    key = f"poolmon-test-{uuid.uuid4().hex[:12]}"
    pool = aredis.BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.05)
    client = aredis.Redis(connection_pool=pool)
    out.append(await client.set(key, b"1"))
    out.append(await client.incr(key))
    held = await pool.get_connection()
    try:
        await pool.get_connection()
    except Exception as exc:
        out.append((type(exc).__name__, str(exc)))
    out.append(await pool.release(held))
    fail_fast = aredis.ConnectionPool.from_url(redis_url, max_connections=1)
    c1 = await fail_fast.get_connection()
    try:
        await fail_fast.get_connection()
    except Exception as exc:
        out.append((type(exc).__name__, str(exc)))
    out.append(await fail_fast.release(c1))
    try:
        await fail_fast.release(c1)  # not in use any more: the asyncio pool raises
    except Exception as exc:
        out.append(type(exc).__name__)
    out.append(await client.delete(key))
    out.append(await _areturned(pool.aclose))
    out.append(await _areturned(fail_fast.aclose))
    return out


def _with_and_without(run: Callable[[], list[Any]], registry: PoolRegistry) -> None:
    plain = run()
    assert shim.instrument()
    try:
        instrumented = run()
    finally:
        shim.uninstrument()
    assert instrumented == plain
    assert registry.self_metrics.snapshot()["poolmon.shim.errors"] == {}


def test_behaviour_preserved_sync(registry: PoolRegistry, redis_url: str) -> None:
    _with_and_without(lambda: _sync_scenario(redis_url), registry)


def test_behaviour_preserved_async(registry: PoolRegistry, redis_url: str) -> None:
    _with_and_without(lambda: asyncio.run(_async_scenario(redis_url)), registry)


# ---------------------------------------------------------------------------- secrets


def test_credentials_in_no_output(
    registry: PoolRegistry, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    user = f"user{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    registry.subscribe(lambda e: lines.append(json.dumps(e.to_dict())))
    assert shim.instrument()
    try:
        with caplog.at_level(logging.DEBUG, logger="poolmon"):
            # The server has no such user: AUTH fails, the create error carries redis's message.
            url = redis_url.replace("redis://", f"redis://{user}:{secret}@")
            from_url = redis.Redis.from_url(url)
            with pytest.raises(redis.exceptions.AuthenticationError):
                from_url.ping()
            from_kwargs = redis.Redis(
                host="127.0.0.1", port=6379, username=user, password=secret, db=3
            )
            with pytest.raises(redis.exceptions.AuthenticationError):
                from_kwargs.ping()

            async def run() -> None:
                client = aredis.Redis.from_url(url)
                with pytest.raises(redis.exceptions.AuthenticationError):
                    await client.ping()
                await client.aclose()

            asyncio.run(run())
        names = [ledger.name for ledger in registry.ledgers()]
        snaps = registry.snapshot()
    finally:
        shim.uninstrument()  # (which also unregisters the pools it attached)
    assert "redis://127.0.0.1:6379/0" in names and "redis://127.0.0.1:6379/3" in names
    assert sum(s.errors["create_failed"] for s in snaps) >= 3
    failed = [json.loads(line) for line in lines if '"outcome":"error"' in line.replace(" ", "")]
    assert failed and all(e["message"] for e in failed)
    outputs = [*lines, *names, *(r.getMessage() for r in caplog.records), repr(snaps)]
    for text in outputs:
        assert secret not in text
        assert f"{user}:" not in text


# ---------------------------------------------------------------------------- absorbed failures


@pytest.mark.parametrize("lane_open", [True, False], ids=["hot-lane", "locked-path"])
def test_hook_failure_never_reaches_the_host(
    registry: PoolRegistry, redis_url: str, monkeypatch: pytest.MonkeyPatch, *, lane_open: bool
) -> None:
    def broken(self: PoolLedger, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("poolmon bug")

    assert shim.instrument()
    try:
        client = redis.Redis.from_url(redis_url)
        assert client.ping() is True  # the pool is attached: its ledger exists
        (ledger,) = registry.ledgers()
        if lane_open:
            ledger.lane = ExplodingLane()
            # A socket's link holds the lane it was opened under: new sockets get this one.
            client.connection_pool.disconnect()
        else:
            ledger.subscribe(lambda event: None)  # a subscriber closes the lane
            assert not ledger.lane.open
        monkeypatch.setattr(PoolLedger, "borrow", broken)
        monkeypatch.setattr(PoolLedger, "release", broken)
        key = f"poolmon-test-{uuid.uuid4().hex[:12]}"
        assert client.set(key, b"v") is True
        assert client.get(key) == b"v"
        assert client.delete(key) == 1
        client.close()
    finally:
        shim.uninstrument()
    errors = registry.self_metrics.snapshot()["poolmon.shim.errors"]
    assert errors.get("redis", 0) >= 4  # three borrows and at least the releases counted
