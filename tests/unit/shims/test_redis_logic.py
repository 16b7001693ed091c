"""Unit tests of the redis shim's logic with fakes: identity, eviction reasons, re-entry guard,
attach failures, built-in metrics detection. No Redis server needed."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import pytest

from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry
from poolmon.shims import _redis_common as common
from poolmon.shims._patch import PatchSet


class FakePool:
    def __init__(self, connection_class: type, **kwargs: Any) -> None:
        self.connection_class = connection_class
        self.connection_kwargs = kwargs
        self.max_connections = 7
        self._available_connections: list[Any] = []
        self._in_use_connections: set[Any] = set()


class Connection:
    pass


class SSLConnection:
    pass


class UnixDomainSocketConnection:
    pass


def test_identity_drops_credentials_and_is_stable() -> None:
    pool = FakePool(
        Connection,
        host="cache.internal",
        port=6380,
        db=2,
        username="app",
        password="hunter2-secret",
        credential_provider=object(),
    )
    first = common.identity_for_pool(pool)
    again = common.identity_for_pool(pool)
    assert first.name == again.name == "redis://cache.internal:6380/2"
    assert (first.system, first.server_address, first.server_port, first.namespace) == (
        "redis",
        "cache.internal",
        6380,
        "2",
    )
    assert "hunter2" not in repr(first) and "app" not in first.name
    # The password is remembered: any later text that echoes it is scrubbed.
    assert "hunter2-secret" not in scrub("AUTH failed for hunter2-secret")


def test_identity_tls_and_unix_socket() -> None:
    tls = common.identity_for_pool(FakePool(SSLConnection, host="h", port=6379, db=0))
    assert tls.name == "rediss://h:6379/0"
    unix = common.identity_for_pool(
        FakePool(UnixDomainSocketConnection, path="/run/redis.sock", db=1)
    )
    assert unix.name == "redis+unix:///run/redis.sock?db=1" and unix.server_port is None


@pytest.mark.parametrize(
    ("args", "error", "health", "closing", "in_except", "expected"),
    [
        ((), None, False, None, False, "other"),
        ((), None, False, "pool_closed", True, "pool_closed"),
        ((), None, True, None, False, "failed_validation"),
        ((), OSError("x"), False, None, False, "broken"),
        ((OSError("x"),), None, False, None, False, "broken"),
        ((), None, False, None, True, "broken"),
    ],
)
def test_disconnect_reason(
    args: tuple[Any, ...],
    error: Any,
    *,
    health: bool,
    closing: str | None,
    in_except: bool,
    expected: str,
) -> None:
    token = common.CLOSING.set(closing)
    try:
        if in_except:
            try:
                raise ConnectionError("socket closed")
            except ConnectionError:
                got = common.disconnect_reason(args, error, health)
        else:
            got = common.disconnect_reason(args, error, health)
    finally:
        common.CLOSING.reset(token)
    assert got == expected


def test_shadowed_guard_outermost_wrapper_records() -> None:
    class Base:
        def release(self) -> str:
            return "base"

    class Blocking(Base):
        def release(self) -> str:
            return "blocking+" + super().release()

    class UserPool(Base):  # overrides without a poolmon wrapper of its own
        def release(self) -> str:
            return "user+" + super().release()

    class UserBlocking(Blocking):
        pass

    patches = PatchSet("test")
    patches.wrap(Base, "release", lambda f: lambda self: f(self))
    patches.wrap(Blocking, "release", lambda f: lambda self: f(self))
    base_guard = common.Shadowed(Base, "release")
    blocking_guard = common.Shadowed(Blocking, "release")
    try:
        # Reached through Blocking's wrapper: the base wrapper must pass through.
        assert base_guard(Blocking) is True
        assert base_guard(UserBlocking) is True
        # A user override without a poolmon wrapper: the base wrapper is the one that records.
        assert base_guard(UserPool) is False
        assert blocking_guard(UserBlocking) is False
        assert UserBlocking().release() == "blocking+base"
    finally:
        patches.restore()


def _use_registry(monkeypatch: pytest.MonkeyPatch, registry: PoolRegistry) -> None:
    """What ``instrument(registry)`` sets on the shim's state, undone after the test."""
    monkeypatch.setattr(common.STATE, "registry", registry)
    monkeypatch.setattr(common.STATE, "explicit_registry", True)


