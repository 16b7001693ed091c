"""Patching discipline of the psycopg and psycopg2 shims, and their bookkeeping rules (no server).

A fake connection class stands in for psycopg's (unit tests of logic only): psycopg_pool takes
``connection_class=``, so the real pool code runs unchanged around it.
"""

from __future__ import annotations

import ast
import inspect
import logging
import textwrap
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import psycopg2.pool as pg2pool
import psycopg_pool
import pytest
from psycopg_pool import base, null_pool, null_pool_async, pool, pool_async

from poolmon.core.registry import PoolRegistry
from poolmon.shims import psycopg as pg_shim
from poolmon.shims import psycopg2 as pg2_shim
from poolmon.shims._patch import is_wrapped
from poolmon.shims._psycopg_common import LINK_ATTR, TRACKER_ATTR, KeyedPoolTracker, TrackingState
from poolmon.shims._psycopg_rules import UNKNOWN, close_reason, getconn_error_type, pool_identity
from tests.support.lanes import ExplodingLane

PSYCOPG_TARGETS: list[tuple[Any, str]] = [
    (cls, name)
    for cls in (pool.ConnectionPool, pool_async.AsyncConnectionPool)
    for name in (
        "_open",
        "_connect",
        "getconn",
        "_check_connection",
        "_close_connection",
        "run_task",
        "check_connection",
        "close",
        "resize",
    )
] + [
    (base.BasePool, "_check_pool_putconn"),
    (null_pool.NullConnectionPool, "resize"),
    (null_pool_async.AsyncNullConnectionPool, "resize"),
    (pool.WaitingClient, "wait"),
    (pool_async.WaitingClient, "wait"),
]
PSYCOPG2_TARGETS: list[tuple[Any, str]] = [
    (pg2pool.AbstractConnectionPool, n) for n in ("__init__", "_connect", "_closeall")
] + [(pg2pool.SimpleConnectionPool, "closeall"), (pg2pool.PoolError, "__init__")]

CASES = [(pg_shim, PSYCOPG_TARGETS), (pg2_shim, PSYCOPG2_TARGETS)]


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    pg_shim.uninstrument()
    pg2_shim.uninstrument()


def _originals(targets: list[tuple[Any, str]]) -> list[Any]:
    # An inherited attribute (PoolError.__init__) is patched as the class's own, then removed.
    return [vars(owner).get(name, getattr(owner, name)) for owner, name in targets]


@pytest.mark.parametrize(("shim", "targets"), CASES)
def test_uninstrument_restores_identical_originals(
    registry: PoolRegistry, shim: ModuleType, targets: list[tuple[Any, str]]
) -> None:
    before = _originals(targets)
    assert shim.instrument(registry)
    during = _originals(targets)
    assert all(is_wrapped(obj) for obj in during)
    assert all(a is not b for a, b in zip(before, during, strict=True))
    shim.uninstrument()
    after = _originals(targets)
    assert all(a is b for a, b in zip(before, after, strict=True))
    assert not shim.is_instrumented()


@pytest.mark.parametrize(("shim", "targets"), CASES)
def test_instrument_twice_changes_nothing(
    registry: PoolRegistry, shim: ModuleType, targets: list[tuple[Any, str]]
) -> None:
    assert shim.instrument(registry)
    first = _originals(targets)
    assert shim.instrument(registry)
    assert all(a is b for a, b in zip(first, _originals(targets), strict=True))


