"""The spec 1.1 optional metrics of pools with bursts, tenants or routes reach the Prometheus
exposition (the same families the OpenTelemetry bridge reads), tenant names folded past the
cap; a pool without those features adds none of their series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import PoolmonCollector
from poolmon.pool import Pool
from tests.unit.pool._support import ScriptedFactory


def _samples(reg: PoolRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    prom = CollectorRegistry()
    prom.register(PoolmonCollector(reg))
    out = {}
    for fam in text_string_to_metric_families(generate_latest(prom).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_tenant_and_burst_series() -> None:
    reg = PoolRegistry()
    pool = Pool(
        ScriptedFactory(),
        name="shared",
        registry=reg,
        maintain=False,
        max_size=2,
        burst_max=3,
        tenants={"acme": 1},
        tenant_cap=2,
    )
    held = pool.getconn(tenant="acme")
    for tenant in ("globex", "initech", "hooli"):  # the last two fold into "other"
        with pool.connection(tenant=tenant):
            pass
    samples = _samples(reg)
    pool.putconn(held)
    pool.close()
    acme = (("pool_name", "shared"), ("pool_tenant", "acme"))
    assert samples[("pool_tenant_connection_usage", acme)] == 1
    assert samples[("pool_tenant_connection_limit", acme)] == 1
    assert samples[("pool_tenant_borrows_total", acme)] == 1
    other = (("pool_name", "shared"), ("pool_tenant", "other"))
    assert samples[("pool_tenant_borrows_total", other)] == 2
    quota = (("error_type", "quota_exceeded"), ("pool_name", "shared"), ("pool_tenant", "acme"))
    assert samples[("pool_tenant_errors_total", quota)] == 0  # exists at zero
    tenants = {dict(k[1]).get("pool_tenant") for k in samples if k[0].startswith("pool_tenant")}
    assert tenants == {"acme", "globex", "other"}  # bounded by the cap
    assert samples[("pool_connection_burst_max", (("pool_name", "shared"),))] == 1
    assert samples[("pool_connection_burst", (("pool_name", "shared"),))] == 0


def test_a_plain_pool_adds_no_optional_series() -> None:
    reg = PoolRegistry()
    pool = Pool(ScriptedFactory(), name="plain", registry=reg, maintain=False)
    with pool.connection():
        pass
    samples = _samples(reg)
    pool.close()
    assert not [
        k
        for k in samples
        if k[0].startswith(("pool_tenant", "pool_route", "pool_connection_burst"))
    ]


def test_an_error_snapshot_under_the_pool_lock_does_not_deadlock() -> None:
    """A timeout's error carries a snapshot taken under the pool's lock; the optional-metrics
    source must not wait for that (non-reentrant) lock."""
    from poolmon.errors import PoolQuotaExceeded

    reg = PoolRegistry()
    pool = Pool(ScriptedFactory(), registry=reg, maintain=False, max_size=2, tenants={"a": 1})
    held = pool.getconn(tenant="a")
    try:
        pool.getconn(tenant="a", timeout=0.01)
    except PoolQuotaExceeded as exc:
        assert exc.snapshot is not None and exc.snapshot.optional["pool.tenant.borrows"]
    else:
        raise AssertionError("the second borrow of tenant 'a' should wait, then fail")
    pool.putconn(held)
    pool.close()
