"""Exporters: one collection of 1,000 pools per exporter, and hot-path cost with exporters attached.

Collection cases (each is one full scrape/collection of 1,000 pools, every catalog metric):

* ``snapshot only``: ``registry.snapshot()`` - the floor every exporter pays;
* ``prometheus /metrics text``: poolmon's collector through ``generate_latest``;
* ``peer: prometheus_client native``: the same series held in prometheus_client's own labelled
  Gauges/Counters/Histograms, rendered by ``generate_latest`` (what a hand-instrumented app pays);
* ``otel collect``: the OTel bridge through an SDK in-memory reader (observable instruments +
  histogram hook);
* ``otel collect + OTLP encode``: the same, then encoded to the OTLP protobuf request;
* ``multiprocess merge``: the pre-fork endpoint reading 3 worker files of 1,000 pools each.

Hot path: a ledger borrow+return with nothing attached vs with the Prometheus collector and the OTel
bridge attached (should be ~1.0: exporters only read at collection time).

Usage: python -m benchmarks exporters [--pools N] [--n N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks._timing import best_of, print_table

if TYPE_CHECKING:  # poolmon is imported inside the functions: the runner lists modules cheaply
    from poolmon.core.registry import PoolRegistry

__all__ = ["main"]


def _registry(pools: int) -> PoolRegistry:
    from poolmon.core import ManualClock, PoolRegistry
    from poolmon.core.identity import identity_from_url

    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    for i in range(pools):
        ledger = reg.register(
            identity_from_url(f"postgresql://10.0.{i // 250}.{i % 250}:5432/db{i}"),
            max_size=10,
            clock=clock,
        )
        conns = [ledger.create(clock.monotonic()) for _ in range(3)]
        for j in range(20):
            t0 = clock.monotonic()
            clock.advance(0.0005 * (j % 7))
            ledger.borrow(conns[j % 3], t0)
            clock.advance(0.002)
            ledger.release(conns[j % 3])
        ledger.borrow(conns[0])
    return reg


def _native_peer(reg: PoolRegistry) -> Callable[[], bytes]:
    """The same series in prometheus_client's own metric objects."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from poolmon.core.catalog import METRICS

    prom = CollectorRegistry()
    histograms: dict[str, Histogram] = {}
    counters: dict[str, Counter] = {}
    gauges: dict[str, Gauge] = {}
    for spec in METRICS.values():
        base = spec.prometheus.removesuffix("_total")
        labels = spec.prometheus_labels
        if spec.instrument == "histogram":
            histograms[spec.name] = Histogram(
                base, spec.description, labels, registry=prom, buckets=spec.buckets or ()
            )
        elif spec.instrument == "counter":
            counters[spec.name] = Counter(base, spec.description, labels, registry=prom)
        else:
            gauges[spec.name] = Gauge(base, spec.description, labels, registry=prom)
    for snap in reg.snapshot():
        for spec in METRICS.values():
            values = {
                "pool.name": snap.name,
                "pool.connection.state": "idle",
                "outcome": "ok",
                "pool.eviction.reason": "idle_timeout",
                "error.type": "timeout",
            }
            attrs = snap.identity.as_attributes()
            label_values = [values.get(a, attrs.get(a, "")) for a in spec.attributes]
            if spec.instrument == "histogram":
                histograms[spec.name].labels(*label_values).observe(0.001)
            elif spec.instrument == "counter":
                counters[spec.name].labels(*label_values).inc()
            else:
                gauges[spec.name].labels(*label_values).set(1)

    def render() -> bytes:
        return generate_latest(prom)

    return render


def _collection_cases(pools: int) -> list[tuple[str, Callable[[], object]]]:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from poolmon.exporters import otel
    from poolmon.exporters.multiprocess import MultiProcessCollector, write_snapshot
    from poolmon.exporters.prometheus import PoolmonCollector

    reg = _registry(pools)
    prom = CollectorRegistry()
    prom.register(PoolmonCollector(reg))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    otel.enable(meter_provider=provider, registry=reg)

    def otlp() -> object:
        data = reader.get_metrics_data()
        assert data is not None
        return encode_metrics(data).SerializeToString()

    tmp = Path(tempfile.mkdtemp(prefix="poolmon-bench-"))
    path = write_snapshot(tmp, reg)
    data = json.loads(path.read_text())
    for k in (1, 2):  # two more "workers" (pids of this process so they count as alive)
        (tmp / f"poolmon-{data['pid']}{k}.json").write_text(json.dumps(data))
    mp = CollectorRegistry()
    mp.register(MultiProcessCollector(tmp, registry=reg))
    native = _native_peer(reg)
    return [
        ("snapshot only", reg.snapshot),
        ("prometheus /metrics text", lambda: generate_latest(prom)),
        ("peer: prometheus_client native", native),
        ("otel collect (in-memory reader)", reader.get_metrics_data),
        ("otel collect + OTLP encode", otlp),
        ("multiprocess merge (3 x pools)", lambda: generate_latest(mp)),
    ]


def _hot_path(*, attached: bool) -> Callable[[int], None]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from poolmon.core.identity import PoolIdentity
    from poolmon.core.registry import PoolRegistry
    from poolmon.exporters import otel
    from poolmon.exporters.prometheus import register_collector

    reg = PoolRegistry()
    ledger = reg.register(PoolIdentity("bench"), max_size=10)
    conn = ledger.create(ledger.now())
    if attached:
        prom = CollectorRegistry()
        register_collector(prom, registry=reg)
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        otel.enable(meter_provider=provider, registry=reg)
        generate_latest(prom)
        reader.get_metrics_data()
    borrow, release = ledger.borrow, ledger.release

    def run(n: int) -> None:
        for _ in range(n):
            borrow(conn)
            release(conn)

    return run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks exporters")
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--n", type=int, default=200_000, help="hot-path cycles per run")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    cases = _collection_cases(args.pools)
    rows = []
    for name, fn in cases:
        fn()  # warm up (first OTel collection creates storages)

        def collect(n: int, fn: Callable[[], object] = fn) -> None:
            for _ in range(n):
                fn()

        rows.append((name, best_of(collect, 1, args.repeat)))
    print_table(f"One collection of {args.pools} pools", rows, "snapshot only")
    print(
        "  (absolute ms per collection: " + ", ".join(f"{n}={s * 1e3:.0f}" for n, s in rows) + ")"
    )

    plain = _hot_path(attached=False)
    attached = _hot_path(attached=True)
    # Interleave the two so drift on a shared machine hits both alike.
    best_plain = best_attached = float("inf")
    for _ in range(args.repeat):
        best_plain = min(best_plain, best_of(plain, args.n, 1))
        best_attached = min(best_attached, best_of(attached, args.n, 1))
    print_table(
        "Hot path: borrow+return",
        [("no exporters", best_plain), ("prometheus + otel attached", best_attached)],
        "no exporters",
    )
    return 0
