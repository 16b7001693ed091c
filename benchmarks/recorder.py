"""Recorder cost: a ledger borrow+return pair vs prometheus_client and the OpenTelemetry SDK.

All three cases record the same information for one borrow+return cycle, measured in one run:

* poolmon: ``ledger.borrow(conn)`` + ``ledger.release(conn)`` (two clock reads, live state, a
  wait-time and a use-time histogram bucket, counts implied by the histograms);
* prometheus_client: a labelled child's ``Counter.inc()`` + ``Histogram.observe()``;
* OpenTelemetry SDK: ``Counter.add()`` + ``Histogram.record()`` with a ``pool.name`` attribute.

The issue's bar: poolmon / prometheus_client <= 1.0. Ratios, not absolute times, are what count
(this VM is slower than the design's reference machine).

Usage: python -m benchmarks recorder [--n N] [--repeat R]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks._timing import best_of, print_table

__all__ = ["main"]


def _poolmon_case() -> Callable[[int], None]:
    from poolmon.core.identity import PoolIdentity
    from poolmon.core.registry import PoolRegistry

    ledger = PoolRegistry().register(PoolIdentity("bench"), max_size=10)
    conn = ledger.create(ledger.now())
    borrow = ledger.borrow
    release = ledger.release

    def run(n: int) -> None:
        for _ in range(n):
            borrow(conn)
            release(conn)

    return run


def _poolmon_subscribed_case() -> Callable[[int], None]:
    """The same cycle with a (trivial) subscriber attached: events are built per call."""
    from poolmon.core.identity import PoolIdentity
    from poolmon.core.registry import PoolRegistry

    ledger = PoolRegistry().register(PoolIdentity("bench-sub"), max_size=10)
    ledger.subscribe(lambda event: None)
    conn = ledger.create(ledger.now())
    borrow = ledger.borrow
    release = ledger.release

    def run(n: int) -> None:
        for _ in range(n):
            borrow(conn)
            release(conn)

    return run


def _prometheus_case() -> Callable[[int], None]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    counter = Counter("bench_borrows", "borrows", ["pool_name"], registry=reg).labels("bench")
    hist = Histogram("bench_use_seconds", "use", ["pool_name"], registry=reg).labels("bench")
    inc = counter.inc
    observe = hist.observe

    def run(n: int) -> None:
        for _ in range(n):
            inc()
            observe(0.001)

    return run


def _otel_case() -> Callable[[int], None]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    meter = provider.get_meter("bench")
    counter = meter.create_counter("bench.borrows")
    hist = meter.create_histogram("bench.use_time", unit="s")
    attrs = {"pool.name": "bench"}
    add = counter.add
    record = hist.record

    def run(n: int) -> None:
        for _ in range(n):
            add(1, attrs)
            record(0.001, attrs)

    return run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks recorder")
    parser.add_argument("--n", type=int, default=100_000, help="cycles per timed run")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best counts")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be >= 1")
    cases = [
        ("poolmon ledger borrow+release", _poolmon_case(), args.n),
        ("poolmon ledger borrow+release (subscriber on)", _poolmon_subscribed_case(), args.n // 4),
        ("prometheus_client inc+observe", _prometheus_case(), args.n),
        ("opentelemetry sdk add+record", _otel_case(), args.n // 4),
    ]
    # Round-robin: every round times each case once, so a load spike from other processes on
    # this shared machine hits all cases alike instead of one; the best round per case counts.
    best = {name: float("inf") for name, _, _ in cases}
    for _ in range(args.repeat):
        for name, fn, n in cases:
            best[name] = min(best[name], best_of(fn, max(n, 1), repeat=1))
    rows = [(name, best[name]) for name, _, _ in cases]
    ratios = print_table(
        "recorder cost per borrow+return pair", rows, baseline="prometheus_client inc+observe"
    )
    verdict = ratios["poolmon ledger borrow+release"]
    print(f"\nbar: poolmon / prometheus_client = {verdict:.2f} (must be <= 1.00)")
    otel = ratios["opentelemetry sdk add+record"]
    print(f"     opentelemetry sdk / prometheus_client = {otel:.2f}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
