"""Fairness: queued callers are served in arrival order among themselves, whatever the barging
mode (strict hand-off, the default bound, or a bound never reached), and nobody starves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from poolmon.core.registry import PoolRegistry
from poolmon.pool import Pool, factory
from tests.unit.pool._support import Recorder


def _equals(read: Callable[[], int], expected: int) -> Callable[[], bool]:
    """A condition for :func:`_wait_until` with ``expected`` bound now (not the loop's last)."""
    return lambda: read() == expected


def _wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.0005)


# 0: strict hand-off; None: the default bound (1 ms, so the late waiters are handed off);
# 3600: normal mode throughout (every return parks the connection and wakes the head).
MODES = [0.0, None, 3600.0]


@pytest.mark.parametrize("handoff_after", MODES, ids=["strict", "default", "normal"])
def test_waiters_served_in_arrival_order(
    registry: PoolRegistry, handoff_after: float | None
) -> None:
    rec = Recorder(registry)
    # None: the pool's default (the keyword left out).
    bound: dict[str, Any] = {} if handoff_after is None else {"handoff_after": handoff_after}
    pool = Pool(factory(object), max_size=4, maintain=False, validate_after=None, **bound)
    held = [pool.getconn() for _ in range(4)]
    served: list[int] = []
    release = [threading.Event() for _ in range(8)]

    def worker(i: int) -> None:
        conn = pool.getconn(timeout=30)
        served.append(i)
        release[i].wait(30)
        pool.putconn(conn)

    threads = []
    for i in range(8):  # queue them one by one so arrival order is known
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        threads.append(t)
        _wait_until(_equals(lambda: pool.waiting, i + 1), f"{i + 1} waiters")
    # Serve one connection at a time; each must go to the oldest waiter.
    for n, conn in enumerate(held):
        pool.putconn(conn)
        _wait_until(_equals(lambda: len(served), n + 1), "a waiter to be served")
    for n in range(4):
        release[n].set()
        _wait_until(_equals(lambda: len(served), n + 5), "a waiter to be served")
    for event in release:
        event.set()
    for t in threads:
        t.join(10)
    assert served == list(range(8))
    pool.close()
    rec.assert_valid()


@pytest.mark.parametrize("handoff_after", [0.0, None], ids=["strict", "default"])
def test_no_thread_starves_under_contention(
    registry: PoolRegistry, handoff_after: float | None
) -> None:
    rec = Recorder(registry)
    # None: the pool's default (the keyword left out).
    bound: dict[str, Any] = {} if handoff_after is None else {"handoff_after": handoff_after}
    pool = Pool(factory(object), max_size=4, maintain=False, validate_after=None, **bound)
    total = 2000
    counts = [0] * 8
    done = threading.Event()
    lock = threading.Lock()
    finished = [0]
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        while not done.is_set():
            conn = pool.getconn(timeout=30)
            counts[i] += 1
            # Hold it as real callers do, in a call that releases the GIL (I/O stands in here).
            # With a zero hold, whichever thread holds the GIL cycles alone through its switch
            # interval before anyone else can even queue: that measures the interpreter's
            # scheduler, not the pool's hand-off.
            time.sleep(0.0002)
            pool.putconn(conn)
            with lock:
                finished[0] += 1
                if finished[0] >= total:
                    done.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) >= total
    assert min(counts) >= 0.5 * max(counts), counts
    snap = pool.snapshot()
    assert (snap.used, snap.pending) == (0, 0)
    assert snap.borrows == snap.returns == sum(counts)
    pool.close()
    rec.assert_valid()
