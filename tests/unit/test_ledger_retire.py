"""``PoolLedger.retire``: safe from a garbage-collection callback, even one that interrupts this
ledger's own lock holder on the same thread."""

from __future__ import annotations

from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry


def _ledger_with_connections() -> tuple[PoolLedger, ManualClock]:
    clock = ManualClock()
    ledger = PoolRegistry(clock=clock).register(PoolIdentity("p"), max_size=3)
    conns = [ledger.create(clock.monotonic()) for _ in range(3)]
    ledger.borrow(conns[0])
    clock.advance(5.0)
    return ledger, clock


def test_retire_evicts_everything_and_closes() -> None:
    ledger, _ = _ledger_with_connections()
    ledger.retire()
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.closed) == (0, 0, True)
    assert snap.evictions["pool_closed"] == 3
    assert snap.lifetime.sum == 15.0


def test_retire_while_this_thread_holds_the_lock_defers_instead_of_deadlocking() -> None:
    ledger, _ = _ledger_with_connections()
    ledger._lock.acquire()  # as if collection started inside one of the ledger's own methods
    try:
        ledger.retire()  # a plain Lock: a blocking acquire here would never return
    finally:
        ledger._lock.release()
    snap = ledger.snapshot()  # the next lock holder finishes the work
    assert (snap.idle, snap.used, snap.closed) == (0, 0, True)
    assert snap.evictions["pool_closed"] == 3
