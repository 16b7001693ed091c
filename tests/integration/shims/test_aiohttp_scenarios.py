"""aiohttp shim against a real loopback HTTPS/1.1 server (tests.support.http_servers, trustme CA):
exact event sequences per scenario; every stream passes the conformance checker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from poolmon.conformance import validate_stream
from poolmon.core.events import PoolEvent
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims import aiohttp as shim
from tests.support.http_servers import LoopbackCA, LoopbackServer

pytestmark = pytest.mark.integration


class EventLog:
    def __init__(self, registry: PoolRegistry) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        registry.subscribe(self)

    def __call__(self, event: PoolEvent) -> None:
        with self._lock:
            self.events.append(event.to_dict())

    def kinds(self, pool: str) -> list[str]:
        with self._lock:
            return [_short(e) for e in self.events if e["pool"].split("#")[0] == pool]

    def assert_conformant(self) -> None:
        with self._lock:
            lines = [json.dumps(e) for e in self.events]
        assert validate_stream(lines) == []


def _short(event: dict[str, Any]) -> str:
    kind = event["kind"]
    if kind in ("create", "borrow", "return") and "conn" in event:
        return f"{kind}:{event['conn']}" + (":queued" if event.get("queued") else "")
    if kind == "evict":
        return f"evict:{event['conn']}:{event['reason']}"
    if kind == "error":
        return f"error:{event['error_type']}"
    return str(kind)


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
    found = [x for x in registry.ledgers() if x.name.split("#")[0] == url and not x.closed]
    assert found, [x.name for x in registry.ledgers()]
    return found[-1]


def _session(ca: LoopbackCA, **connector: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ca.client_context(), **connector)
    )


def test_keep_alive_reuse_and_limits(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    async def main() -> None:
        async with _session(ca, limit=10, limit_per_host=3) as session:
            for _ in range(4):
                async with session.get(f"{server.url}/ok") as response:
                    assert await response.text() == "ok"
            snap = _ledger(registry, server.url).snapshot()
            assert (snap.borrows, snap.returns, snap.creates, snap.idle, snap.max) == (
                4,
                4,
                1,
                1,
                3,
            )
            assert snap.identity.library == "aiohttp"
            # Both limits visible: max is the key's own bound (limit_per_host), the connector's
            # limit over all its keys is the pool's shared_max (spec 1.1, section 5).
            assert snap.identity.shared_max == 10
            assert snap.identity.as_attributes()["pool.shared_max"] == "10"

    asyncio.run(main())
    assert log.kinds(server.url) == [
        "open",
        "create:1",
        *["borrow:1", "return:1"] * 4,
        "evict:1:pool_closed",
        "close",
    ]
    (opened,) = [e for e in log.events if e["kind"] == "open" and e["pool"] == server.url]
    assert (opened["max"], opened["shared_max"]) == (3, 10)
    log.assert_conformant()


def test_queueing_at_the_limit_with_a_timeout_then_a_served_waiter(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    gate = f"aio-queue-{uuid.uuid4().hex}"

    async def main() -> None:
        async with _session(ca, limit=1) as session:

            async def get(path: str, **kwargs: Any) -> str:
                async with session.get(f"{server.url}{path}", **kwargs) as response:
                    return await response.text()

            holder = asyncio.create_task(get(f"/gate/{gate}"))
            await asyncio.to_thread(server.wait_at_gate, gate, 1)
            with pytest.raises(asyncio.TimeoutError):
                await get("/ok", timeout=aiohttp.ClientTimeout(connect=0.05))
            ledger = _ledger(registry, server.url)
            assert ledger.snapshot().pending == 0
            waiter = asyncio.create_task(get("/ok"))
            await _apoll(lambda: ledger.snapshot().pending == 1, "the waiter to queue")
            server.open_gate(gate)
            assert await holder == "through the gate"
            assert await waiter == "ok"
            snap = ledger.snapshot()
            assert (snap.timeouts, snap.pending, snap.borrows, snap.creates) == (1, 0, 2, 1)

    asyncio.run(main())
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


def test_a_response_holds_its_connection_until_released(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    async def main() -> None:
        async with _session(ca) as session:
            response = await session.get(f"{server.url}/big")
            ledger = _ledger(registry, server.url)
            chunk = await response.content.read(1024)
            assert len(chunk) == 1024
            assert (ledger.snapshot().used, ledger.snapshot().returns) == (1, 0)
            rest = await response.read()
            assert len(rest) == 256 * 1024 - 1024
            response.release()
            snap = ledger.snapshot()
            assert (snap.used, snap.idle, snap.returns) == (0, 1, 1)

    asyncio.run(main())
    log.assert_conformant()


def test_server_closing_idle_connections_and_keepalive_expiry(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    async def main() -> None:
        async with _session(ca) as session:
            async with session.get(f"{server.url}/ok") as response:
                await response.read()
            proto = next(iter(session.connector._conns.values()))[0][0]  # type: ignore[union-attr]
            assert server.drop_connections() >= 1
            await _apoll(lambda: not proto.is_connected(), "the client to see the close")
            async with session.get(f"{server.url}/ok") as response:
                await response.read()
        # keepalive_timeout: an idle connection older than it is not reused.
        async with _session(ca, keepalive_timeout=0.001) as session:
            async with session.get(f"{server.url}/ok") as response:
                await response.read()
            ledger = _ledger(registry, server.url)
            await _apoll(lambda: ledger.snapshot().evictions["idle_timeout"] == 1, "expiry")

    asyncio.run(main())
    kinds = log.kinds(server.url)
    assert kinds[:10] == [
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
    assert kinds[10:] == [
        "open",
        "create:1",
        "borrow:1",
        "return:1",
        "evict:1:idle_timeout",
        "close",
    ]
    log.assert_conformant()


def test_cancelling_a_queued_request_and_force_close_churn(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    gate = f"aio-cancel-{uuid.uuid4().hex}"

    async def main() -> None:
        async with _session(ca, limit=1) as session:

            async def get(path: str) -> int:
                async with session.get(f"{server.url}{path}") as response:
                    await response.read()
                    return response.status

            holder = asyncio.create_task(get(f"/gate/{gate}"))
            await asyncio.to_thread(server.wait_at_gate, gate, 1)
            queued = asyncio.create_task(get("/ok"))
            ledger = _ledger(registry, server.url)
            await _apoll(lambda: ledger.snapshot().pending == 1, "the request to queue")
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert ledger.snapshot().pending == 0
            server.open_gate(gate)
            assert await holder == 200
            assert ledger.snapshot().errors["cancelled"] == 1
        async with _session(ca, force_close=True) as session:
            for _ in range(3):
                async with session.get(f"{server.url}/ok") as response:
                    await response.read()
            snap = _ledger(registry, server.url).snapshot()
            assert (snap.creates, snap.evictions["other"], snap.total) == (3, 3, 0)

    asyncio.run(main())
    kinds = log.kinds(server.url)
    assert kinds[:8] == [
        "open",
        "create:1",
        "borrow:1",
        "wait",
        "error:cancelled",
        "return:1",
        "evict:1:pool_closed",
        "close",
    ]
    assert kinds[8:] == [
        "open",
        *[
            x
            for i in (1, 2, 3)
            for x in (f"create:{i}", f"borrow:{i}", f"return:{i}", f"evict:{i}:other")
        ],
        "close",
    ]
    log.assert_conformant()


def test_every_counter_exact_after_many_tasks(
    ca: LoopbackCA, server: LoopbackServer, registry: PoolRegistry, log: EventLog
) -> None:
    tasks, each = 16, 15

    async def main() -> None:
        async with _session(ca, limit=4) as session:

            async def worker() -> None:
                for _ in range(each):
                    async with session.get(f"{server.url}/ok") as response:
                        assert await response.text() == "ok"

            await asyncio.gather(*[worker() for _ in range(tasks)])
            snap = _ledger(registry, server.url).snapshot()
            assert (snap.borrows, snap.returns, snap.used, snap.pending) == (
                tasks * each,
                tasks * each,
                0,
                0,
            )
            assert snap.creates == snap.total <= 4
            assert snap.wait_time.count == tasks * each

    asyncio.run(main())
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

    secrets = ("s3cr3t-pw", "tok-abc123", "proxy-pw-77")
    exposition = ""

    async def main() -> None:
        nonlocal exposition
        headers = {"Authorization": "Bearer tok-abc123"}
        async with _session(ca) as session:
            url = server.url.replace("https://", "https://alice:s3cr3t-pw@")
            async with session.get(f"{url}/ok") as response:
                assert response.status == 200
            async with session.get(f"{server.url}/ok", headers=headers) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):
                await session.get(
                    f"{server.url}/ok",
                    proxy="http://puser:proxy-pw-77@127.0.0.1:1",
                    proxy_headers={"Proxy-Authorization": "Basic proxy-pw-77"},
                )
            prom = CollectorRegistry()
            prom.register(PoolmonCollector(registry))
            exposition = generate_latest(prom).decode()

    asyncio.run(main())
    text = json.dumps(log.events) + exposition + caplog.text
    for secret in secrets:
        assert secret not in text
    log.assert_conformant()


def test_uninstrument_restores_exactly_and_instrument_twice_is_once() -> None:
    from aiohttp import client_proto, connector

    before = (
        vars(connector.Connection)["__init__"],
        vars(connector.BaseConnector)["_release"],
        vars(client_proto.ResponseHandler)["close"],
    )
    reg = PoolRegistry()
    assert shim.instrument(registry=reg) and shim.instrument(registry=reg)
    assert vars(connector.Connection)["__init__"] is not before[0]
    shim.uninstrument()
    after = (
        vars(connector.Connection)["__init__"],
        vars(connector.BaseConnector)["_release"],
        vars(client_proto.ResponseHandler)["close"],
    )
    assert all(a is b for a, b in zip(before, after, strict=True))
