"""requests over the urllib3 shim: body consumption decides the return, stream=True shows as use
time and as a leak, proxies and credentials stay out of every output, behaviour is unchanged."""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3
from prometheus_client import CollectorRegistry, generate_latest
from urllib3.util.retry import Retry

from poolmon.conformance import validate_stream
from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import JsonlSink
from poolmon.exporters.prometheus import PoolmonCollector
from poolmon.shims import urllib3 as shim
from tests.support.http_servers import LoopbackCA, LoopbackServer

pytestmark = pytest.mark.integration


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


@pytest.fixture
def clocked(registry: PoolRegistry) -> Iterator[tuple[PoolRegistry, ManualClock, io.StringIO]]:
    """A registry on a manual clock, instrumented, with a JSONL stream of its events."""
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    stream = io.StringIO()
    unsubscribe = reg.subscribe(JsonlSink(stream))
    shim.instrument(registry=reg)
    try:
        yield reg, clock, stream
    finally:
        shim.uninstrument()
        unsubscribe()


def _kinds(stream: io.StringIO, pool: str) -> list[str]:
    out = []
    for line in stream.getvalue().splitlines():
        event = json.loads(line)
        if event["pool"] != pool:
            continue
        extra = event.get("reason") or event.get("error_type") or ""
        out.append(f"{event['kind']}:{extra}" if extra else event["kind"])
    return out


def test_body_consumption_returns_the_connection_and_stream_holds_it(
    clocked: tuple[PoolRegistry, ManualClock, io.StringIO], server: LoopbackServer
) -> None:
    reg, clock, stream = clocked
    name = f"http://127.0.0.1:{server.port}"
    with requests.Session() as session:
        assert session.get(f"{server.url}/ok").text == "ok"  # read at once: returned at once
        ledger = reg.get(name)
        assert ledger is not None
        assert ledger.snapshot().used == 0

        response = session.get(f"{server.url}/big", stream=True)
        assert ledger.snapshot().used == 1  # headers read, body not: still borrowed
        clock.advance(7.0)
        snap = ledger.snapshot(leak_threshold=5.0)
        assert snap.oldest_use == 7.0 and len(snap.leaks) == 1
        assert [leak.conn for leak in ledger.check_leaks(5.0)] == [1]
        assert len(response.content) == 256 * 1024
        snap = ledger.snapshot()
        assert (snap.used, snap.idle, snap.use_time.count) == (0, 1, 2)
        assert snap.use_time.sum == 7.0  # the streamed borrow; the first took 0 s on this clock
        assert snap.errors["leak_suspected"] == 1

        # Closing a streamed response unread discards its connection (it cannot be reused).
        unread = session.get(f"{server.url}/big", stream=True)
        unread.close()
        assert ledger.snapshot().used == 0
    assert _kinds(stream, name) == [
        "open",
        "create",
        "borrow",
        "return",
        "borrow",
        "error:leak_suspected",
        "return",
        "borrow",
        "evict:other",
    ]
    assert validate_stream(stream.getvalue().splitlines()) == []


def test_requests_retries_and_redirects_count_each_attempt_once(
    clocked: tuple[PoolRegistry, ManualClock, io.StringIO], server: LoopbackServer
) -> None:
    reg, _, stream = clocked
    name = f"http://127.0.0.1:{server.port}"
    with requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(
            max_retries=Retry(total=3, status_forcelist=[503], backoff_factor=0)
        )
        session.mount("http://", adapter)
        before = len(server.requests)
        assert session.get(f"{server.url}/redirect/2").text == "ok"
        # A key of its own: the module's server outlives this test (run once per implementation).
        key = f"requests-{uuid.uuid4().hex[:8]}"
        assert session.get(f"{server.url}/flaky/{key}/2").text == "recovered"
        attempts = len(server.requests) - before
        assert attempts == 3 + 3
        kinds = _kinds(stream, name)
        assert kinds.count("borrow") == kinds.count("return") == attempts
        ledger = reg.get(name)
        assert ledger is not None
        assert ledger.snapshot().used == 0
    assert validate_stream(stream.getvalue().splitlines()) == []


