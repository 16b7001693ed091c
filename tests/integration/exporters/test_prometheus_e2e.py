"""Prometheus end to end: a real Prometheus scrapes poolmon's /metrics and, side by side, the
official OpenTelemetry Prometheus exporter fed by poolmon's OTel bridge."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server

from poolmon.core import HistogramSnapshot, ManualClock, PoolRegistry
from poolmon.core.catalog import BUCKETS
from poolmon.exporters import otel
from poolmon.exporters.prometheus import serve
from tests.support.prometheus import PrometheusServer
from tests.unit.exporters.workload import Truth, add_http_pool, run_workload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(prometheus_bin: str) -> Iterator[tuple[PrometheusServer, Truth, str, str, str]]:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    _, truth = run_workload(reg, clock)
    add_http_pool(reg, ManualClock())
    reg.self_metrics.inc("poolmon.shim.errors", "redis")  # so self-metric families have samples
    direct = serve(0, registry=reg)
    # The OTel path: poolmon bridge -> SDK -> opentelemetry-exporter-prometheus (the standard
    # OTel -> Prometheus translation), on a registry and port of its own.
    otel_prom = CollectorRegistry(auto_describe=False)
    reader = PrometheusMetricReader(disable_target_info=True, registry=otel_prom)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    bridge = otel.enable(meter_provider=provider, registry=reg)
    httpd, _ = start_http_server(0, addr="127.0.0.1", registry=otel_prom)
    via_otel = f"127.0.0.1:{httpd.server_address[1]}"
    target = f"127.0.0.1:{direct.port}"
    try:
        with PrometheusServer(prometheus_bin, [target, via_otel], interval=1) as prom:
            # Both targets scraped at least once (wait_for_scrape alone passes on the first).
            prom.wait_until(
                'count(up{job="poolmon"} == 1)', lambda r: bool(r) and r[0]["value"][1] == "2"
            )
            yield prom, truth, target, via_otel, direct.url
    finally:
        bridge.disable()
        provider.shutdown()
        httpd.shutdown()
        httpd.server_close()
        direct.close()


def _scalar(prom: PrometheusServer, promql: str) -> float:
    result = prom.query(promql)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


@pytest.mark.parametrize("path", ["direct", "otel"])
def test_promql_returns_the_truth(
    setup: tuple[PrometheusServer, Truth, str, str, str], path: str
) -> None:
    prom, truth, direct, via_otel, _ = setup
    sel = f'instance="{direct if path == "direct" else via_otel}",pool_name="{truth.pool}"'
    assert _scalar(prom, f"pool_connection_wait_time_seconds_count{{{sel}}}") == len(truth.waits)
    assert _scalar(prom, f"pool_connection_max{{{sel}}}") == truth.max
    assert _scalar(prom, f"pool_connection_pending_requests{{{sel}}}") == truth.pending
    assert _scalar(prom, f"pool_connection_timeouts_total{{{sel}}}") == truth.timeouts
    assert (
        _scalar(prom, f'pool_connection_usage{{{sel},pool_connection_state="used"}}') == truth.used
    )
    expected = HistogramSnapshot(
        BUCKETS["wait_time"], tuple(truth.wait_buckets()), sum(truth.waits)
    )
    for q in (0.5, 0.95, 0.99):
        got = _scalar(
            prom,
            f"histogram_quantile({q}, sum by (le) "
            f"(pool_connection_wait_time_seconds_bucket{{{sel}}}))",
        )
        assert got == pytest.approx(expected.quantile(q), rel=1e-9), q


def test_metric_names_equal_by_scrape_and_via_otel(
    setup: tuple[PrometheusServer, Truth, str, str, str],
) -> None:
    prom, _, direct, via_otel, _ = setup

    def names(instance: str) -> set[str]:
        rows = prom.query(f'count by (__name__) ({{instance="{instance}"}})')
        return {row["metric"]["__name__"] for row in rows}

    direct_names = names(direct)
    assert "pool_connection_wait_time_seconds_bucket" in direct_names
    assert "poolmon_shim_errors_total" in direct_names
    assert direct_names == names(via_otel)

    def labels(instance: str, metric: str) -> set[str]:
        rows = prom.query(f'{metric}{{instance="{instance}"}}')
        return {k for row in rows for k in row["metric"] if not k.startswith("otel_scope_")}

    for metric in (
        "pool_info",
        "pool_connection_errors_total",
        "pool_connection_create_time_seconds_bucket",
    ):
        assert labels(direct, metric) == labels(via_otel, metric), metric


def test_promtool_check_metrics_passes(
    setup: tuple[PrometheusServer, Truth, str, str, str], promtool_bin: str
) -> None:
    *_, url = setup
    with urllib.request.urlopen(url, timeout=10) as resp:
        exposition = resp.read()
    result = subprocess.run(
        [promtool_bin, "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    findings = [line for line in (result.stdout + result.stderr).decode().splitlines() if line]
    assert findings == [], findings
    assert result.returncode == 0
