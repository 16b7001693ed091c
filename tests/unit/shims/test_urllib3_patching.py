"""urllib3 shim logic without a server: patch symmetry, version gating, identity, absorbed failures.

Connections get a real connected socket from ``socket.socketpair()`` so urllib3's dropped-connection
check sees them alive; no network service is needed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
import urllib3.connection as connection
import urllib3.connectionpool as connectionpool
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

from poolmon.core.compiled import new_link
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims import urllib3 as shim
from poolmon.shims._urllib3_state import LINK, POOL_STATE, identity_for_pool
from tests.support.lanes import ExplodingLane

PATCHED = [
    (connectionpool.HTTPConnectionPool, "__init__"),
    (connectionpool.HTTPConnectionPool, "_get_conn"),
    (connectionpool.HTTPConnectionPool, "_put_conn"),
    (connectionpool.HTTPConnectionPool, "close"),
    (connection.HTTPConnection, "connect"),
    (connection.HTTPSConnection, "connect"),
    (connection.HTTPConnection, "close"),
]


@pytest.fixture
def instrumented(registry: PoolRegistry) -> Iterator[PoolRegistry]:
    shim.instrument(registry=registry)
    try:
        yield registry
    finally:
        shim.uninstrument()


def _with_socket(pool: HTTPConnectionPool) -> tuple[connection.HTTPConnection, socket.socket]:
    """Borrow a connection object and give it a live socket, as ``connect()`` would."""
    # _get_conn() is typed as the BaseHTTPConnection protocol; an HTTPConnectionPool makes
    # HTTPConnection objects (its ConnectionCls), whose private _new_conn is swapped below.
    conn = cast(connection.HTTPConnection, pool._get_conn())
    ours, theirs = socket.socketpair()
    original_new_conn = conn._new_conn
    conn._new_conn = lambda: ours  # type: ignore[method-assign]
    conn.connect()
    conn._new_conn = original_new_conn  # type: ignore[method-assign]
    return conn, theirs


def test_uninstrument_restores_every_original_by_identity() -> None:
    before = {(cls, name): cls.__dict__[name] for cls, name in PATCHED}
    assert shim.instrument(registry=PoolRegistry())
    try:
        for cls, name in PATCHED:
            assert cls.__dict__[name] is not before[(cls, name)], f"{cls.__name__}.{name}"
        patched = {(cls, name): cls.__dict__[name] for cls, name in PATCHED}
        assert shim.instrument() is True  # twice: a no-op
        assert {(c, n): c.__dict__[n] for c, n in PATCHED} == patched
        assert shim.is_instrumented()
    finally:
        shim.uninstrument()
    for cls, name in PATCHED:
        assert cls.__dict__[name] is before[(cls, name)], f"{cls.__name__}.{name}"
    assert "_get_conn" not in HTTPSConnectionPool.__dict__  # inherited, never given a patch
    assert not shim.is_instrumented()
    shim.uninstrument()  # twice: harmless


def test_unsupported_version_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from poolmon.shims import _version

    monkeypatch.setattr(_version, "installed_version", lambda dist: "1.26.18")
    before = connectionpool.HTTPConnectionPool.__dict__["_get_conn"]
    assert shim.instrument(registry=PoolRegistry()) is False
    assert connectionpool.HTTPConnectionPool.__dict__["_get_conn"] is before
    assert not shim.is_instrumented()
    assert "outside the supported range" in caplog.text


def test_identity_is_origin_only() -> None:
    pool = HTTPConnectionPool("::1", 8080)
    ident = identity_for_pool(pool)
    assert ident.name == "http://[::1]:8080" and ident.system == "http"
    tls = HTTPSConnectionPool("example.test")
    assert identity_for_pool(tls).name == "https://example.test:443"


def test_limits_follow_blocking_mode(instrumented: PoolRegistry) -> None:
    pools = [  # kept referenced: a collected pool leaves the registry
        HTTPConnectionPool("127.0.0.1", 9, maxsize=4),
        HTTPConnectionPool("127.0.0.2", 9, maxsize=3, block=True),
    ]
    ledgers = {lg.name: lg for lg in instrumented.ledgers()}
    free, blocking = ledgers["http://127.0.0.1:9"], ledgers["http://127.0.0.2:9"]
    assert (free.max_size, free.idle_max) == (None, 4)
    assert (blocking.max_size, blocking.idle_max) == (3, 3)
    del pools
    import gc

    gc.collect()
    assert instrumented.ledgers() == ()


def test_cycle_and_reconnect_get_new_ids(instrumented: PoolRegistry) -> None:
    pool = HTTPConnectionPool("127.0.0.1", 9, maxsize=1)
    conn, peer = _with_socket(pool)
    ledger = instrumented.ledgers()[0]
    assert ledger.connections() == {"idle": [], "used": [1]}
    pool._put_conn(conn)
    assert ledger.connections() == {"idle": [1], "used": []}
    assert pool._get_conn() is conn
    conn.close()  # closed by its holder: evicted, reason other (not one of urllib3's paths)
    assert ledger.snapshot().evictions["other"] == 1
    peer.close()
    ours, peer2 = socket.socketpair()
    conn._new_conn = lambda: ours  # type: ignore[method-assign]
    conn.connect()  # a reconnect within the same borrow: create + borrow of a new id
    assert ledger.connections() == {"idle": [], "used": [2]}
    pool._put_conn(conn)
    pool.close()
    snap = ledger.snapshot()
    assert (snap.evictions["pool_closed"], snap.closed) == (1, True)
    peer2.close()


def test_connections_opened_before_instrumentation_are_adopted(registry: PoolRegistry) -> None:
    pool = HTTPConnectionPool("127.0.0.1", 9, maxsize=1)
    conn, peer = _with_socket(pool)
    pool._put_conn(conn)
    shim.instrument(registry=registry)
    try:
        assert pool._get_conn() is conn
        (ledger,) = registry.ledgers()
        assert ledger.connections() == {"idle": [], "used": [1]}
        assert LINK in conn.__dict__
        pool._put_conn(conn)
        assert ledger.snapshot().use_time.count == 1
    finally:
        shim.uninstrument()
        peer.close()


@pytest.mark.parametrize("lane_open", [True, False], ids=["hot-lane", "locked-path"])
def test_a_failing_recorder_never_reaches_the_application(
    instrumented: PoolRegistry, monkeypatch: pytest.MonkeyPatch, *, lane_open: bool
) -> None:
    pool = HTTPConnectionPool("127.0.0.1", 9, maxsize=1)
    conn, peer = _with_socket(pool)
    pool._put_conn(conn)

    def broken(self: PoolLedger, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("recorder bug")

    # Break the ledger class for new lookups (evict), and what borrow and return go through: with
    # the lane open, the lane itself (the ledger's, and the link's: a lane the compiled hooks do
    # not take, so they hand over to Python); with it closed, the pool state's bound ledger
    # methods (the locked path).
    monkeypatch.setattr(PoolLedger, "evict", broken)
    link = conn.__dict__[LINK]
    state = link.key
    ledger = state.ledger
    lane = ledger.lane
    if lane_open:
        ledger.lane = ExplodingLane()
        conn.__dict__[LINK] = new_link(ledger.lane, link.cid, key=state)
    else:
        ledger.subscribe(lambda event: None)  # a subscriber closes the lane
        assert not link.lane.open
        state.borrow = state.release = lambda *a, **k: broken(ledger)
    assert pool._get_conn() is conn
    pool._put_conn(conn)
    pool._get_conn().close()
    errors = instrumented.self_metrics.snapshot()["poolmon.shim.errors"]
    assert errors["urllib3"] == 4  # borrow, return, borrow, evict: each absorbed
    ledger.lane = lane
    peer.close()


def test_a_connection_link_is_a_named_record(instrumented: PoolRegistry) -> None:
    pool = HTTPConnectionPool("127.0.0.1", 9, maxsize=1)
    conn, peer = _with_socket(pool)
    (ledger,) = instrumented.ledgers()
    link = conn.__dict__[LINK]
    assert (link.lane, link.cid, link.key) == (ledger.lane, 1, pool.__dict__[POOL_STATE])
    assert link.items is None and link.table is None
    pool._put_conn(conn)
    conn.close()  # evicted: the link goes with the socket
    assert LINK not in conn.__dict__
    peer.close()


def test_opentelemetry_instrumentor_turns_the_shim_on_and_off() -> None:
    from importlib.metadata import entry_points

    from opentelemetry.sdk.metrics import MeterProvider

    from poolmon.shims.instrumentors import Urllib3PoolInstrumentor

    names = {ep.name: ep.value for ep in entry_points(group="opentelemetry_instrumentor")}
    assert names["poolmon_urllib3"] == "poolmon.shims.instrumentors:Urllib3PoolInstrumentor"
    instrumentor = Urllib3PoolInstrumentor()
    assert list(instrumentor.instrumentation_dependencies()) == ["urllib3 >=2.0,<3"]
    provider = MeterProvider()
    instrumentor.instrument(meter_provider=provider)
    try:
        assert shim.is_instrumented()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert not shim.is_instrumented()
