"""Bounded barging (``handoff_after``): strict mode, normal mode, starvation mode.

Deterministic: the pool clock is a ManualClock, and each waiter's private lock is wrapped so
that the test decides when a waiter thread may even look at its wake-up (a gate in front of
the real acquire). Threads are only joined or awaited on events; no sleep stands in for
synchronisation and nothing is timed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolTimeout
from poolmon.pool import Pool, sync_pool
from tests.unit.pool._support import Recorder, Res, ScriptedFactory
from tests.unit.pool.test_lifecycle import wait_until


class GatedLock:
    """A waiter's lock behind a gate: its thread blocks on the gate *before* the real acquire,
    so a wake-up stays pending (and can be taken back by a barger) until the test opens it."""

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.calls = 0  # blocking acquires started by the waiter thread

    def acquire(
        self,
        blocking: bool = True,  # noqa: FBT001, FBT002 (Lock.acquire's signature)
        timeout: float = -1,
    ) -> bool:
        if not blocking:  # the pool taking a wake-up back
            return bool(self.inner.acquire(blocking=False))
        self.calls += 1
        self.gate.wait(10)  # bounded: a failing test must not hang the run
        return bool(self.inner.acquire(blocking=True, timeout=timeout))

    def release(self) -> None:
        self.inner.release()


class Gates:
    """Hands a gate to each new waiter, in order; waiters past the list get open gates."""

    def __init__(self, closed: int) -> None:
        self.gates = [threading.Event() for _ in range(closed)]
        self.waiters: list[Any] = []
        self.locks: list[GatedLock] = []

    def make(self, t0: float, *rest: Any) -> Any:
        waiter: Any = _ORIGINAL_WAITER(t0, *rest)  # its lock is replaced by a test double
        n = len(self.waiters)
        if n < len(self.gates):
            gate = self.gates[n]
        else:
            gate = threading.Event()
            gate.set()
        lock = GatedLock(waiter.lock, gate)
        waiter.lock = lock
        self.waiters.append(waiter)
        self.locks.append(lock)
        return waiter


_ORIGINAL_WAITER = sync_pool._Waiter


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rec(registry: PoolRegistry) -> Recorder:
    return Recorder(registry)


@pytest.fixture
def make(registry: PoolRegistry, clock: ManualClock) -> Iterator[Callable[..., Pool[Res]]]:
    pools: list[Pool[Res]] = []

    def build(**options: Any) -> Pool[Res]:
        pool = Pool(
            ScriptedFactory(),
            clock=clock,
            maintain=False,
            validate_after=None,
            rng=lambda: 0.5,
            **options,
        )
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        pool.close()


def gated(monkeypatch: pytest.MonkeyPatch, closed: int) -> Gates:
    gates = Gates(closed)
    monkeypatch.setattr(sync_pool, "_Waiter", gates.make)
    return gates


class Borrower:
    """A thread that borrows once, reports the connection, and returns it when told to."""

    def __init__(self, pool: Pool[Res]) -> None:
        self.pool = pool
        self.conn: Res | None = None
        self.error: BaseException | None = None
        self.got = threading.Event()
        self.give_back = threading.Event()
        self.returned = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn = self.pool.getconn(timeout=30)
        except BaseException as exc:
            self.error = exc
            self.got.set()
            return
        self.got.set()
        self.give_back.wait(30)
        self.pool.putconn(self.conn)
        self.returned.set()

    def result(self) -> Res | None:
        assert self.got.wait(10), "the borrower was never served"
        return self.conn

    def finish(self) -> None:
        self.give_back.set()
        self.thread.join(10)


def queue_up(pool: Pool[Res], n: int) -> Borrower:
    borrower = Borrower(pool)
    wait_until(lambda: pool.waiting == n, f"{n} waiter(s)")
    return borrower


def queued_borrow(rec: Recorder) -> list[tuple[int, float]]:
    return [(e["conn"], e["duration"]) for e in rec.kinds("borrow") if e.get("queued")]


def test_handoff_after_zero_is_strict_fifo_handoff(
    make: Callable[..., Pool[Res]], rec: Recorder
) -> None:
    pool = make(max_size=1, handoff_after=0)
    conn = pool.getconn()
    waiter = queue_up(pool, 1)
    pool.putconn(conn)
    # Handed over inside putconn: nothing parked, nobody left in the queue, no barging.
    assert (pool.idle, pool.waiting) == (0, 0)
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0)
    assert waiter.result() is conn
    waiter.finish()
    assert len(queued_borrow(rec)) == 1
    rec.assert_valid()


def test_normal_mode_lets_a_newcomer_barge_and_the_head_keeps_its_place(
    make: Callable[..., Pool[Res]], rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_pool, "_RETRACTS", 0)  # let the head wake and find nothing
    gates = gated(monkeypatch, closed=1)
    pool = make(max_size=1, handoff_after=10)
    conn = pool.getconn()
    first = queue_up(pool, 1)
    second = queue_up(pool, 2)
    head, behind = gates.waiters
    pool.putconn(conn)
    assert (pool.idle, pool.waiting) == (1, 2) and head.signalled
    assert pool.getconn(timeout=0) is conn  # the barge: the returning side takes it back
    # The head wakes, finds nothing, and sleeps again without losing its place.
    gates.gates[0].set()
    wait_until(lambda: gates.locks[0].calls == 2, "the head to sleep again")
    assert list(pool._waiters) == [head, behind]
    pool.putconn(conn)
    assert first.result() is conn
    assert not second.got.is_set() and pool.waiting == 1
    first.finish()
    assert second.result() is conn
    second.finish()
    assert [c for c, _ in queued_borrow(rec)] == [conn.n, conn.n]  # the two waiters, once each
    rec.assert_valid()


def test_barger_takes_back_a_pointless_wakeup(
    make: Callable[..., Pool[Res]], rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates = gated(monkeypatch, closed=1)
    pool = make(max_size=1, handoff_after=10)
    conn = pool.getconn()
    waiter = queue_up(pool, 1)
    (head,) = gates.waiters
    pool.putconn(conn)
    assert head.signalled
    assert pool.getconn(timeout=0) is conn
    # The head had not looked yet: its wake-up is taken back (it would find nothing).
    assert not head.signalled and head.retracts == 1
    gates.gates[0].set()
    wait_until(lambda: gates.locks[0].calls == 1, "the head to block")
    assert pool.waiting == 1 and not waiter.got.is_set()
    pool.putconn(conn)
    assert waiter.result() is conn
    waiter.finish()
    rec.assert_valid()


def test_starvation_mode_hands_off_once_the_head_waited_the_bound(
    make: Callable[..., Pool[Res]],
    rec: Recorder,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gates = gated(monkeypatch, closed=2)
    pool = make(max_size=1, handoff_after=1.0)
    conn = pool.getconn()
    first = queue_up(pool, 1)  # starts waiting at t=0
    clock.advance(0.5)
    pool.putconn(conn)  # waited 0.5 < 1: normal mode, a barge is allowed
    assert pool.getconn(timeout=0) is conn
    clock.advance(1.0)
    second = queue_up(pool, 2)  # starts waiting at t=1.5
    pool.putconn(conn)  # the head waited 1.5 >= 1: handed straight to it
    assert (pool.idle, pool.waiting) == (0, 1)
    assert gates.waiters[0].entry is not None
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0)  # no barging past a starving head
    gates.gates[0].set()
    assert first.result() is conn
    # The new head waited 0 < 1: starvation mode is over, the next return is parked again.
    first.give_back.set()
    assert first.returned.wait(10)
    assert (pool.idle, pool.waiting) == (1, 1)
    assert pool.getconn(timeout=0) is conn
    clock.advance(1.0)
    pool.putconn(conn)  # now it has waited 1.0: handed off
    assert (pool.idle, pool.waiting) == (0, 0)
    gates.gates[1].set()
    assert second.result() is conn
    first.finish()
    second.finish()
    # Each hand-off recorded the wait on the pool clock.
    assert [d for _, d in queued_borrow(rec)] == [1.5, 1.0]
    rec.assert_valid()


def test_newcomer_does_not_take_an_idle_connection_from_a_starving_head(
    make: Callable[..., Pool[Res]],
    rec: Recorder,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gates = gated(monkeypatch, closed=1)
    pool = make(max_size=1, handoff_after=1.0)
    conn = pool.getconn()
    waiter = queue_up(pool, 1)
    pool.putconn(conn)  # parked for the (not yet running) head
    clock.advance(2.0)  # ... which is starving by now
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0)
    assert pool.idle == 1
    gates.gates[0].set()
    assert waiter.result() is conn
    waiter.finish()
    rec.assert_valid()


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt arriving in a waiting thread."""