def test_attach_failure_is_absorbed_and_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = PoolRegistry()
    _use_registry(monkeypatch, registry)
    calls = []

    def boom(pool: Any) -> Any:
        calls.append(pool)
        raise ValueError("cannot build identity")

    monkeypatch.setattr(common, "identity_for_pool", boom)
    pool = FakePool(Connection, host="h")
    assert common.attach(pool) is None
    assert common.attach(pool) is None  # marked: the broken pool is not retried per call
    assert len(calls) == 1
    assert registry.self_metrics.snapshot()["poolmon.shim.errors"] == {"redis": 1}
    assert registry.ledgers() == ()


def test_attach_adopts_idle_connected_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = PoolRegistry()
    _use_registry(monkeypatch, registry)

    class Conn:
        def __init__(self, *, connected: bool) -> None:
            self.is_connected = connected

        def connect_check_health(self) -> None: ...

    idle, cold, lent = Conn(connected=True), Conn(connected=False), Conn(connected=True)
    pool = FakePool(Connection, host="h", port=1, db=0)
    pool._available_connections = [idle, cold]
    pool._in_use_connections = {lent}
    ledger = common.attach(pool)
    assert ledger is not None and ledger.name == "redis://h:1/0"
    assert idle._poolmon_id == 1 and cold._poolmon_id is None  # type: ignore[attr-defined]
    assert lent._poolmon_id is None  # type: ignore[attr-defined]  # adopted at its next borrow
    # The socket's link is a named record: the lane the hooks write, its id, who made it.
    link = idle._poolmon_sock  # type: ignore[attr-defined]
    assert (link.lane, link.cid, link.key) == (ledger.lane, 1, ledger)
    assert cold._poolmon_sock is None and lent._poolmon_sock is None  # type: ignore[attr-defined]
    assert ledger.snapshot().idle == 1
    assert common.attach(pool) is ledger
    common.STATE.pools.discard(pool)


def test_builtin_metrics_detection_follows_redis_observability() -> None:
    pytest.importorskip("redis.observability")
    from redis.observability.config import MetricGroup, OTelConfig
    from redis.observability.providers import (
        OTelProviderManager,
        get_observability_instance,
        reset_observability_instance,
    )

    assert common.builtin_pool_metrics_enabled() is False
    instance = get_observability_instance()
    try:
        # Set the manager directly: init() would need a global MeterProvider.
        instance._provider_manager = OTelProviderManager(OTelConfig())
        assert common.builtin_pool_metrics_enabled() is True
        instance._provider_manager = OTelProviderManager(
            OTelConfig(metric_groups=[MetricGroup.COMMAND])
        )
        assert common.builtin_pool_metrics_enabled() is False
    finally:
        reset_observability_instance()


# ------------------------------------------------------------------ the shapes the hooks rely on


def _body(function: Any) -> list[str]:
    """The statements of ``function`` as installed, docstring left out, unparsed."""
    source = textwrap.dedent(inspect.getsource(function))
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return [ast.unparse(stmt) for stmt in body]


@pytest.mark.parametrize("module_name", ["redis.connection", "redis.asyncio.connection"])
def test_installed_redis_has_the_shapes_the_hooks_answer_for(module_name: str) -> None:
    """The wrappers answer for ``check_health`` without a health_check_interval and (compiled)
    for ``connect_check_health`` on a connected socket without running them: true only while
    the installed release begins them as below (every release in SUPPORTED does)."""
    import importlib

    conn = importlib.import_module(module_name).AbstractConnection
    check = _body(conn.check_health)
    assert len(check) == 1 and check[0].startswith("if self.health_check_interval and "), check
    if module_name == "redis.connection":  # the compiled skip is on the sync class only
        first = _body(conn.connect_check_health)[0]
        assert first == "if self._sock:\n    return", first
