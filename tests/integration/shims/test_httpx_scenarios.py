"""httpcore shim (httpx) against real loopback servers: an HTTPS/1.1 server (tests.support.
http_servers) and hypercorn speaking HTTP/2 over TLS (tests.support.h2_server), both with a
trustme CA. Exact event sequences per scenario; every stream passes the conformance checker."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from poolmon.conformance import validate_stream
from poolmon.core.events import PoolEvent
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims import httpcore as shim
from tests.support.h2_server import H2Server, serve_h2
from tests.support.http_servers import LoopbackCA, LoopbackServer

pytestmark = pytest.mark.integration


class EventLog:
    """Every event of every pool, as the JSON-line dicts a JsonlSink would write."""

    def __init__(self, registry: PoolRegistry) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        registry.subscribe(self)

    def __call__(self, event: PoolEvent) -> None:
        with self._lock:
            self.events.append(event.to_dict())

    def kinds(self, pool: str) -> list[str]:
        with self._lock:
            return [_short(e) for e in self.events if e["pool"] == pool]

    def assert_conformant(self) -> None:
        with self._lock:
            lines = [json.dumps(e) for e in self.events]
        assert validate_stream(lines) == []


def _short(event: dict[str, Any]) -> str:
    kind = event["kind"]
    if kind in ("create", "borrow", "return") and "conn" in event:
        out = f"{kind}:{event['conn']}" + (":queued" if event.get("queued") else "")
        return out + (f":s{event['streams']}" if "streams" in event else "")
    if kind == "evict":
        return f"evict:{event['conn']}:{event['reason']}"
    if kind == "error":
        return f"error:{event['error_type']}"
    return str(kind)


def _poll(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


async def _apoll(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


@pytest.fixture(scope="module")
def ca() -> Iterator[LoopbackCA]:
    ca = LoopbackCA()
    yield ca
    ca.cleanup()


@pytest.fixture(scope="module")
def server(ca: LoopbackCA) -> Iterator[LoopbackServer]:
    srv = LoopbackServer(ca.server_context())
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def h2(ca: LoopbackCA) -> Iterator[H2Server]:
    with serve_h2(ca) as srv:
        yield srv


@pytest.fixture
def registry() -> Iterator[PoolRegistry]:
    reg = PoolRegistry()
    assert shim.instrument(registry=reg)
    try:
        yield reg
    finally:
        shim.uninstrument()


@pytest.fixture
def log(registry: PoolRegistry) -> EventLog:
    return EventLog(registry)


def _ledger(registry: PoolRegistry, url: str) -> PoolLedger:
    """The newest live pool for ``url`` (an earlier client's may still hold the plain name)."""
    found = [x for x in registry.ledgers() if x.name.split("#")[0] == url and not x.closed]
    assert found, [x.name for x in registry.ledgers()]
    return found[-1]


def test_keep_alive_reuses_one_connection(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    with httpx.Client(verify=ca.client_context()) as client:
        for _ in range(5):
            assert client.get(f"{server.url}/ok").text == "ok"
        ledger = _ledger(registry, server.url)
        snap = ledger.snapshot()
        assert (snap.borrows, snap.returns, snap.creates, snap.idle, snap.used) == (5, 5, 1, 1, 0)
        assert snap.protocol_version == "1.1" and snap.streams_max is None
        assert (snap.max, snap.idle_max) == (100, 20)  # httpx's default Limits
    assert log.kinds(server.url) == [
        "open",
        "create:1",
        *["borrow:1", "return:1"] * 5,
        "evict:1:pool_closed",
        "close",
    ]
    log.assert_conformant()


def test_queueing_at_the_limit_with_a_timeout_then_a_served_waiter(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    gate = f"httpx-queue-{uuid.uuid4().hex}"
    limits = httpx.Limits(max_connections=1)
    with httpx.Client(verify=ca.client_context(), limits=limits) as client:
        holder = threading.Thread(target=lambda: client.get(f"{server.url}/gate/{gate}"))
        holder.start()
        server.wait_at_gate(gate, 1)
        with pytest.raises(httpx.PoolTimeout):
            client.get(f"{server.url}/ok", timeout=httpx.Timeout(5.0, pool=0.05))
        ledger = _ledger(registry, server.url)
        assert ledger.snapshot().pending == 0
        got: list[str] = []
        waiter = threading.Thread(target=lambda: got.append(client.get(f"{server.url}/ok").text))
        waiter.start()
        _poll(lambda: ledger.snapshot().pending == 1, "the waiter to queue")
        server.open_gate(gate)
        holder.join(10)
        waiter.join(10)
        assert got == ["ok"]
        snap = ledger.snapshot()
        assert (snap.timeouts, snap.pending, snap.borrows, snap.creates) == (1, 0, 2, 1)
    assert log.kinds(server.url) == [
        "open",
        "create:1",
        "borrow:1",
        "wait",
        "error:timeout",
        "wait",
        "return:1",
        "borrow:1:queued",
        "return:1",
        "evict:1:pool_closed",
        "close",
    ]
    log.assert_conformant()


def test_a_streamed_body_holds_its_connection_until_closed(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    with httpx.Client(verify=ca.client_context()) as client:
        with client.stream("GET", f"{server.url}/big") as response:
            ledger = _ledger(registry, server.url)
            assert (ledger.snapshot().used, ledger.snapshot().returns) == (1, 0)
            chunks = response.iter_raw(1024)
            assert len(next(chunks)) == 1024
            assert ledger.snapshot().used == 1  # partly read: still held
            assert sum(len(c) for c in chunks) == 256 * 1024 - 1024
        snap = ledger.snapshot()
        assert (snap.used, snap.idle, snap.returns) == (0, 1, 1)
        # Closed unread: httpcore cannot reuse the connection and closes it.
        with client.stream("GET", f"{server.url}/big"):
            pass
        assert ledger.snapshot().evictions["broken"] == 1
    log.assert_conformant()


def test_the_server_closing_an_idle_connection_is_a_broken_eviction(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    with httpx.Client(verify=ca.client_context()) as client:
        client.get(f"{server.url}/ok")
        pool = client._transport._pool  # type: ignore[attr-defined] # an HTTPTransport's
        stream = pool.connections[0]._connection._network_stream
        assert server.drop_connections() >= 1
        _poll(lambda: stream.get_extra_info("is_readable"), "the client to see the close")
        client.get(f"{server.url}/ok")
    assert log.kinds(server.url) == [
        "open",
        "create:1",
        "borrow:1",
        "return:1",
        "evict:1:broken",
        "create:2",
        "borrow:2",
        "return:2",
        "evict:2:pool_closed",
        "close",
    ]
    log.assert_conformant()


def test_keepalive_expiry_and_overflow_evictions(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    # keepalive_expiry=0: an idle connection has expired by the assignment that follows its
    # return (the pool runs one right after each response is closed).
    with httpx.Client(verify=ca.client_context(), limits=httpx.Limits(keepalive_expiry=0)) as c:
        c.get(f"{server.url}/ok")
        c.get(f"{server.url}/ok")
        snap = _ledger(registry, server.url).snapshot()
        assert (snap.evictions["idle_timeout"], snap.creates, snap.total) == (2, 2, 0)
    # Three busy connections, one kept when idle: two are closed as overflow.
    gate = f"httpx-overflow-{uuid.uuid4().hex}"
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=1)
    with httpx.Client(verify=ca.client_context(), limits=limits) as c:
        threads = [
            threading.Thread(target=lambda: c.get(f"{server.url}/gate/{gate}")) for _ in range(3)
        ]
        for t in threads:
            t.start()
        server.wait_at_gate(gate, 3)
        server.open_gate(gate)
        for t in threads:
            t.join(10)
        snap = _ledger(registry, server.url).snapshot()
        assert (snap.creates, snap.borrows, snap.returns) == (3, 3, 3)
        assert (snap.evictions["overflow"], snap.idle, snap.idle_max) == (2, 1, 1)
    log.assert_conformant()


def test_http2_many_concurrent_streams_on_one_connection(
    ca: LoopbackCA, h2: H2Server, registry: PoolRegistry, log: EventLog
) -> None:
    gate = f"h2-many-{uuid.uuid4().hex}"
    n = 50

    async def main() -> None:
        async with httpx.AsyncClient(http2=True, verify=ca.client_context()) as client:
            first = await client.get(f"{h2.url}/ok")
            assert first.http_version == "HTTP/2"
            tasks = [asyncio.create_task(client.get(f"{h2.url}/gate/{gate}")) for _ in range(n)]
            await asyncio.to_thread(h2.wait_at_gate, gate, n)
            snap = _ledger(registry, h2.url).snapshot()
            assert (snap.total, snap.used, snap.streams_used, snap.streams_max) == (1, 1, n, 100)
            assert snap.protocol_version == "2"
            h2.open_gate(gate)
            assert [r.status_code for r in await asyncio.gather(*tasks)] == [200] * n
            snap = _ledger(registry, h2.url).snapshot()
            assert (snap.used, snap.idle, snap.streams_used) == (0, 1, 0)
            assert (snap.borrows, snap.returns, snap.creates) == (n + 1, n + 1, 1)

    asyncio.run(main())
    kinds = log.kinds(h2.url)
    # The first stream, under httpcore's initial limit of 1, then 50 at once.
    assert kinds[:4] == ["open", "create:1", "borrow:1:s1", "return:1:s0"]
    assert kinds[4 : 4 + n] == [f"borrow:1:s{i}" for i in range(1, n + 1)]
    assert sorted(kinds[4 + n : 4 + 2 * n]) == sorted(f"return:1:s{i}" for i in range(n))
    assert kinds[-2:] == ["evict:1:pool_closed", "close"]
    log.assert_conformant()


def test_http2_sync_client_streams(
    ca: LoopbackCA, h2: H2Server, registry: PoolRegistry, log: EventLog
) -> None:
    with httpx.Client(http2=True, verify=ca.client_context()) as client:
        for _ in range(3):
            assert client.get(f"{h2.url}/ok").http_version == "HTTP/2"
        with client.stream("GET", f"{h2.url}/big") as response:
            assert _ledger(registry, h2.url).snapshot().streams_used == 1
            response.read()
        assert _ledger(registry, h2.url).snapshot().streams_used == 0
    assert log.kinds(h2.url) == [
        "open",
        "create:1",
        *["borrow:1:s1", "return:1:s0"] * 4,
        "evict:1:pool_closed",
        "close",
    ]
    log.assert_conformant()


def test_cancelling_a_queued_request(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    gate = f"httpx-cancel-{uuid.uuid4().hex}"

    async def main() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(verify=ca.client_context(), limits=limits) as client:
            holder = asyncio.create_task(client.get(f"{server.url}/gate/{gate}"))
            await asyncio.to_thread(server.wait_at_gate, gate, 1)
            queued = asyncio.create_task(client.get(f"{server.url}/ok"))
            ledger = _ledger(registry, server.url)
            await _apoll(lambda: ledger.snapshot().pending == 1, "the request to queue")
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert ledger.snapshot().pending == 0
            server.open_gate(gate)
            assert (await holder).status_code == 200
            snap = ledger.snapshot()
            assert (snap.errors["cancelled"], snap.pending, snap.borrows) == (1, 0, 1)

    asyncio.run(main())
    assert log.kinds(server.url) == [
        "open",
        "create:1",
        "borrow:1",
        "wait",
        "error:cancelled",
        "return:1",
        "evict:1:pool_closed",
        "close",
    ]
    log.assert_conformant()


def test_every_counter_exact_after_many_tasks_and_threads(
    ca: LoopbackCA, server: LoopbackServer, h2: H2Server, registry: PoolRegistry, log: EventLog
) -> None:
    tasks, each = 16, 12

    async def main() -> None:
        limits = httpx.Limits(max_connections=4)
        async with httpx.AsyncClient(verify=ca.client_context(), limits=limits) as client:

            async def worker() -> None:
                for _ in range(each):
                    assert (await client.get(f"{server.url}/ok")).status_code == 200

            await asyncio.gather(*[worker() for _ in range(tasks)])
            snap = _ledger(registry, server.url).snapshot()
            assert (snap.borrows, snap.returns, snap.used, snap.pending) == (
                tasks * each,
                tasks * each,
                0,
                0,
            )
            assert snap.creates == snap.total <= 4
        async with httpx.AsyncClient(http2=True, verify=ca.client_context()) as client:

            async def h2_worker() -> None:
                for _ in range(each):
                    assert (await client.get(f"{h2.url}/ok")).status_code == 200

            await asyncio.gather(*[h2_worker() for _ in range(tasks)])
            snap = _ledger(registry, h2.url).snapshot()
            assert (snap.borrows, snap.returns, snap.streams_used, snap.used) == (
                tasks * each,
                tasks * each,
                0,
                0,
            )

    asyncio.run(main())
    # Threads: httpcore 1.0's sync pool may close an idle connection it has just assigned to
    # another thread's request (it happens without poolmon too: ReadError, "Bad file
    # descriptor"), so some requests fail; whatever happens, every borrow ends exactly once.
    limits = httpx.Limits(max_connections=3)
    ok: list[int] = []
    with httpx.Client(verify=ca.client_context(), limits=limits) as client:

        def thread_worker() -> None:
            for _ in range(each):
                try:
                    client.get(f"{server.url}/ok")
                    ok.append(1)
                except httpx.TransportError:
                    pass

        threads = [threading.Thread(target=thread_worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        snap = _ledger(registry, server.url).snapshot()
        # A borrow ends in a return, or in the evict of its connection (closed under it). A
        # request of a connection the race closed may still succeed from what it had read:
        # its borrow then ended in that evict, not in a return (so returns may be < len(ok)).
        assert snap.borrows >= len(ok) > 0
        assert snap.borrows >= snap.returns
        assert snap.borrows - snap.returns <= sum(snap.evictions.values())
        assert (snap.used, snap.pending, snap.errors["timeout"]) == (0, 0, 0)
        assert snap.total <= 3
    log.assert_conformant()


def test_credentials_never_reach_an_output(
    ca: LoopbackCA,
    server: LoopbackServer,
    registry: PoolRegistry,
    log: EventLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from poolmon.exporters.prometheus import PoolmonCollector

    basic = base64.b64encode(b"alice:s3cr3t-pw").decode()
    secrets = ("s3cr3t-pw", "tok-abc123", "proxy-pw-77", basic)
    url = server.url.replace("https://", "https://alice:s3cr3t-pw@")
    headers = {"Authorization": "Bearer tok-abc123", "Proxy-Authorization": "Basic proxy-pw-77"}
    with httpx.Client(verify=ca.client_context(), headers=headers) as client:
        assert client.get(f"{url}/ok").status_code == 200
        with pytest.raises(httpx.ConnectError):
            client.get("https://bob:s3cr3t-pw@127.0.0.1:1/ok")
        proxy = "http://puser:proxy-pw-77@127.0.0.1:1"
        with httpx.Client(proxy=proxy) as proxied, pytest.raises(httpx.TransportError):
            proxied.get(f"{server.url}/ok")
        prom = CollectorRegistry()
        prom.register(PoolmonCollector(registry))
        exposition = generate_latest(prom).decode()
    assert {x.name for x in registry.ledgers()} >= {server.url, "https://127.0.0.1:1"}
    text = json.dumps(log.events) + exposition + caplog.text
    for secret in secrets:
        assert secret not in text
    # The host's behaviour is intact: httpx sent the URL's userinfo as basic auth.
    assert server.requests[-1].headers["Authorization"] == f"Basic {basic}"
    log.assert_conformant()


def test_proxy_pools_are_left_alone(server: LoopbackServer, registry: PoolRegistry) -> None:
    """A proxy pool (httpx ``proxy=...``: httpcore's HTTPProxy) opens its sockets through its own
    connection classes, which the shim does not see: it is not attached at all, so it can show
    no wait that a recorded borrow would never resolve (docs/shims-httpx.md)."""
    with httpx.Client(proxy="http://127.0.0.1:1", limits=httpx.Limits(max_connections=1)) as c:
        pools = [t._pool for t in c._mounts.values() if t is not None]  # type: ignore[attr-defined]
        assert pools and all(type(p).__name__ == "HTTPProxy" for p in pools)
        assert all(getattr(p, "_poolmon_pool", None) is None for p in pools)
        with pytest.raises(httpx.TransportError):
            c.get(f"{server.url}/ok")
    assert registry.ledgers() == ()


def test_uninstrument_restores_exactly_and_instrument_twice_is_once() -> None:
    import httpcore._async.http2 as ah2
    import httpcore._sync.connection_pool as spool
    import httpcore._sync.http11 as sh11

    before = (
        vars(spool.ConnectionPool)["_assign_requests_to_connections"],
        vars(sh11.HTTP11Connection)["_send_request_headers"],
        vars(ah2.AsyncHTTP2Connection)["aclose"],
    )
    reg = PoolRegistry()
    assert shim.instrument(registry=reg) and shim.instrument(registry=reg)
    assert vars(sh11.HTTP11Connection)["_send_request_headers"] is not before[1]
    shim.uninstrument()
    assert not shim.is_instrumented()
    after = (
        vars(spool.ConnectionPool)["_assign_requests_to_connections"],
        vars(sh11.HTTP11Connection)["_send_request_headers"],
        vars(ah2.AsyncHTTP2Connection)["aclose"],
    )
    assert all(a is b for a, b in zip(before, after, strict=True))
