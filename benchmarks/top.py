"""poolmon top: CPU per refresh (fetch + parse + model + render), 1,000 pools; bar: 1 Hz < 25 %.

The pages come from poolmon's real Prometheus exporter over a registry of 1,000 pools. Between
two pages *every* pool sees traffic (borrows, waits, creates, an eviction), the worst case for
``top``'s incremental parser; a steady page (nothing changed) is timed too. The HTTP fetch is
timed against a real /metrics endpoint in a separate process, so only the client's CPU counts.
All costs are process CPU time (what "25 % of a core" means), best of several runs. For scale,
prometheus_client's reference parser is timed on the same page.
"""

from __future__ import annotations

import argparse
import functools
import io
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from poolmon.core.clock import ManualClock
from poolmon.core.identity import identity_from_url
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import register_collector
from poolmon.top.model import TopModel, select_rows
from poolmon.top.sources import MetricsUrlSource
from poolmon.top.state import ViewState
from poolmon.top.view import screen

BAR = 0.25  # share of one core at 1 Hz

_SERVER = """
import sys
from benchmarks.top import build_registry
from poolmon.exporters.prometheus import serve
registry, _, _ = build_registry(int(sys.argv[1]))
server = serve(0, registry=registry)
print(server.url, flush=True)
sys.stdin.read()
"""


def build_registry(pools: int) -> tuple[PoolRegistry, ManualClock, list[PoolLedger]]:
    """``pools`` pools over 20 backends, each holding a few connections, some borrowed."""
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    ledgers = []
    for i in range(pools):
        ledger = registry.register(
            identity_from_url(f"postgresql://db{i % 20}:5432/app{i}"), max_size=10
        )
        conns = [ledger.create(clock.monotonic()) for _ in range(1 + i % 5)]
        for c in conns[: i % 3]:
            ledger.borrow(c, clock.monotonic())
        ledgers.append(ledger)
    return registry, clock, ledgers


def _traffic(clock: ManualClock, ledgers: list[PoolLedger], step: int) -> None:
    """Change every pool: a queued borrow and return, a create, an eviction, a timeout."""
    for i, ledger in enumerate(ledgers):
        t0 = clock.monotonic()
        ledger.wait()
        clock.advance(0.0001 * (1 + (i + step) % 7))
        conn = ledger.create(t0)
        ledger.borrow(conn, t0, queued=True)
        ledger.release(conn)
        if (i + step) % 2:
            ledger.evict(conn, "idle_timeout" if i % 3 else "broken")
        if (i + step) % 5 == 0:
            ledger.timeout(t0)


def _cpu(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks top")
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    registry, clock, ledgers = build_registry(args.pools)
    prom = CollectorRegistry(auto_describe=False)
    register_collector(prom, registry=registry)
    pages = []
    for step in range(args.repeat + 1):
        _traffic(clock, ledgers, step)
        pages.append(generate_latest(prom).decode())
    text = pages[-1]
    print(
        f"{args.pools} pools: /metrics page of {text.count(chr(10))} lines, "
        f"{len(text) / 1e6:.1f} MB"
    )

    source = MetricsUrlSource("http://127.0.0.1:1/metrics")
    model = TopModel()
    state = ViewState()
    console = Console(file=io.StringIO(), width=200, height=50, force_terminal=True)
    t = [0.0]

    def refresh(page: str) -> None:
        t[0] += 1.0
        frame = model.update([source.parse(page, t[0])])
        rows = select_rows(frame.rows, state.sort, reverse=state.reverse, text=state.filter)
        console.print(screen(frame, state, rows, height=50))

    refresh(pages[0])
    changing = float("inf")
    for page in pages[1:]:  # every pool changed since the previous page
        changing = min(changing, _cpu(functools.partial(refresh, page), 1))
    steady = _cpu(lambda: refresh(text), args.repeat)

    def parse_two() -> None:
        source.parse(pages[0], 0.0)
        source.parse(text, 1.0)

    parse_only = _cpu(parse_two, 3) / 2

    def first_page() -> None:
        MetricsUrlSource("http://127.0.0.1:1/metrics").parse(text, 0.0)

    first_s = _cpu(first_page, 1)

    def reference() -> None:
        for family in text_string_to_metric_families(text):
            for _ in family.samples:
                pass

    reference_s = _cpu(reference, 1)

    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(args.pools)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()

        def fetch() -> None:
            with urllib.request.urlopen(url, timeout=60) as resp:
                resp.read().decode("utf-8", "replace")

        fetch_s = _cpu(fetch, 3)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)

    print(f"\n  {'step (CPU, best of runs)':52s} {'ms':>8s} {'core@1Hz':>9s}")
    for name, seconds in (
        ("fetch over HTTP + decode (client side)", fetch_s),
        ("refresh, every pool changed: parse+model+render", changing),
        ("refresh, nothing changed: parse+model+render", steady),
        ("parse only, every pool changed", parse_only),
        ("parse only, first page (plans built, once)", first_s),
        ("reference: prometheus_client.parser, one page", reference_s),
    ):
        print(f"  {name:52s} {seconds * 1e3:8.1f} {seconds * 100:8.1f}%")
    print(
        f"\n  reference parser / poolmon's page reader (every pool changed): "
        f"{reference_s / parse_only:.1f}x"
    )
    share = fetch_s + changing
    verdict = "PASS" if share < BAR else "FAIL"
    print(
        f"  1 Hz refresh of {args.pools} pools, every pool changing (fetch + refresh): "
        f"{share * 100:.1f}% of a core (bar < {BAR * 100:.0f}%): {verdict}"
    )
    return 0 if share < BAR else 1
