"""The ledger's lock-free hot lane (poolmon.core.lane): same numbers as the locked path, bounded
memory, and closed whenever a subscriber or leak bookkeeping needs the locked path."""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Protocol, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolmon.core.catalog import BUCKETS
from poolmon.core.clock import ManualClock
from poolmon.core.events import PoolEvent
from poolmon.core.identity import PoolIdentity
from poolmon.core.lane import FOLD_AT, fold_samples, take_samples
from poolmon.core.ledger import PoolLedger

BOUNDS = BUCKETS["wait_time"]
durations = st.floats(min_value=-1.0, max_value=100.0, allow_nan=False)


@given(st.lists(durations, max_size=300))
def test_fold_equals_one_bisect_per_sample(samples: list[float]) -> None:
    reference = [0] * (len(BOUNDS) + 1)
    for value in samples:
        reference[bisect_left(BOUNDS, value)] += 1
    counts = [0] * (len(BOUNDS) + 1)
    total = fold_samples(counts, BOUNDS, list(samples))
    assert counts == reference
    assert total == pytest.approx(sum(v for v in samples if v > 0.0))


def test_fold_puts_a_sample_equal_to_a_bound_in_that_bucket() -> None:
    counts = [0] * (len(BOUNDS) + 1)
    fold_samples(counts, BOUNDS, [BOUNDS[0], BOUNDS[3], BOUNDS[-1], BOUNDS[-1] * 2])
    assert (counts[0], counts[3], counts[len(BOUNDS) - 1], counts[len(BOUNDS)]) == (1, 1, 1, 1)


def test_take_samples_leaves_later_appends_for_the_next_fold() -> None:
    samples = [1.0, 2.0]
    taken = take_samples(samples)
    samples.append(3.0)  # what a writer racing with the fold would leave behind
    assert (taken, samples) == ([1.0, 2.0], [3.0])


class _SampleLists(Protocol):
    """The sample lists both lanes expose beyond LaneProtocol (the compiled one's stay empty)."""

    @property
    def waits(self) -> Sequence[float]: ...

    @property
    def uses(self) -> Sequence[float]: ...


def _ledger(clock: ManualClock, *, stack_sample_every: int = 0) -> PoolLedger:
    return PoolLedger(PoolIdentity("lane"), clock=clock, stack_sample_every=stack_sample_every)


def _lane_open(ledger: PoolLedger) -> bool:
    # A fresh read each time: the flag changes under method calls, which mypy's narrowing of
    # ``ledger.lane.open`` after an assert would not see.
    return ledger.lane.open


def _cycle(ledger: PoolLedger, clock: ManualClock, conn: int, waited: float, used: float) -> None:
    t0 = clock.monotonic()
    clock.advance(waited)
    ledger.borrow(conn, t0)
    clock.advance(used)
    ledger.release(conn)


@pytest.mark.parametrize("lane_open", [True, False], ids=["hot-lane", "locked-path"])
def test_both_paths_give_the_same_snapshot(*, lane_open: bool) -> None:
    clock = ManualClock()
    ledger = _ledger(clock)
    if not lane_open:
        ledger.subscribe(lambda event: None)
    assert ledger.lane.open is lane_open
    conn = ledger.create(clock.monotonic())
    for i in range(2000):
        _cycle(ledger, clock, conn, waited=(i % 7) * 0.0003, used=(i % 5) * 0.01)
    snap = ledger.snapshot()
    assert (snap.used, snap.idle, snap.wait_time.count, snap.use_time.count) == (0, 1, 2000, 2000)
    # The same totals the locked path computes one bisect at a time.
    expected_wait = [0] * (len(BOUNDS) + 1)
    for i in range(2000):
        expected_wait[bisect_left(BOUNDS, (i % 7) * 0.0003)] += 1
    assert list(snap.wait_time.counts) == expected_wait
    assert snap.use_time.sum == pytest.approx(sum((i % 5) * 0.01 for i in range(2000)))


def test_sample_lists_stay_bounded_without_any_snapshot() -> None:
    clock = ManualClock()
    ledger = _ledger(clock)
    conn = ledger.create(clock.monotonic())
    lane = cast(_SampleLists, ledger.lane)
    longest = 0
    for _ in range(10 * FOLD_AT):
        _cycle(ledger, clock, conn, waited=0.0, used=0.001)
        longest = max(longest, len(lane.waits), len(lane.uses))
    assert longest <= FOLD_AT + 1
    assert ledger.snapshot().use_time.count == 10 * FOLD_AT


def test_a_subscriber_closes_the_lane_and_sees_every_later_event() -> None:
    clock = ManualClock()
    ledger = _ledger(clock)
    conn = ledger.create(clock.monotonic())
    _cycle(ledger, clock, conn, 0.0, 0.001)
    seen: list[PoolEvent] = []
    ledger.subscribe(seen.append)
    assert not _lane_open(ledger)
    _cycle(ledger, clock, conn, 0.0, 0.001)
    assert [e.kind for e in seen] == ["open", "borrow", "return"]
    ledger.unsubscribe(seen.append)
    assert _lane_open(ledger)


def test_a_flagged_leak_closes_the_lane_until_it_comes_back() -> None:
    clock = ManualClock()
    ledger = _ledger(clock)
    conn = ledger.create(clock.monotonic())
    ledger.borrow(conn, clock.monotonic())
    clock.advance(10.0)
    assert [leak.conn for leak in ledger.check_leaks(5.0)] == [conn]
    assert not _lane_open(ledger)  # the return must clear the flag: the locked path does that
    ledger.release(conn)
    assert _lane_open(ledger)
    assert ledger.snapshot().errors["leak_suspected"] == 1


def test_stack_sampling_keeps_the_lane_closed() -> None:
    assert not _ledger(ManualClock(), stack_sample_every=1).lane.open


def test_samples_not_folded_before_a_fork_are_not_counted_in_the_child() -> None:
    clock = ManualClock()
    ledger = _ledger(clock)
    conn = ledger.create(clock.monotonic())
    _cycle(ledger, clock, conn, 0.0, 0.001)
    # Recorded in the lane, not drained into the ledger yet: it belongs to the parent's totals.
    assert sum(ledger._use_counts) == 0
    ledger.after_fork_in_child()
    snap = ledger.snapshot()
    assert (snap.wait_time.count, snap.use_time.count, snap.idle) == (0, 0, 1)
    assert snap.identity.pid == os.getpid()


def test_concurrent_lane_writers_and_snapshots_lose_nothing() -> None:
    ledger = PoolLedger(PoolIdentity("lane-threads"))
    threads, pairs = 8, 5000
    conns = [ledger.create(ledger.now()) for _ in range(threads)]
    stop = threading.Event()
    problems: list[BaseException] = []

    def reader() -> None:
        # Snapshots and leak scans iterate the live state while writers change its size.
        while not stop.is_set():
            try:
                ledger.snapshot(leak_threshold=0.0)
                ledger.connections()
            except BaseException as exc:
                problems.append(exc)
                return

    def writer(conn: int) -> None:
        for _ in range(pairs):
            ledger.borrow(conn, ledger.now())
            ledger.release(conn)

    watcher = threading.Thread(target=reader)
    watcher.start()
    workers = [threading.Thread(target=writer, args=(c,)) for c in conns]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert problems == []
    snap = ledger.snapshot()
    assert (snap.wait_time.count, snap.use_time.count) == (threads * pairs, threads * pairs)
    assert (snap.used, snap.idle) == (0, threads)
