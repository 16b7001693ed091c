"""Helpers for top's unit tests: a registry with traffic and its real exposition text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity, identity_from_url
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import register_collector
from poolmon.top.samples import PoolSample, SampleBuilder


def exposition(registry: PoolRegistry) -> str:
    prom = CollectorRegistry(auto_describe=False)
    register_collector(prom, registry=registry)
    return generate_latest(prom).decode()


def reference_samples(text: str) -> tuple[PoolSample, ...]:
    """Samples built from prometheus_client's reference parser (the oracle)."""
    builder = SampleBuilder()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            builder.add(sample.name, sample.labels, float(sample.value))
    return builder.build()


def busy_registry(
    pools: int = 3, names: list[str] | None = None
) -> tuple[PoolRegistry, ManualClock]:
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    for i in range(pools):
        if names:
            ident = PoolIdentity(names[i], system="generic")
        else:
            ident = identity_from_url(f"postgresql://user:s3cret@db{i % 2}:5432/app")
        ledger = registry.register(ident, max_size=4 + i)
        traffic(clock, ledger, i)
    return registry, clock


def traffic(clock: ManualClock, ledger: PoolLedger, seed: int) -> None:
    t0 = clock.monotonic()
    clock.advance(0.002)
    a = ledger.create(t0)
    b = ledger.create(t0)
    ledger.create_failed(t0, "connection refused")
    t1 = clock.monotonic()
    ledger.wait()
    clock.advance(0.01 * (seed + 1))
    ledger.borrow(a, t1, queued=True)
    ledger.borrow(b)
    clock.advance(0.5)
    ledger.release(b)
    ledger.evict(b, "idle_timeout" if seed % 2 else "broken")
    ledger.timeout(clock.monotonic() - 1.0)
