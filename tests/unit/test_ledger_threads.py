"""Exactness under concurrency: many threads recording on one ledger lose no update.

Each thread owns its own connection (a real pool never lends one connection to two callers), so
the only shared state is the ledger's: live-state dicts, counters, histogram buckets, pending.
A short switch interval makes the interpreter swap threads far more often than usual.

Honest scope: CPython 3.11 only switches threads at calls and backward jumps, so a bare
``counts[i] += 1`` cannot lose an update there even without the lock; the counter test guards
interpreters that switch anywhere (free-threaded builds). The JSONL test does fail today when the
ledger's lock is replaced by a no-op (checked by hand): waits from two threads then reach the
stream out of order and the checker reports ``pending-mismatch``.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from poolmon.conformance import validate_stream
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import JsonlSink

THREADS = 16
PAIRS = 20_000
WAIT_EVERY = 10  # every 10th borrow queues first (wait, then borrow queued=True)
TIMEOUT_EVERY = 100  # every 100th cycle also has a waiter that times out


@pytest.fixture
def fast_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _run_threads(n: int, body: Callable[[int], None]) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            body(index)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert errors == []


def _cycles(ledger: PoolLedger, conn: int, pairs: int) -> None:
    now = ledger.now
    for i in range(pairs):
        if i % WAIT_EVERY == 0:
            t0 = now()
            ledger.wait()
            ledger.borrow(conn, t0, queued=True)
        else:
            ledger.borrow(conn)
        if i % TIMEOUT_EVERY == 0:
            t0 = now()
            ledger.wait()
            ledger.timeout(t0, "timed out")
        ledger.release(conn)


def test_16_threads_x_20000_pairs_every_counter_exact(fast_switching: None) -> None:
    ledger = PoolRegistry().register(PoolIdentity("threads"), max_size=THREADS)
    conns = [ledger.create(ledger.now()) for _ in range(THREADS)]

    _run_threads(THREADS, lambda i: _cycles(ledger, conns[i], PAIRS))

    snap = ledger.snapshot()
    total = THREADS * PAIRS
    assert snap.borrows == total
    assert snap.returns == total
    assert snap.wait_time.count == total
    assert snap.use_time.count == total
    assert snap.timeouts == THREADS * (PAIRS // TIMEOUT_EVERY)
    assert snap.errors["timeout"] == THREADS * (PAIRS // TIMEOUT_EVERY)
    assert sum(snap.errors.values()) == snap.timeouts
    assert snap.creates == THREADS
    assert (snap.used, snap.pending, snap.idle) == (0, 0, THREADS)
    assert snap.oldest_use == 0.0
    assert sorted(ledger.connections()["idle"]) == sorted(conns)


def test_concurrent_jsonl_stream_is_ordered_and_conforms(fast_switching: None) -> None:
    # Events are emitted under the ledger's lock, so the JSONL stream written by several
    # threads is in a consistent order: the checker must find no state-machine violation.
    buffer = io.StringIO()
    ledger = PoolRegistry().register(PoolIdentity("threads-jsonl"), max_size=8)
    ledger.subscribe(JsonlSink(buffer))
    conns = [ledger.create(ledger.now()) for _ in range(8)]

    _run_threads(8, lambda i: _cycles(ledger, conns[i], 300))

    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1 + 8 + 8 * (300 * 2 + 300 // WAIT_EVERY + 2 * (300 // TIMEOUT_EVERY))
    assert validate_stream(lines) == []
    snap = ledger.snapshot()
    assert (snap.used, snap.pending, snap.borrows) == (0, 0, 8 * 300)
