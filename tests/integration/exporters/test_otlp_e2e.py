"""OTLP end to end: poolmon -> SDK -> OTLP/HTTP -> a real receiver decoding the protobuf."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from poolmon.core import ManualClock, PoolRegistry
from poolmon.core.catalog import METRICS
from poolmon.exporters import otel
from tests.integration.exporters.otlp_receiver import OtlpReceiver
from tests.unit.exporters.workload import SECRETS, add_http2_pool, add_http_pool, run_workload

pytestmark = pytest.mark.integration


def _attrs(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in point.attributes:
        value = kv.value
        out[kv.key] = value.int_value if value.HasField("int_value") else value.string_value
    return out


def _points(metric: Any) -> list[Any]:
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points)


def test_every_catalog_metric_reaches_a_real_otlp_receiver() -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    _, truth = run_workload(reg, clock)
    add_http_pool(reg, ManualClock())
    add_http2_pool(reg, ManualClock())  # the stream gauges exist only for multiplexed pools
    with OtlpReceiver() as receiver:
        handle = otel.start_otlp(receiver.endpoint, interval=3600, registry=reg)
        try:
            assert handle.force_flush()
            (request,) = receiver.wait_for(1)
        finally:
            handle.shutdown()
    assert not any(secret.encode() in raw for raw in receiver.raw for secret in SECRETS)
    metrics = {
        m.name: m
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        if sm.scope.name == "poolmon"
        for m in sm.metrics
    }
    expected_kind = {
        "counter": "sum",
        "updowncounter": "sum",
        "gauge": "gauge",
        "histogram": "histogram",
    }
    for spec in METRICS.values():
        metric = metrics[spec.name]
        assert metric.unit == spec.unit, spec.name
        assert metric.WhichOneof("data") == expected_kind[spec.instrument], spec.name
        if spec.instrument in ("counter", "updowncounter"):
            assert metric.sum.is_monotonic == (spec.instrument == "counter")
        keys = set().union(*(set(_attrs(p)) for p in _points(metric)))
        assert keys <= set(spec.attributes) and "pool.name" in keys, spec.name
    by_pool = {
        name: [p for p in _points(metrics[name]) if _attrs(p)["pool.name"] == truth.pool]
        for name in METRICS
    }
    (wait,) = by_pool["pool.connection.wait_time"]
    assert list(wait.bucket_counts) == truth.wait_buckets()
    assert wait.count == len(truth.waits)
    assert list(wait.explicit_bounds) == list(METRICS["pool.connection.wait_time"].buckets or ())
    (use,) = by_pool["pool.connection.use_time"]
    assert list(use.bucket_counts) == truth.use_buckets()
    (life,) = by_pool["pool.connection.lifetime"]
    assert list(life.bucket_counts) == truth.lifetime_buckets()
    creates = {_attrs(p)["outcome"]: p for p in by_pool["pool.connection.create_time"]}
    assert list(creates["ok"].bucket_counts) == truth.create_buckets("ok")
    assert list(creates["error"].bucket_counts) == truth.create_buckets("error")
    (timeouts,) = by_pool["pool.connection.timeouts"]
    assert timeouts.as_int == truth.timeouts or timeouts.as_double == truth.timeouts
    (pending,) = by_pool["pool.connection.pending_requests"]
    assert pending.as_double == truth.pending or pending.as_int == truth.pending


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


def test_unreachable_endpoint_leaves_the_workload_unchanged() -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    handle = otel.start_otlp(
        f"http://127.0.0.1:{_closed_port()}", interval=3600, registry=reg, timeout=0.5
    )
    try:
        _, truth = run_workload(reg, clock)  # runs exactly as without an exporter
        assert handle.force_flush(timeout_millis=5000) is False
        assert handle.force_flush(timeout_millis=5000) is False
    finally:
        handle.shutdown()
    snap = reg.snapshot()[0]
    assert list(snap.wait_time.counts) == truth.wait_buckets()
    assert reg.self_metrics.snapshot()["poolmon.export.errors"]["otlp"] >= 2
    assert handle.failures >= 2
