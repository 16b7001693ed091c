"""Smoke tests of the ledger's bookkeeping with an injected clock."""

from __future__ import annotations

from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry


def test_cycle_counts_and_times() -> None:
    clock = ManualClock()
    ledger = PoolRegistry(clock=clock).register(PoolIdentity("p"), max_size=2)
    t0 = clock.monotonic()
    clock.advance(0.002)
    conn = ledger.create(t0)
    t1 = clock.monotonic()
    ledger.wait()
    clock.advance(0.5)
    ledger.borrow(conn, t1, queued=True)
    clock.advance(0.25)
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (0, 1, 0)
    assert snap.oldest_use == 0.25
    ledger.release(conn)
    clock.advance(10)
    ledger.evict(conn, "idle_timeout")
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.borrows, snap.returns) == (0, 0, 1, 1)
    assert snap.wait_time.sum == 0.5
    assert snap.use_time.sum == 0.25
    assert snap.evictions["idle_timeout"] == 1
    assert snap.lifetime.sum == 10.75
    assert snap.create_time["ok"].count == 1
