"""Backend families on both exporters: OTel observable instruments and the Prometheus collector
expose the same proxy pools and backends, merged with the application's pools (one family per
name), and names pass the catalog's Prometheus form."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from poolmon.backends import Poller, attach
from poolmon.backends.readings import ConnectionGroup, ProxyDatabaseStats, ProxyPool, Reading
from poolmon.core.catalog import BACKEND_METRICS, PROXY_METRICS
from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry
from poolmon.exporters import otel
from poolmon.exporters.prometheus import register_collector

POOL = ProxyPool(
    database="orders", user="app", cl_active=7, cl_waiting=2, sv_active=3, sv_idle=1, sv_used=1,
    sv_tested=0, sv_login=1, maxwait=1.5, pool_mode="transaction", pool_size=5, min_pool_size=0,
    backend="postgresql://10.0.0.9:5432",
)  # fmt: skip


class Bouncer:
    name, system, address, port = "pgbouncer://10.0.0.5:6432", "pgbouncer", "10.0.0.5", 6432

    def read(self) -> Reading:
        return Reading(
            groups=(ConnectionGroup("active", "app", "", 7),
                    ConnectionGroup("waiting", "app", "", 2)),
            limit=100, pools=(POOL,), stats=(ProxyDatabaseStats("orders", 12.5, 0.25),),
            version="1.18.0",
        )  # fmt: skip

    def close(self) -> None:
        pass


def _poller() -> Poller:
    poller = Poller([Bouncer()], clock=ManualClock())
    poller.poll_once()
    return poller


def _registry_with_app_pool() -> PoolRegistry:
    reg = PoolRegistry(clock=ManualClock())
    reg.register(PoolIdentity("app-pool", "postgresql", "10.0.0.5", 6432, "orders"), max_size=4)
    return reg


def test_prometheus_merges_proxy_pools_into_the_pool_families() -> None:
    prom = CollectorRegistry(auto_describe=False)
    attach(_poller(), register_collector(prom, registry=_registry_with_app_pool()))
    text = generate_latest(prom).decode()
    assert text.count("# TYPE pool_connection_usage gauge") == 1  # one family, both pool kinds
    name = 'pool_name="pgbouncer://10.0.0.5:6432/orders?user=app"'
    assert f'pool_connection_usage{{pool_connection_state="used",{name}}} 3.0' in text
    assert f'pool_connection_usage{{pool_connection_state="idle",{name}}} 2.0' in text
    assert 'pool_connection_usage{pool_connection_state="used",pool_name="app-pool"} 0.0' in text
    assert f"pool_connection_pending_requests{{{name}}} 2.0" in text
    assert f"pool_connection_oldest_wait_seconds{{{name}}} 1.5" in text
    assert (
        'pool_proxy_wait_time_seconds_total{db_namespace="orders",'
        'pool_proxy_name="pgbouncer://10.0.0.5:6432"} 12.5' in text
    )
    for spec in (*PROXY_METRICS.values(), *BACKEND_METRICS.values()):
        assert f"# TYPE {spec.prometheus.removesuffix('_total')}" in text, spec.name


def _otel_metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


def test_otel_observable_instruments_report_the_same_points() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    bridge = otel.enable(meter_provider=provider, registry=_registry_with_app_pool())
    attach(_poller(), bridge)
    try:
        metrics = _otel_metrics(reader)
        servers = {
            p.attributes["pool.proxy.server.state"]: p.value
            for p in metrics["pool.proxy.server.connections"].data.data_points
        }
        assert servers == {"active": 3, "idle": 1, "used": 1, "tested": 0, "login": 1}
        usage = {
            (p.attributes["pool.name"], p.attributes["pool.connection.state"]): p.value
            for p in metrics["pool.connection.usage"].data.data_points
        }
        assert usage[("pgbouncer://10.0.0.5:6432/orders?user=app", "used")] == 3
        assert usage[("app-pool", "used")] == 0
        up = metrics["backend.up"].data.data_points
        assert [(dict(p.attributes), p.value) for p in up] == [
            ({"backend.name": "pgbouncer://10.0.0.5:6432", "backend.system": "pgbouncer"}, 1)
        ]
        reported = [s for s in (*PROXY_METRICS.values(), *BACKEND_METRICS.values())
                    if s.name in metrics]  # fmt: skip
        assert len(reported) == len(PROXY_METRICS) + len(BACKEND_METRICS) - 1  # no reserved
        for spec in reported:
            assert metrics[spec.name].unit == spec.unit, spec.name
    finally:
        bridge.disable()
        provider.shutdown()


def test_lazy_names_are_the_objects_not_their_modules() -> None:
    """``poolmon.backends`` imports its parts on first use; a name is never shadowed by a
    submodule of the same name once that submodule is imported (the import system binds it)."""
    import importlib

    import poolmon.backends as backends

    for name, module in backends._LAZY.items():
        importlib.import_module(f"poolmon.backends.{module}")
        value = getattr(backends, name)
        assert value is getattr(importlib.import_module(f"poolmon.backends.{module}"), name)
    assert callable(backends.serve) and not isinstance(backends.serve, type(importlib))
