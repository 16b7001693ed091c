"""urllib3 shim against real loopback HTTP and HTTPS servers: exact event sequences per scenario,
each stream checked by the conformance checker (``poolmon spec validate``)."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import EmptyPoolError
from urllib3.util.retry import Retry

from poolmon.conformance import validate_stream
from poolmon.core.events import PoolEvent
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims import urllib3 as shim
from tests.support.http_servers import LoopbackCA, LoopbackServer

pytestmark = pytest.mark.integration


class EventLog:
    """Every event of every pool, as the JSON-line dicts a JsonlSink would write."""

    def __init__(self, registry: PoolRegistry) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.unsubscribe = registry.subscribe(self)

    def __call__(self, event: PoolEvent) -> None:
        with self._lock:
            self.events.append(event.to_dict())

    def of(self, pool: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["pool"] == pool]

    def kinds(self, pool: str) -> list[str]:
        return [_short(e) for e in self.of(pool)]

    def assert_conformant(self) -> None:
        with self._lock:
            lines = [json.dumps(e) for e in self.events]
        assert validate_stream(lines) == []


def _short(event: dict[str, Any]) -> str:
    """``kind`` plus what distinguishes it: ``borrow:1``, ``evict:1:broken``, ``error:timeout``."""
    kind = event["kind"]
    if kind in ("create", "borrow", "return") and "conn" in event:
        return f"{kind}:{event['conn']}" + (":queued" if event.get("queued") else "")
    if kind == "evict":
        return f"evict:{event['conn']}:{event['reason']}"
    if kind == "error":
        return f"error:{event['error_type']}:{event['phase']}"
    if kind == "create":
        return "create:failed"
    return str(kind)


@pytest.fixture
def log(registry: PoolRegistry) -> Iterator[EventLog]:
    shim.instrument(registry=registry)
    events = EventLog(registry)
    try:
        yield events
    finally:
        events.unsubscribe()
        shim.uninstrument()


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def ca() -> Iterator[LoopbackCA]:
    authority = LoopbackCA()
    yield authority
    authority.cleanup()


@pytest.fixture(scope="module")
def tls_server(ca: LoopbackCA) -> Iterator[LoopbackServer]:
    srv = LoopbackServer(ca.server_context())
    yield srv
    srv.close()


def _ledger(registry: PoolRegistry, name: str) -> PoolLedger:
    ledger = registry.get(name)
    assert ledger is not None, f"no pool {name!r} in {[lg.name for lg in registry.ledgers()]}"
    return ledger


def _poll(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_normal_requests_reuse_one_connection(
    scheme: str,
    registry: PoolRegistry,
    log: EventLog,
    server: LoopbackServer,
    tls_server: LoopbackServer,
    ca: LoopbackCA,
) -> None:
    srv = server if scheme == "http" else tls_server
    pool: urllib3.HTTPConnectionPool
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(srv.host, srv.port, maxsize=2, ca_certs=ca.ca_file)
    else:
        pool = urllib3.HTTPConnectionPool(srv.host, srv.port, maxsize=2)
    name = f"{scheme}://127.0.0.1:{srv.port}"
    # Known (at zero) before the first request.
    assert _ledger(registry, name).snapshot().evictions["broken"] == 0
    for _ in range(3):
        assert pool.request("GET", "/ok").data == b"ok"
    assert log.kinds(name) == [
        "open",
        "create:1",
        "borrow:1",
        "return:1",
        "borrow:1",
        "return:1",
        "borrow:1",
        "return:1",
    ]
    snap = _ledger(registry, name).snapshot()
    assert (snap.idle, snap.used, snap.pending, snap.max, snap.idle_max) == (1, 0, 0, None, 2)
    assert snap.wait_time.count == 3 and snap.use_time.count == 3
    assert snap.identity.system == "http" and snap.identity.server_port == srv.port
    pool.close()
    assert log.kinds(name)[-2:] == ["evict:1:pool_closed", "close"]
    log.assert_conformant()


def test_block_true_waits_times_out_and_hands_over(
    registry: PoolRegistry, log: EventLog, server: LoopbackServer
) -> None:
    pool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1, block=True)
    name = f"http://127.0.0.1:{server.port}"
    ledger = _ledger(registry, name)
    assert ledger.max_size == 1
    holder_result: list[int] = []
    gate = f"block-{uuid.uuid4().hex[:8]}"  # gates stay open: one per run on the shared server
    holder = threading.Thread(
        target=lambda: holder_result.append(pool.request("GET", f"/gate/{gate}").status)
    )
    holder.start()
    server.wait_at_gate(gate, 1)

    # Fail-fast refusal (timeout 0): exhausted, no wait.
    with pytest.raises(EmptyPoolError):
        pool._get_conn(timeout=0)
    # A bounded wait that expires: wait, then a timeout error resolving it.
    with pytest.raises(EmptyPoolError):
        pool._get_conn(timeout=0.05)
    assert ledger.snapshot().pending == 0

    # A caller that queues and is served when the holder returns its connection.
    waiter_result: list[bytes] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(pool.request("GET", "/ok").data))
    waiter.start()
    _poll(lambda: ledger.snapshot().pending == 1, "the waiter to queue")
    server.open_gate(gate)
    holder.join(10)
    waiter.join(10)
    assert holder_result == [200] and waiter_result == [b"ok"]
    assert log.kinds(name) == [
        "open",
        "create:1",
        "borrow:1",
        "error:exhausted:borrow",
        "wait",
        "error:timeout:wait",
        "wait",
        "return:1",
        "borrow:1:queued",
        "return:1",
    ]
    snap = ledger.snapshot()
    assert (snap.used, snap.pending, snap.errors["timeout"], snap.errors["exhausted"]) == (
        0,
        0,
        1,
        1,
    )
    assert snap.wait_time.count == 2  # the first borrow and the queued one
    log.assert_conformant()


def test_server_closing_connections_evicts_them_as_broken(
    registry: PoolRegistry, log: EventLog, server: LoopbackServer
) -> None:
    pool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1)
    name = f"http://127.0.0.1:{server.port}"
    # 1. The server answers "Connection: close": the socket is gone while still borrowed.
    assert pool.request("GET", "/close").data == b"closing"
    # 2. The server drops an idle keep-alive connection: found dead at the next borrow.
    assert pool.request("GET", "/ok").data == b"ok"
    idle_conn = pool.pool.queue[-1]  # type: ignore[union-attr]
    assert server.drop_connections() >= 1
    _poll(lambda: not idle_conn.is_connected, "the client to see the server's FIN")
    assert pool.request("GET", "/ok").data == b"ok"
    assert log.kinds(name) == [
        "open",
        "create:1",
        "borrow:1",
        "evict:1:broken",
        "create:2",
        "borrow:2",
        "return:2",
        "evict:2:broken",
        "create:3",
        "borrow:3",
        "return:3",
    ]
    snap = _ledger(registry, name).snapshot()
    assert (snap.idle, snap.used, snap.evictions["broken"], snap.lifetime.count) == (1, 0, 2, 2)
    log.assert_conformant()


def test_pool_full_discards_are_overflow_evictions(
    registry: PoolRegistry,
    log: EventLog,
    server: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1)
    name = f"http://127.0.0.1:{server.port}"
    gate = f"full-{uuid.uuid4().hex[:8]}"  # gates stay open: one per run on the shared server
    holder = threading.Thread(target=lambda: pool.request("GET", f"/gate/{gate}"))
    holder.start()
    server.wait_at_gate(gate, 1)
    # The only slot is taken: a non-blocking pool opens a second connection...
    assert pool.request("GET", "/ok").data == b"ok"
    assert _ledger(registry, name).snapshot().idle == 1
    # ...so the holder's connection comes back to a full queue and is discarded.
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        server.open_gate(gate)
        holder.join(10)
    assert any("Connection pool is full" in r.getMessage() for r in caplog.records)
    assert log.kinds(name) == [
        "open",
        "create:1",
        "borrow:1",
        "create:2",
        "borrow:2",
        "return:2",
        "return:1",
        "evict:1:overflow",
    ]
    snap = _ledger(registry, name).snapshot()
    assert (snap.idle, snap.used, snap.evictions["overflow"]) == (1, 0, 1)
    log.assert_conformant()


def test_pool_manager_dropping_a_host_pool_evicts_its_connections(
    registry: PoolRegistry, log: EventLog, server: LoopbackServer
) -> None:
    other = LoopbackServer()
    try:
        manager = urllib3.PoolManager(num_pools=1)
        assert manager.request("GET", f"{server.url}/ok").data == b"ok"
        first = f"http://127.0.0.1:{server.port}"
        assert registry.get(first) is not None
        # A second host pushes the first pool out of the manager's container, unclosed.
        assert manager.request("GET", f"{other.url}/ok").data == b"ok"
        gc.collect()
        assert log.kinds(first) == [
            "open",
            "create:1",
            "borrow:1",
            "return:1",
            "evict:1:pool_closed",
            "close",
        ]
        assert registry.get(first) is None  # the pool is gone, so is its ledger
        second = f"http://127.0.0.1:{other.port}"
        assert _ledger(registry, second).snapshot().idle == 1
        manager.clear()
        gc.collect()
        assert log.kinds(second)[-2:] == ["evict:1:pool_closed", "close"]
    finally:
        other.close()
    log.assert_conformant()


def test_redirects_and_retries_borrow_once_per_attempt(
    registry: PoolRegistry, log: EventLog, server: LoopbackServer
) -> None:
    pool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1)
    name = f"http://127.0.0.1:{server.port}"
    seen = len(server.requests)
    assert pool.request("GET", "/redirect/3").data == b"ok"
    retry = Retry(total=3, status_forcelist=[503], backoff_factor=0)
    key = f"scenario-{uuid.uuid4().hex[:8]}"  # the module's server outlives this test
    assert pool.request("GET", f"/flaky/{key}/2", retries=retry).data == b"recovered"
    attempts = len(server.requests) - seen
    assert attempts == 4 + 3
    borrows = [k for k in log.kinds(name) if k.startswith("borrow")]
    returns = [k for k in log.kinds(name) if k.startswith("return")]
    assert len(borrows) == len(returns) == attempts
    snap = _ledger(registry, name).snapshot()
    assert (snap.used, snap.wait_time.count, snap.use_time.count) == (0, attempts, attempts)
    log.assert_conformant()


def test_failed_connects_are_create_errors(registry: PoolRegistry, log: EventLog) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        pool.request("GET", "/", retries=Retry(total=2, backoff_factor=0))
    name = f"http://127.0.0.1:{port}"
    assert log.kinds(name) == ["open", "create:failed", "create:failed", "create:failed"]
    snap = _ledger(registry, name).snapshot()
    assert (snap.errors["create_failed"], snap.create_time["error"].count, snap.used) == (3, 3, 0)
    log.assert_conformant()
