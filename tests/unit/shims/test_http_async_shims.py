"""httpcore (httpx) and aiohttp shims without a server: switches, version gate, entry points,
identities, and absorbed bookkeeping failures."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

import poolmon
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims import SHIMS
from poolmon.shims import aiohttp as aiohttp_shim
from poolmon.shims import httpcore as httpcore_shim


@pytest.mark.parametrize(
    ("name", "module", "instrumentor", "dependency"),
    [
        ("httpx", httpcore_shim, "HttpxPoolInstrumentor", "httpcore >=1.0,<2"),
        ("aiohttp", aiohttp_shim, "AiohttpPoolInstrumentor", "aiohttp >=3.9,<4"),
    ],
)
def test_registration_switches_and_instrumentor(
    name: str, module: Any, instrumentor: str, dependency: str
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from poolmon.shims import instrumentors

    assert SHIMS[name] == module.__name__
    eps = {ep.name: ep.value for ep in entry_points(group="opentelemetry_instrumentor")}
    assert eps[f"poolmon_{name}"] == f"poolmon.shims.instrumentors:{instrumentor}"
    inst = getattr(instrumentors, instrumentor)()
    assert list(inst.instrumentation_dependencies()) == [dependency]
    provider = MeterProvider()
    inst.instrument(meter_provider=provider)
    try:
        assert module.is_instrumented()
        assert name in poolmon.shims.instrumented()
    finally:
        inst.uninstrument()
        provider.shutdown()
    assert not module.is_instrumented()
    assert poolmon.shims.instrument(name, registry=PoolRegistry()) == [name]
    assert poolmon.shims.instrument(name) == [name]  # twice: once
    poolmon.shims.uninstrument(name)
    assert not module.is_instrumented()


@pytest.mark.parametrize("module", [httpcore_shim, aiohttp_shim], ids=["httpx", "aiohttp"])
def test_unsupported_version_stays_off(
    module: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from poolmon.shims import _version

    monkeypatch.setattr(_version, "installed_version", lambda dist: "0.9.0")
    assert module.instrument(registry=PoolRegistry()) is False
    assert not module.is_instrumented()
    assert "outside the supported range" in caplog.text


def test_httpcore_identity_is_scheme_host_port_only() -> None:
    import httpcore

    from poolmon.shims._httpcore_state import identity_for_origin

    url = httpcore.URL("https://user:pw@api.example.com/x?token=t")
    ident = identity_for_origin(url.origin)
    assert (ident.name, ident.server_address, ident.server_port) == (
        "https://api.example.com:443",
        "api.example.com",
        443,
    )
    assert "pw" not in repr(ident) and "token" not in repr(ident)


def test_aiohttp_identity_ignores_proxy_credentials() -> None:
    from aiohttp import BasicAuth
    from aiohttp.client_reqrep import ConnectionKey
    from yarl import URL

    from poolmon.shims._aiohttp_hooks import identity_for_key

    key = ConnectionKey(
        host="api.example.com",
        port=8443,
        is_ssl=True,
        ssl=True,
        proxy=URL("http://proxy:3128"),
        proxy_auth=BasicAuth("u", "proxy-secret"),
        proxy_headers_hash=None,
    )
    ident = identity_for_key(key, None)
    assert ident.name == "https://api.example.com:8443"
    assert "proxy" not in repr(ident)


def test_a_failing_recorder_never_reaches_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks absorb every bookkeeping failure: requests through a MockBackend still work."""
    import httpcore

    def broken(self: PoolLedger, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("recorder bug")

    reg = PoolRegistry()
    assert httpcore_shim.instrument(registry=reg)
    try:
        for method in ("create", "borrow", "release", "evict", "close"):
            monkeypatch.setattr(PoolLedger, method, broken)
        backend = httpcore.MockBackend(
            [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n", b"\r\n", b"ok"] * 2
        )
        with httpcore.ConnectionPool(network_backend=backend) as pool:
            for _ in range(2):
                assert pool.request("GET", "https://example.com/").content == b"ok"
        errors = reg.self_metrics.snapshot()["poolmon.shim.errors"]
        assert errors["httpcore"] >= 2  # the create, the close: each absorbed, none raised
    finally:
        httpcore_shim.uninstrument()
