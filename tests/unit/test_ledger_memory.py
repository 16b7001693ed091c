"""A ledger's memory is bounded by its live connections, never by the number of events."""

from __future__ import annotations

import gc
import tracemalloc

from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry


def _churn(ledger: PoolLedger, clock: ManualClock, rounds: int) -> None:
    """Every kind of event, with connections coming and going and leaks flagged and cleared."""
    live: list[int] = []
    for i in range(rounds):
        t0 = clock.monotonic()
        clock.advance(0.001)
        if len(live) < 4:
            live.append(ledger.create(t0))
        conn = live[i % len(live)]
        if i % 7 == 0:
            ledger.wait()
            ledger.borrow(conn, t0, queued=True)
        else:
            ledger.borrow(conn, t0)
        clock.advance(0.002)
        if i % 50 == 0:
            ledger.check_leaks(0.001)  # flags the outstanding borrow
        ledger.release(conn)
        if i % 11 == 0:
            ledger.validate(conn, clock.monotonic(), ok=True)
        if i % 13 == 0:
            ledger.wait()
            ledger.timeout(t0, "no connection")
        if i % 17 == 0:
            ledger.create_failed(t0, "refused")
        if i % 19 == 0:
            ledger.evict(live.pop(i % len(live)), "max_lifetime")


def _allocated_by_ledger_module() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    return sum(
        stat.size
        for stat in snapshot.statistics("filename")
        if stat.traceback[0].filename.endswith(("ledger.py", "snapshot.py", "events.py"))
    )


def test_memory_does_not_grow_with_events() -> None:
    clock = ManualClock()
    ledger = PoolRegistry(clock=clock).register(
        PoolIdentity("p"), max_size=4, stack_sample_every=50
    )
    tracemalloc.start()
    try:
        _churn(ledger, clock, 1_000)  # warm up: every structure has reached its working size
        before = _allocated_by_ledger_module()
        _churn(ledger, clock, 20_000)  # twenty times as many events again
        after = _allocated_by_ledger_module()
    finally:
        tracemalloc.stop()
    snap = ledger.snapshot()
    assert snap.borrows == 21_000  # the events really were recorded
    # A few hundred bytes of slack for dict resizing; per-event growth would be megabytes.
    assert after - before < 4_096, (before, after)
