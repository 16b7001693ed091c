"""The SDK-internals gate of the OpenTelemetry bridge, and that poolmon never keeps a
MeterProvider alive (real SDK, in-memory readers)."""

from __future__ import annotations

import gc
import logging
import socket
import weakref
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader

from poolmon.core import ManualClock, PoolRegistry, selfmetrics
from poolmon.exporters import _otel_sdk_bridge, otel
from tests.unit.exporters.workload import run_workload


def _names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def _provider() -> tuple[MeterProvider, InMemoryMetricReader, PoolRegistry]:
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    run_workload(registry, clock)
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader], shutdown_on_exit=False), reader, registry


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selfmetrics, "_logged", set())  # log_once forgets what it said


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "histograms are not exported" in r.getMessage()
    ]


def test_the_installed_sdk_is_one_the_bridge_was_checked_against() -> None:
    # Fails when the SDK is upgraded: re-read the private names (module docstring), then widen.
    assert _otel_sdk_bridge.unsupported_reason() is None, _otel_sdk_bridge.sdk_version()
    assert _otel_sdk_bridge.load() is not None
    assert "1.44.0" in (_otel_sdk_bridge.unsupported_reason("1.44.0") or "")
    assert _otel_sdk_bridge.unsupported_reason("garbage") is not None


def test_other_sdk_version_exports_counts_and_gauges_skips_histograms_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    monkeypatch.setattr(_otel_sdk_bridge, "sdk_version", lambda: "1.99.0")
    caplog.set_level(logging.WARNING, logger="poolmon")
    for _ in range(2):  # two providers, one warning
        provider, reader, registry = _provider()
        otel.enable(meter_provider=provider, registry=registry)
        names = _names(reader)
        assert {
            "pool.connection.usage",
            "pool.connection.oldest_use",
            "pool.connection.timeouts",
        } <= names
        assert "pool.connection.wait_time" not in names
        assert "pool.connection.create_time" not in names
    (warning,) = _warnings(caplog)
    assert "opentelemetry-sdk 1.99.0" in warning and "counts and gauges are" in warning


def test_a_missing_private_name_takes_the_same_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    provider, reader, registry = _provider()  # built while the SDK still has the method
    monkeypatch.delattr(MetricReader, "_set_collect_callback")
    caplog.set_level(logging.WARNING, logger="poolmon")
    otel.enable(meter_provider=provider, registry=registry)
    names = _names(reader)
    assert "pool.connection.usage" in names and "pool.connection.wait_time" not in names
    (warning,) = _warnings(caplog)
    assert "lacks MetricReader._set_collect_callback" in warning


def test_with_the_checked_sdk_histograms_are_there() -> None:
    provider, reader, registry = _provider()
    otel.enable(meter_provider=provider, registry=registry)
    assert "pool.connection.wait_time" in _names(reader)


def _collected(ref: weakref.ref[Any]) -> bool:
    gc.collect()
    return ref() is None


def test_a_dropped_provider_is_released() -> None:
    provider, reader, registry = _provider()
    bridge = otel.enable(meter_provider=provider, registry=registry)
    assert "pool.connection.wait_time" in _names(reader)
    ref = weakref.ref(provider)
    del provider, reader
    assert _collected(ref)
    assert bridge.meter_provider is None


def test_a_shut_down_otlp_handle_is_released() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens: the export at shutdown fails, counted
    handle = otel.start_otlp(f"http://127.0.0.1:{port}", interval=3600, timeout=0.5)
    provider_ref = weakref.ref(handle.meter_provider)
    handle_ref = weakref.ref(handle)
    handle.shutdown()
    handle.shutdown()  # idempotent
    del handle
    assert _collected(handle_ref) and _collected(provider_ref)
