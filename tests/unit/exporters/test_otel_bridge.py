"""The OpenTelemetry bridge against the real SDK with in-memory readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
)

from poolmon.core import ManualClock, PoolRegistry
from poolmon.core.catalog import METRICS, SELF_METRICS
from poolmon.exporters import otel
from tests.unit.exporters.workload import SECRETS, add_http2_pool, add_http_pool, run_workload


def _metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    if data is None:
        return out  # the SDK reports nothing when no instrument had a point
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                assert sm.scope.name == otel.SCOPE_NAME
                out[m.name] = m
    return out


def _setup(**readers_kwargs: Any) -> tuple[PoolRegistry, InMemoryMetricReader, MeterProvider, Any]:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    _, truth = run_workload(reg, clock)
    add_http_pool(reg, ManualClock())
    reader = InMemoryMetricReader(**readers_kwargs)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return reg, reader, provider, truth


def test_every_catalog_metric_with_units_attributes_and_histogram_truth() -> None:
    reg, reader, provider, truth = _setup()
    add_http2_pool(reg, ManualClock())  # the stream gauges exist only for multiplexed pools
    bridge = otel.enable(meter_provider=provider, registry=reg)
    metrics = _metrics(reader)
    for spec in METRICS.values():
        metric = metrics[spec.name]
        assert metric.unit == spec.unit
        assert metric.description == spec.description
        for point in metric.data.data_points:
            assert set(point.attributes) <= set(spec.attributes)
            assert "pool.name" in point.attributes
    assert metrics["poolmon.pools"].data.data_points[0].value == 3
    streams = {
        (name, p.attributes["pool.name"]): p.value
        for name in ("pool.stream.usage", "pool.stream.capacity")
        for p in metrics[name].data.data_points
    }
    # Only the HTTP/2 pool has stream series: 4 streams borrowed, 1 returned, limit 100.
    assert streams == {
        ("pool.stream.usage", "https://h2.example.com:8443"): 3,
        ("pool.stream.capacity", "https://h2.example.com:8443"): 100,
    }
    wait = next(
        p
        for p in metrics["pool.connection.wait_time"].data.data_points
        if p.attributes["pool.name"] == truth.pool
    )
    assert isinstance(wait, HistogramDataPoint)
    assert list(wait.bucket_counts) == truth.wait_buckets()
    assert wait.count == len(truth.waits)
    assert wait.sum == pytest.approx(sum(truth.waits))
    errors = {
        (p.attributes["pool.name"], p.attributes["error.type"]): p.value
        for p in metrics["pool.connection.errors"].data.data_points
    }
    assert errors[(truth.pool, "timeout")] == truth.timeouts
    assert errors[(truth.pool, "create_failed")] == 1
    assert metrics["pool.connection.errors"].data.is_monotonic
    assert not metrics["pool.connection.usage"].data.is_monotonic
    info = next(
        p for p in metrics["pool.info"].data.data_points if p.attributes["pool.name"] == truth.pool
    )
    assert info.attributes["server.port"] == 5432  # an int, as the conventions type it
    text = reader.get_metrics_data().to_json()  # type: ignore[union-attr]
    for secret in SECRETS:
        assert secret not in text
    bridge.disable()
    assert "pool.connection.wait_time" not in _metrics(reader)


def test_enable_is_idempotent_per_provider_and_registry() -> None:
    reg, reader, provider, _ = _setup()
    a = otel.enable(meter_provider=provider, registry=reg)
    assert otel.enable(meter_provider=provider, registry=reg) is a
    other = PoolRegistry()
    b = otel.enable(meter_provider=provider, registry=other)
    assert b is not a
    counts = _metrics(reader)["pool.connection.usage"].data.data_points
    assert len(counts) == 4  # two pools x two states, not doubled
    a.disable()
    b.disable()
    # Re-enabling after disable reports again (the SDK keeps the first instruments).
    c = otel.enable(meter_provider=provider, registry=reg)
    assert len(_metrics(reader)["pool.connection.usage"].data.data_points) == 4
    c.disable()


def test_delta_reader_gets_histogram_deltas() -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    ledger, _ = run_workload(reg, clock)
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    bridge = otel.enable(meter_provider=provider, registry=reg)
    first = _metrics(reader)["pool.connection.wait_time"].data
    assert first.aggregation_temporality == AggregationTemporality.DELTA
    assert first.data_points[0].count == 100
    conn = ledger.create(clock.monotonic())
    ledger.borrow(conn, clock.monotonic())
    second = _metrics(reader)["pool.connection.wait_time"].data.data_points[0]
    assert second.count == 1
    assert second.start_time_unix_nano <= second.time_unix_nano
    bridge.disable()


def test_a_raising_collection_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    reg, reader, provider, _ = _setup()
    bridge = otel.enable(meter_provider=provider, registry=reg)

    def broken(leak_threshold: float | None = None) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(reg, "snapshot", broken)
    metrics = _metrics(reader)  # does not raise
    assert "pool.connection.usage" not in metrics
    assert reg.self_metrics.snapshot()["poolmon.export.errors"]["otel"] >= 1
    bridge.disable()


def test_semconv_names_on_otel() -> None:
    reg, reader, provider, truth = _setup()
    bridge = otel.enable(meter_provider=provider, registry=reg, semconv=True)
    metrics = _metrics(reader)
    assert "db.client.connection.count" in metrics
    points = metrics["http.client.open_connections"].data.data_points
    assert {p.attributes["http.connection.state"] for p in points} == {"idle", "active"}
    assert all(p.attributes["url.scheme"] == "https" for p in points)
    pools = {
        p.attributes["db.client.connection.pool.name"]
        for p in metrics["db.client.connection.wait_time"].data.data_points
    }
    assert pools == {truth.pool}
    bridge.disable()


def test_self_metrics_are_reported() -> None:
    reg, reader, provider, _ = _setup()
    reg.self_metrics.inc("poolmon.shim.errors", "redis")
    bridge = otel.enable(meter_provider=provider, registry=reg)
    metrics = _metrics(reader)
    assert metrics["poolmon.pools"].unit == SELF_METRICS["poolmon.pools"].unit
    assert metrics["poolmon.shim.errors"].data.data_points[0].attributes == {"library": "redis"}
    bridge.disable()


def test_enable_on_the_global_provider_in_a_fresh_process() -> None:
    # The global provider can be set once per process: prove it in a subprocess, the way
    # opentelemetry-instrument sets it up before instrumentors call enable().
    code = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from poolmon.core import ManualClock, get_default_registry
        from poolmon.exporters import otel
        from tests.unit.exporters.workload import run_workload

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        clock = ManualClock()
        run_workload(get_default_registry(), clock)
        a = otel.enable()
        assert otel.enable() is a
        names = {m.name for rm in reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics}
        assert "pool.connection.wait_time" in names and "pool.connection.usage" in names, names
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