def test_interrupted_waiter_gives_back_a_handed_connection(
    make: Callable[..., Pool[Res]], rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted_after_wake(t0: float, *rest: Any) -> Any:
        waiter: Any = _ORIGINAL_WAITER(t0, *rest)  # its lock is replaced by a test double
        inner = waiter.lock

        class Lock:
            def acquire(
                self,
                blocking: bool = True,  # noqa: FBT001, FBT002 (Lock.acquire's signature)
                timeout: float = -1,
            ) -> bool:
                if not blocking:
                    return bool(inner.acquire(blocking=False))
                if inner.acquire(blocking=True, timeout=timeout):
                    raise Interrupt  # after the hand-off: the connection is this waiter's
                return False

            def release(self) -> None:
                inner.release()

        waiter.lock = Lock()
        return waiter

    monkeypatch.setattr(sync_pool, "_Waiter", interrupted_after_wake)
    pool = make(max_size=1, handoff_after=0)
    conn = pool.getconn()
    waiter = queue_up(pool, 1)
    pool.putconn(conn)  # handed to the waiter, which is interrupted as it wakes
    waiter.result()
    assert isinstance(waiter.error, Interrupt)
    assert pool.idle == 1 and pool.getconn(timeout=0) is conn  # given back, not lost
    pool.putconn(conn)
    snap = pool.snapshot()
    assert (snap.used, snap.pending) == (0, 0)
    assert [e["error_type"] for e in rec.kinds("error")] == []  # the wait ended in a borrow
    rec.assert_valid()


def test_interrupted_waiter_leaves_the_queue(
    make: Callable[..., Pool[Res]], rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates = Gates(0)

    def interrupted_while_queued(t0: float, *rest: Any) -> Any:
        waiter = gates.make(t0, *rest)
        inner = waiter.lock

        class Lock:
            def acquire(
                self,
                blocking: bool = True,  # noqa: FBT001, FBT002 (Lock.acquire's signature)
                timeout: float = -1,
            ) -> bool:
                if not blocking:
                    return bool(inner.acquire(blocking=False))
                raise Interrupt

            def release(self) -> None:
                inner.release()

        waiter.lock = Lock()
        return waiter

    monkeypatch.setattr(sync_pool, "_Waiter", interrupted_while_queued)
    pool = make(max_size=1)
    conn = pool.getconn()
    with pytest.raises(Interrupt):
        pool.getconn(timeout=30)
    assert pool.waiting == 0
    pool.putconn(conn)
    assert pool.idle == 1  # parked, not handed to the departed waiter
    assert [(e["error_type"], e["phase"]) for e in rec.kinds("error")] == [("cancelled", "wait")]
    assert pool.snapshot().pending == 0
    rec.assert_valid()
