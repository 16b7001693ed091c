"""The shared metric model: names, attributes and semconv mapping."""

from __future__ import annotations

from poolmon.core import ManualClock, PoolRegistry
from poolmon.core.catalog import METRICS, SELF_METRICS
from poolmon.core.snapshot import HistogramSnapshot
from poolmon.exporters.model import (
    Attributes,
    Value,
    build_families,
    family_specs,
    prometheus_name,
)
from tests.unit.exporters.workload import add_http_pool, run_workload


def test_translation_reproduces_every_catalog_prometheus_name() -> None:
    for spec in [*METRICS.values(), *SELF_METRICS.values()]:
        assert prometheus_name(spec.name, spec.unit, spec.instrument) == spec.prometheus


def test_translation_rules() -> None:
    assert prometheus_name("db.client.connection.count", "{connection}", "updowncounter") == (
        "db_client_connection_count"
    )
    assert prometheus_name("a.b", "s", "histogram") == "a_b_seconds"
    assert prometheus_name("a.b", "{x}", "counter") == "a_b_total"
    assert prometheus_name("a.b_total", "", "counter") == "a_b_total"


def _families(*, semconv: bool) -> dict[str, dict[Attributes, Value]]:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    run_workload(reg, clock)
    add_http_pool(reg, clock)
    add_http_pool(reg, clock)  # a second HTTP pool to the same server: merged under semconv
    fams = build_families(reg.snapshot(), {"poolmon.export.errors": {"otlp": 3}}, semconv=semconv)
    return {f.spec.name: f.points for f in fams}


def test_plain_families_keyed_by_pool_name() -> None:
    fams = _families(semconv=False)
    counts = fams["pool.connection.usage"]
    pools = {dict(k)["pool.name"] for k in counts}
    assert pools == {
        "postgresql://127.0.0.1:5432/shop",
        "https://api.example.com:443",
        "https://api.example.com:443#2",
    }
    assert fams["poolmon.pools"] == {(): 3.0}
    assert fams["poolmon.export.errors"] == {(("exporter", "otlp"),): 3.0}
    assert "db.client.connection.count" not in fams


def test_semconv_database_and_http_names() -> None:
    fams = _families(semconv=True)
    db = fams["db.client.connection.count"]
    assert {
        (
            ("db.client.connection.pool.name", "postgresql://127.0.0.1:5432/shop"),
            ("db.client.connection.state", "used"),
        ): 2.0,
    }.items() <= db.items()
    # Unmapped metrics keep poolmon's names; mapped ones leave the poolmon family.
    assert any(dict(k).get("pool.name", "").startswith("postgresql") for k in fams["pool.info"])
    assert not any(
        dict(k).get("pool.name", "").startswith("postgresql") for k in fams["pool.connection.usage"]
    )
    http = fams["http.client.open_connections"]
    key = (
        ("http.connection.state", "idle"),
        ("server.address", "api.example.com"),
        ("server.port", "443"),
        ("url.scheme", "https"),
    )
    assert http[key] == 2.0  # one idle connection in each of the two pools, summed
    duration = fams["http.client.connection.duration"]
    assert all(isinstance(v, HistogramSnapshot) for v in duration.values())


def test_family_specs_stable_and_unique() -> None:
    for semconv in (False, True):
        names = [s.name for s in family_specs(semconv=semconv)]
        assert len(names) == len(set(names))
        proms = [s.prometheus for s in family_specs(semconv=semconv)]
        assert len(proms) == len(set(proms))