def test_credentials_and_proxy_settings_appear_in_no_output(
    clocked: tuple[PoolRegistry, ManualClock, io.StringIO],
    server: LoopbackServer,
    tls_server: LoopbackServer,
    ca: LoopbackCA,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg, _, stream = clocked
    proxy = LoopbackServer()
    secrets = ["hunter2-url-pw", "proxysecret-pw", "dead-proxy-pw"]
    try:
        proxy_url = f"http://puser:{secrets[1]}@127.0.0.1:{proxy.port}"
        with caplog.at_level(logging.DEBUG), requests.Session() as session:
            # Userinfo in the request URL (requests turns it into basic auth).
            url = f"http://alice:{secrets[0]}@127.0.0.1:{server.port}/ok"
            assert session.get(url).text == "ok"
            # Plain HTTP through a forwarding proxy, and HTTPS through a CONNECT tunnel.
            proxies = {"http": proxy_url, "https": proxy_url}
            assert session.get(f"{server.url}/ok", proxies=proxies).text == "ok"
            got = session.get(f"{tls_server.url}/ok", proxies=proxies, verify=ca.ca_file)
            assert got.text == "ok"
            # A proxy that is down: its error message goes into a create event.
            dead = LoopbackServer()
            dead_port = dead.port
            dead.close()
            with pytest.raises(requests.exceptions.ProxyError):
                session.get(
                    f"{server.url}/ok",
                    proxies={"http": f"http://puser:{secrets[2]}@127.0.0.1:{dead_port}"},
                )
            # Read while the session (and so its pools) is alive.
            names = {snap.identity.name for snap in reg.snapshot()}
            prom = CollectorRegistry()
            prom.register(PoolmonCollector(reg))
            exposition = generate_latest(prom).decode()
        # The proxy saw the credentials: the application's behaviour is intact.
        sent = [r.headers.get("Proxy-Authorization", "") for r in proxy.requests]
        token = base64.b64encode(f"puser:{secrets[1]}".encode()).decode()
        assert sent and all(h == f"Basic {token}" for h in sent)
    finally:
        proxy.close()

    assert f"http://127.0.0.1:{proxy.port}" in names  # forwarding proxy pool: the proxy
    assert f"https://127.0.0.1:{tls_server.port}" in names  # tunnel pool: the origin
    assert f"http://127.0.0.1:{dead_port}" in names
    outputs = {
        "jsonl": stream.getvalue(),
        "prometheus": exposition,
        "snapshots": repr(reg.snapshot()),
        "logs": caplog.text,
        "stdio": "".join(capsys.readouterr()),
    }
    assert "create_failed" in outputs["jsonl"]
    for where, text in outputs.items():
        for secret in (*secrets, token, "puser", "alice"):
            assert secret not in text, f"{secret!r} leaked into {where}"
    assert validate_stream(stream.getvalue().splitlines()) == []


def _transcript(
    server: LoopbackServer, tls: LoopbackServer, ca_file: str, tag: str, keep: list[Any]
) -> list[Any]:
    """Run the same mixed workload and write down everything urllib3/requests let a caller see.
    The pools go to ``keep``: a ledger lives as long as its pool, and some of urllib3's pools sit
    in reference cycles that the garbage collector may break at any moment."""
    out: list[Any] = []

    def attempt(label: str, fn: Any) -> None:
        try:
            out.append((label, fn()))
        except Exception as exc:
            out.append((label, type(exc).__name__))

    pool = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1)
    attempt("get", lambda: (pool.request("GET", "/ok").status, pool.num_connections))
    attempt("close", lambda: pool.request("GET", "/close").data)
    attempt("redirect", lambda: pool.request("GET", "/redirect/2").data)
    attempt("no-redirect", lambda: pool.request("GET", "/redirect/1", redirect=False).status)
    attempt(
        "retry",
        lambda: (
            pool.request(
                "GET", f"/flaky/{tag}/1", retries=Retry(total=2, status_forcelist=[503])
            ).data
        ),
    )
    attempt(
        "retry-exhausted",
        lambda: (
            pool.request(
                "GET", f"/flaky/{tag}x/5", retries=Retry(total=1, status_forcelist=[503])
            ).data
        ),
    )
    attempt("counts", lambda: (pool.num_connections, pool.num_requests, pool.pool.qsize()))  # type: ignore[union-attr]
    blocking = urllib3.HTTPConnectionPool(server.host, server.port, maxsize=1, block=True)
    conn = blocking._get_conn()
    attempt("empty", lambda: blocking._get_conn(timeout=0))
    blocking._put_conn(conn)
    attempt("after", lambda: blocking.request("GET", "/ok").data)
    pool.close()
    attempt("closed", lambda: pool.request("GET", "/ok").data)
    tls_pool = urllib3.HTTPSConnectionPool(tls.host, tls.port, ca_certs=ca_file)
    attempt("https", lambda: tls_pool.request("GET", "/ok").data)
    bad_tls = urllib3.HTTPSConnectionPool(tls.host, tls.port, retries=False)
    attempt("https-untrusted", lambda: bad_tls.request("GET", "/ok").data)
    keep.extend((pool, blocking, tls_pool, bad_tls))
    with requests.Session() as session:
        attempt("requests", lambda: session.get(f"{server.url}/redirect/2").history[0].status_code)
        streamed = session.get(f"{server.url}/big", stream=True)
        attempt("stream", lambda: sum(len(c) for c in streamed.iter_content(65536)))
    return out


def test_behaviour_is_the_same_with_and_without_instrumentation(
    registry: PoolRegistry, server: LoopbackServer, tls_server: LoopbackServer, ca: LoopbackCA
) -> None:
    tag = uuid.uuid4().hex[:8]  # flaky-endpoint keys of this run only (the server is shared)
    keep: list[Any] = []
    plain = _transcript(server, tls_server, ca.ca_file, f"plain-{tag}", keep)
    shim.instrument(registry=registry)
    try:
        instrumented = _transcript(server, tls_server, ca.ca_file, f"instrumented-{tag}", keep)
    finally:
        shim.uninstrument()
    assert instrumented == plain
    assert registry.self_metrics.snapshot()["poolmon.shim.errors"] == {}
    assert len(registry.ledgers()) >= 3  # the transcript's pools were observed