@pytest.mark.parametrize(("shim", "targets"), CASES)
def test_unsupported_version_warns_once_and_stays_off(
    registry: PoolRegistry,
    shim: ModuleType,
    targets: list[tuple[Any, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = _originals(targets)
    with caplog.at_level(logging.WARNING, logger="poolmon"):
        assert shim.instrument(registry, version="99.1.7") is False
        assert shim.instrument(registry, version="99.1.7") is False
    warnings = [r for r in caplog.records if "99.1.7" in r.getMessage()]
    assert len(warnings) == 1
    assert "outside the supported range" in warnings[0].getMessage()
    assert all(a is b for a, b in zip(before, _originals(targets), strict=True))
    assert not shim.is_instrumented()


# ------------------------------------------------------------------ a fake psycopg connection


class FakeConn:
    """Enough of psycopg.Connection for the pool's own code paths (idle status, close)."""

    def __init__(self) -> None:
        self.pgconn = SimpleNamespace(transaction_status=0)  # IDLE
        self.closed = False
        self.broken = False

    @classmethod
    def connect(cls, conninfo: str, **kwargs: Any) -> FakeConn:
        return cls()

    def close(self) -> None:
        self.closed = True
        self.pgconn.transaction_status = 4  # UNKNOWN


def _fake_pool(**kw: Any) -> psycopg_pool.ConnectionPool[Any]:
    kw.setdefault("min_size", 1)
    return psycopg_pool.ConnectionPool(
        "host=db.internal dbname=app", connection_class=FakeConn, open=False, **kw
    )


@pytest.mark.parametrize("lane_open", [True, False], ids=["hot-lane", "locked-path"])
def test_hook_failures_are_absorbed_and_counted(
    registry: PoolRegistry, monkeypatch: pytest.MonkeyPatch, *, lane_open: bool
) -> None:
    assert pg_shim.instrument(registry)
    with _fake_pool() as p:
        p.wait()
        tracker = p.__dict__[TRACKER_ATTR]

        def boom(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("ledger exploded")

        monkeypatch.setattr(tracker, "borrow", boom)
        monkeypatch.setattr(tracker, "release", boom)
        if lane_open:
            exploding = ExplodingLane()
            monkeypatch.setattr(tracker, "lane", exploding)
            # The compiled hooks read the lane from the pool's link and the connection's tag: an
            # ExplodingLane in the link is not theirs to write, and a retired lane in the tags is
            # stale, so they hand the calls to the Python wrappers, which explode.
            monkeypatch.setattr(p, LINK_ATTR, (tracker, exploding, p._pool))
            monkeypatch.setattr(tracker.ledger.lane, "retired", True)
        else:
            tracker.ledger.subscribe(lambda event: None)  # a subscriber closes the lane
            assert not tracker.lane.open
        conn = p.getconn()  # the host sees a normal connection...
        assert isinstance(conn, FakeConn)
        p.putconn(conn)  # ...and a normal return
        assert p.get_stats()["pool_available"] == 1
    assert registry.self_metrics.snapshot()["poolmon.shim.errors"] == {"psycopg": 2}


def test_fake_pool_cycle_counts(registry: PoolRegistry) -> None:
    assert pg_shim.instrument(registry)
    with _fake_pool(max_size=2) as p:
        p.wait()
        for _ in range(50):
            p.putconn(p.getconn())
        snap = p.__dict__[TRACKER_ATTR].ledger.snapshot()
        assert (snap.idle, snap.used, snap.wait_time.count, snap.use_time.count) == (1, 0, 50, 50)
    assert registry.snapshot()[0].evictions["pool_closed"] == 1


def test_uninstrument_forgets_tracked_pools(registry: PoolRegistry) -> None:
    assert pg_shim.instrument(registry)
    with _fake_pool() as p:
        p.wait()
        assert TRACKER_ATTR in p.__dict__ and len(registry.snapshot()) == 1
        lane = p.__dict__[TRACKER_ATTR].lane
        link = p.__dict__[LINK_ATTR]
        assert (link.key, link.lane, link.items) == (p.__dict__[TRACKER_ATTR], lane, p._pool)
        pg_shim.uninstrument()
        assert TRACKER_ATTR not in p.__dict__ and LINK_ATTR not in p.__dict__
        assert registry.snapshot() == []
        assert lane.retired  # tags still naming it are stale for the compiled hooks
        p.putconn(p.getconn())  # the pool works on, unobserved


# ------------------------------------------------------------------ rules


def test_close_reason_from_the_calling_method() -> None:
    p = SimpleNamespace(_closed=False, _drained_at=0.0)
    conn = SimpleNamespace(_created_at=10.0, pgconn=SimpleNamespace(transaction_status=0))
    assert close_reason(p, conn, "_shrink_pool") == "idle_timeout"
    assert close_reason(p, conn, "_reset_connection") == "reset_failed"
    assert close_reason(p, conn, "_return_connection") == "max_lifetime"
    assert close_reason(p, conn, "check") == "max_lifetime"
    assert close_reason(p, conn, "drain") == "pool_closed"
    assert close_reason(p, conn, "_add_to_pool") == "overflow"  # the null pool's return
    lost = SimpleNamespace(_created_at=10.0, pgconn=SimpleNamespace(transaction_status=UNKNOWN))
    assert close_reason(p, lost, "_maybe_close_connection") == "broken"  # instead of dropping it
    assert close_reason(p, conn, "somewhere_else") == "other"
    p._drained_at = 20.0  # opened before a drain(): closed on return because of the drain
    assert close_reason(p, conn, "_return_connection") == "pool_closed"
    p._closed = True
    assert close_reason(p, conn, "_maybe_close_connection") == "pool_closed"


def test_getconn_error_types() -> None:
    assert getconn_error_type(psycopg_pool.PoolTimeout("x"), queued=True) == "timeout"
    assert getconn_error_type(psycopg_pool.TooManyRequests("x"), queued=False) == "exhausted"
    assert getconn_error_type(psycopg_pool.PoolClosed("x"), queued=True) == "pool_closed"
    assert getconn_error_type(KeyboardInterrupt(), queued=True) == "cancelled"
    assert getconn_error_type(ValueError("x"), queued=True) == "other"
    assert (
        getconn_error_type(ValueError("x"), queued=False) is None
    )  # a connect failure: counted there


def test_identity_drops_credentials_and_auto_names() -> None:
    fake = SimpleNamespace(
        conninfo="host=db.internal port=6432 dbname=app user=u password=pw-123",
        kwargs={"password": "kw-456"},
        name="pool-7",
    )
    ident = pool_identity(fake, "3.3.3")
    assert ident.name == "postgresql://db.internal:6432/app"
    assert "pw-123" not in repr(ident) and "kw-456" not in repr(ident)
    fake.name = "orders"
    assert pool_identity(fake, None).name == "orders"


def test_keyed_tracker_never_confuses_connections(registry: PoolRegistry) -> None:
    from poolmon.core.identity import PoolIdentity

    state = TrackingState(
        "t", identity=lambda p: PoolIdentity("k"), limits=lambda p: (1, 1, 1), idle=lambda p: []
    )
    tracker = KeyedPoolTracker(registry.register(PoolIdentity("k")), state)
    a, b = object(), object()
    ca = tracker.created(a, tracker.now())
    assert tracker.known_id(a) == ca and tracker.known_id(b) is None
    tracker.discard(a, ca, "overflow")
    assert tracker.known_id(a) is None
    assert tracker.conn_id(b) != ca  # ids are never reused


# ------------------------------------------------------------------ the shapes the hooks rely on


def _method_body(cls: type, name: str) -> list[ast.stmt]:
    """The statements of ``cls.name`` as installed (docstring left out)."""
    source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
    (func,) = ast.parse(source).body
    assert isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body


def test_installed_psycopg_pool_has_the_shapes_the_hooks_answer_for() -> None:
    """The return hook answers for ``_check_pool_putconn`` and the ``_check_connection`` wrapper
    for its no-check case without running them: true only while the installed release has the
    shapes below (every release in SUPPORTED does). A release that changes them fails here."""
    for cls in (pool.ConnectionPool, pool_async.AsyncConnectionPool):
        first = ast.unparse(_method_body(cls, "putconn")[0])
        assert first == "self._check_pool_putconn(conn)", cls
        check = ast.unparse(_method_body(cls, "_check_connection")[0])
        assert check == "if not self._check:\n    return", cls
    body = [ast.unparse(stmt) for stmt in _method_body(base.BasePool, "_check_pool_putconn")]
    assert body[0] == "if (pool := getattr(conn, '_pool', None)) is self:\n    return" or (
        body[:2] == ["pool = getattr(conn, '_pool', None)", "if pool is self:\n    return"]
    ), body[:2]  # 3.2.7 and later; 3.2.0-3.2.6
