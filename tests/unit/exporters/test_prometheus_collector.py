"""The Prometheus collector and /metrics server (real HTTP on loopback, real TLS)."""

from __future__ import annotations

import logging
import ssl
import urllib.request
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolmon.core import ManualClock, PoolRegistry
from poolmon.core.catalog import BUCKETS, METRICS, SELF_METRICS
from poolmon.errors import ConfigError
from poolmon.exporters.prometheus import (
    PoolmonCollector,
    register_collector,
    serve,
    unregister_collector,
)
from tests.unit.exporters.workload import SECRETS, add_http_pool, run_workload


def _scrape(reg: PoolRegistry, *, semconv: bool = False) -> str:
    prom = CollectorRegistry()
    prom.register(PoolmonCollector(reg, semconv=semconv))
    return generate_latest(prom).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exposition_carries_catalog_names_help_and_truth() -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    _ledger, truth = run_workload(reg, clock)
    add_http_pool(reg, ManualClock())
    text = _scrape(reg)
    for spec in [*METRICS.values(), *SELF_METRICS.values()]:
        assert f"# HELP {spec.prometheus} {spec.description}" in text
    samples = _samples(text)
    pool = (("pool_name", truth.pool),)
    assert samples[("pool_connection_max", pool)] == truth.max
    assert samples[("pool_connection_pending_requests", pool)] == truth.pending
    assert samples[("pool_connection_timeouts_total", pool)] == truth.timeouts
    used = tuple(sorted((*pool, ("pool_connection_state", "used"))))
    assert samples[("pool_connection_usage", used)] == truth.used
    assert samples[("pool_connection_oldest_use_seconds", pool)] == pytest.approx(truth.oldest_use)
    running = 0
    for bound, count in zip(BUCKETS["wait_time"], truth.wait_buckets(), strict=False):
        running += count
        key = tuple(sorted((*pool, ("le", str(float(bound))))))
        assert samples[("pool_connection_wait_time_seconds_bucket", key)] == running
    inf = tuple(sorted((*pool, ("le", "+Inf"))))
    assert samples[("pool_connection_wait_time_seconds_bucket", inf)] == len(truth.waits)
    assert samples[("pool_connection_wait_time_seconds_count", pool)] == len(truth.waits)
    assert samples[("pool_connection_wait_time_seconds_sum", pool)] == pytest.approx(
        sum(truth.waits)
    )
    info = [k for k in samples if k[0] == "pool_info" and ("pool_name", truth.pool) in k[1]]
    labels = dict(info[0][1])
    assert labels["pool_system"] == "postgresql"
    assert labels["db_namespace"] == "shop"
    assert labels["server_port"] == "5432"
    assert samples[("poolmon_pools", ())] == 2
    for secret in SECRETS:
        assert secret not in text


def test_counters_exist_at_zero_for_a_fresh_pool(registry: PoolRegistry) -> None:
    from poolmon.core.identity import identity_from_kwargs

    ledger = registry.register(identity_from_kwargs("redis", {"host": "127.0.0.1"}))
    samples = _samples(_scrape(registry))
    key = (("error_type", "timeout"), ("pool_name", ledger.name))
    assert samples[("pool_connection_errors_total", key)] == 0.0
    reasons = {
        dict(k[1])["pool_eviction_reason"]
        for k in samples
        if k[0] == "pool_connection_evictions_total"
    }
    assert "idle_timeout" in reasons and "fork" in reasons


def test_semconv_names_in_exposition() -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    run_workload(reg, clock)
    add_http_pool(reg, ManualClock())
    text = _scrape(reg, semconv=True)
    names = {fam.name for fam in text_string_to_metric_families(text) if fam.samples}
    assert {"db_client_connection_count", "db_client_connection_wait_time_seconds"} <= names
    assert {"http_client_open_connections", "http_client_connection_duration_seconds"} <= names
    assert 'http_connection_state="active"' in text


def test_semconv_leaves_pools_whose_library_exports_them_under_poolmon_names() -> None:
    # redis-py's built-in metrics publish db.client.connection.* themselves: poolmon must not
    # publish the same official series for that pool a second time.
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    ledger, truth = run_workload(reg, clock)
    ledger.semconv_exported_by = "redis-py"
    text = _scrape(reg, semconv=True)
    names = {fam.name for fam in text_string_to_metric_families(text) if fam.samples}
    assert "db_client_connection_count" not in names
    assert "db_client_connection_wait_time_seconds" not in names
    samples = _samples(text)
    used = (("pool_connection_state", "used"), ("pool_name", truth.pool))
    assert samples[("pool_connection_usage", used)] == truth.used


def test_failing_collection_is_counted_and_scrape_survives(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = PoolRegistry()

    def broken(leak_threshold: float | None = None) -> list[object]:
        raise RuntimeError("boom password=hunter22")

    monkeypatch.setattr(reg, "snapshot", broken)
    with caplog.at_level(logging.WARNING, logger="poolmon"):
        for _ in range(3):
            text = _scrape(reg)
    samples = _samples(text)
    assert samples[("poolmon_export_errors_total", (("exporter", "prometheus"),))] == 3
    assert "pool_connection_usage{" not in text
    logged = [r for r in caplog.records if "Prometheus collection failed" in r.getMessage()]
    assert len(logged) <= 1  # once per process (maybe already logged by an earlier test)
    assert all("hunter22" not in r.getMessage() for r in caplog.records)


def test_register_collector_is_idempotent() -> None:
    prom = CollectorRegistry()
    reg = PoolRegistry()
    a = register_collector(prom, registry=reg)
    assert register_collector(prom, registry=reg) is a
    unregister_collector(a)
    b = register_collector(prom, registry=reg)
    assert b is not a
    unregister_collector(b)


def test_serve_on_free_port_over_http(registry: PoolRegistry) -> None:
    clock = ManualClock()
    run_workload(registry, clock)
    with serve(0) as server:
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            body = resp.read().decode()
    assert "pool_connection_wait_time_seconds_bucket" in body
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_serve_https_with_trustme(tmp_path: Path, registry: PoolRegistry) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile = tmp_path / "cert.pem"
    keyfile = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with serve(0, registry=registry, certfile=certfile, keyfile=keyfile) as server:
        assert server.url.startswith("https://")
        with urllib.request.urlopen(server.url, timeout=10, context=ctx) as resp:
            assert b"poolmon_pools" in resp.read()


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [({"port": 70000}, "port"), ({"port": 0, "certfile": "x.pem"}, "certfile/keyfile")],
)
def test_serve_rejects_bad_arguments(kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        serve(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter
