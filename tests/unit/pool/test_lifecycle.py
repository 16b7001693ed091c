"""One test per lifecycle rule, with an injected ManualClock (no sleeps, no timing asserts)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolClosed, PoolError, PoolExhausted, PoolTimeout
from poolmon.pool import Pool, factory
from tests.unit.pool._support import Recorder, Res, ScriptedFactory


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fac() -> ScriptedFactory:
    return ScriptedFactory()


@pytest.fixture
def rec(registry: PoolRegistry) -> Recorder:
    return Recorder(registry)


@pytest.fixture
def make(
    registry: PoolRegistry, clock: ManualClock, fac: ScriptedFactory
) -> Iterator[Callable[..., Pool[Res]]]:
    pools: list[Pool[Res]] = []

    def build(**options: Any) -> Pool[Res]:
        options.setdefault("maintain", False)
        options.setdefault("validate_after", None)
        options.setdefault("rng", lambda: 0.5)
        pool = Pool(fac, name="t", clock=clock, **options)
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        pool.close()


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll real state with a deadline (synchronisation, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_borrow_return_reuses_lifo_by_default(make: Callable[..., Pool[Res]]) -> None:
    pool = make(max_size=3)
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    assert pool.getconn() is b  # last in, first out


def test_fifo_order_option(make: Callable[..., Pool[Res]]) -> None:
    pool = make(max_size=3, order="fifo")
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    assert pool.getconn() is a


def test_idle_timeout_evicts_down_to_min_size(
    make: Callable[..., Pool[Res]], clock: ManualClock, rec: Recorder
) -> None:
    pool = make(max_size=3, min_size=1, idle_timeout=60)
    conns = [pool.getconn() for _ in range(3)]
    for conn in conns:
        pool.putconn(conn)
    clock.advance(59)
    pool.run_maintenance()
    assert pool.size == 3
    clock.advance(2)
    pool.run_maintenance()
    assert pool.size == 1
    assert rec.reasons() == ["idle_timeout", "idle_timeout"]
    rec.assert_valid()


def test_max_lifetime_with_jitter_enforced_on_borrow(
    make: Callable[..., Pool[Res]], clock: ManualClock, rec: Recorder
) -> None:
    # rng=0.5 and jitter 0.2: lifetime 100 * (1 - 0.2 * 0.5) = 90 seconds.
    pool = make(max_size=2, max_lifetime=100, lifetime_jitter=0.2)
    first = pool.getconn()
    pool.putconn(first)
    clock.advance(89)
    assert pool.getconn() is first
    pool.putconn(first)
    clock.advance(1)
    second = pool.getconn()
    assert second is not first and first.closed
    assert rec.reasons() == ["max_lifetime"]
    rec.assert_valid()


def test_max_lifetime_enforced_on_return(
    make: Callable[..., Pool[Res]], clock: ManualClock, rec: Recorder
) -> None:
    pool = make(max_size=2, max_lifetime=100, lifetime_jitter=0.0)
    conn = pool.getconn()
    clock.advance(100)
    pool.putconn(conn)
    assert conn.closed and pool.size == 0
    assert rec.reasons() == ["max_lifetime"]
    rec.assert_valid()


def test_lifetime_jitter_spreads_expiry(registry: PoolRegistry, clock: ManualClock) -> None:
    draws = iter([0.0, 1.0])
    fac = ScriptedFactory()
    pool = Pool(
        fac,
        clock=clock,
        maintain=False,
        max_lifetime=100,
        lifetime_jitter=0.1,
        rng=lambda: next(draws, 0.0),
        validate_after=None,
    )
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    clock.advance(95)  # a lives 100 s, b 90 s
    pool.run_maintenance()
    assert b.closed and not a.closed
    pool.close()


def test_validation_only_after_idle_threshold(
    make: Callable[..., Pool[Res]], clock: ManualClock, fac: ScriptedFactory, rec: Recorder
) -> None:
    pool = make(max_size=2, validate_after=5)
    conn = pool.getconn()
    pool.putconn(conn)
    clock.advance(4)
    pool.putconn(pool.getconn())
    assert fac.validations == 0
    clock.advance(5)
    assert pool.getconn() is conn
    assert fac.validations == 1
    assert [e["outcome"] for e in rec.kinds("validate")] == ["ok"]
    rec.assert_valid()


def test_failed_validation_evicts_and_lends_a_fresh_one(
    make: Callable[..., Pool[Res]], clock: ManualClock, fac: ScriptedFactory, rec: Recorder
) -> None:
    pool = make(max_size=1, validate_after=0)
    stale = pool.getconn()
    pool.putconn(stale)
    fac.valid = False
    fresh = pool.getconn()
    assert fresh is not stale and stale.closed
    assert rec.reasons() == ["failed_validation"]
    pool.putconn(fresh)
    rec.assert_valid()


def test_validation_exception_means_broken(
    make: Callable[..., Pool[Res]], fac: ScriptedFactory, rec: Recorder
) -> None:
    pool = make(max_size=1, validate_after=0)
    pool.putconn(pool.getconn())

    def boom(conn: Res) -> bool:
        raise OSError("connection reset")

    fac.validate = boom  # type: ignore[method-assign]
    pool.getconn()
    assert rec.reasons() == ["failed_validation"]
    rec.assert_valid()


def test_background_validation(
    make: Callable[..., Pool[Res]], clock: ManualClock, fac: ScriptedFactory, rec: Recorder
) -> None:
    pool = make(max_size=2, background_validation=30)
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    clock.advance(31)
    fac.valid = False
    pool.run_maintenance()
    assert rec.reasons() == ["failed_validation", "failed_validation"]
    assert pool.size == 0 and a.closed and b.closed
    rec.assert_valid()


def test_reset_failure_evicts_reset_failed(
    make: Callable[..., Pool[Res]], fac: ScriptedFactory, rec: Recorder
) -> None:
    pool = make(max_size=1)
    conn = pool.getconn()
    fac.reset_error = RuntimeError("rollback failed for postgresql://u:hunter2@db/x")
    pool.putconn(conn)
    assert conn.closed and pool.size == 0
    assert rec.reasons() == ["reset_failed"]
    (error,) = rec.kinds("error")
    assert error["error_type"] == "reset_failed" and error["phase"] == "reset"
    assert "hunter2" not in error["message"]
    rec.assert_valid()


@pytest.mark.parametrize("how", ["putconn", "mark_broken", "factory"])
def test_broken_is_evicted_never_lent_again(
    make: Callable[..., Pool[Res]], fac: ScriptedFactory, rec: Recorder, how: str
) -> None:
    pool = make(max_size=1)
    conn = pool.getconn()
    if how == "putconn":
        pool.putconn(conn, broken=True)
    else:
        if how == "mark_broken":
            pool.mark_broken(conn)
        else:
            fac.broken.add(conn.n)
        pool.putconn(conn)
    assert conn.closed
    assert pool.getconn() is not conn
    assert rec.reasons() == ["broken"]
    rec.assert_valid()


def test_context_manager_returns_on_error(make: Callable[..., Pool[Res]]) -> None:
    pool = make(max_size=1)
    with pytest.raises(ZeroDivisionError), pool.connection() as conn:
        1 / 0  # noqa: B018
    assert pool.getconn() is conn


def test_foreign_or_double_return_is_refused(make: Callable[..., Pool[Res]]) -> None:
    pool = make(max_size=1)
    conn = pool.getconn()
    pool.putconn(conn)
    with pytest.raises(PoolError, match="not lent"):
        pool.putconn(conn)
    with pytest.raises(PoolError, match="not lent"):
        pool.putconn(Res(99))


def test_leak_threshold_reports_with_sampled_stack(
    make: Callable[..., Pool[Res]], clock: ManualClock, rec: Recorder
) -> None:
    pool = make(max_size=2, leak_threshold=10, stack_sample_every=1)
    pool.getconn()
    clock.advance(9)
    pool.run_maintenance()
    assert rec.kinds("error") == []
    clock.advance(2)
    pool.run_maintenance()
    pool.run_maintenance()  # reported once, not on every pass
    (leak,) = rec.kinds("error")
    assert leak["error_type"] == "leak_suspected"
    assert "test_leak_threshold_reports_with_sampled_stack" in leak["stack"]
    assert pool.snapshot().leaks[0].age == pytest.approx(11)
    rec.assert_valid()


def test_forced_reclamation_evicts_leaked(
    make: Callable[..., Pool[Res]], clock: ManualClock, rec: Recorder
) -> None:
    pool = make(max_size=1, leak_threshold=5, reclaim_after=20)
    leaked = pool.getconn()
    clock.advance(21)
    pool.run_maintenance()
    assert leaked.closed and pool.size == 0
    assert rec.reasons() == ["leaked"]
    assert id(leaked) not in pool._lent  # nothing of the pool stays busy with it
    other = pool.getconn()  # the slot came back
    assert other is not leaked
    pool.putconn(leaked)  # the late return is absorbed silently: no error, no second evict
    with pytest.raises(PoolError, match="not lent"):
        pool.putconn(leaked)  # ... once: a second return is a caller bug again
    pool.putconn(other)
    assert rec.reasons() == ["leaked"]
    rec.assert_valid()


def test_reclaimed_leak_never_returned_keeps_nothing(
    make: Callable[..., Pool[Res]], clock: ManualClock, fac: ScriptedFactory, rec: Recorder
) -> None:
    pool = make(max_size=2, leak_threshold=5, reclaim_after=20)
    leaked = pool.getconn()
    clock.advance(21)
    pool.run_maintenance()
    assert len(pool._reclaimed) == 1
    fac.made.clear()  # the test factory's own list of everything it made
    del leaked  # the holder drops it without returning it
    gc.collect()
    assert pool._reclaimed == {}  # remembered only while someone holds it
    pool.close()
    assert pool._drained.is_set()  # close() had nothing lent to wait for
    assert rec.reasons() == ["leaked"]
    rec.assert_valid()


def test_reclaimed_resource_without_weak_references(
    registry: PoolRegistry, clock: ManualClock
) -> None:
    rec = Recorder(registry)
    pool = Pool(factory(object), clock=clock, maintain=False, leak_threshold=5, reclaim_after=20)
    leaked = pool.getconn()  # a bare object(): cannot be weakly referenced
    clock.advance(21)
    pool.run_maintenance()
    pool.putconn(leaked)  # still absorbed (a strong, bounded note)
    assert pool._reclaimed == {}
    pool.close()
    assert rec.reasons() == ["leaked"]
    rec.assert_valid()


def test_reclaim_racing_a_return_evicts_once(
    make: Callable[..., Pool[Res]], clock: ManualClock, rec: Recorder
) -> None:
    pool = make(max_size=1, leak_threshold=5, reclaim_after=20)
    conn = pool.getconn()
    clock.advance(21)
    now = pool._now
    armed = [True]

    def reclaim_then_read() -> float:
        # putconn's first clock read comes right after it found the entry lent: reclamation
        # lands exactly there, before the return is recorded.
        if armed[0]:
            armed[0] = False
            pool.run_maintenance()
        return now()

    pool._now = reclaim_then_read
    pool.putconn(conn)
    assert conn.closed and pool.size == 0 and pool.idle == 0
    assert pool._reclaimed == {} and pool._lent == {}
    assert rec.reasons() == ["leaked"]
    rec.assert_valid()


def test_factory_without_health_check_is_not_validated(
    registry: PoolRegistry, clock: ManualClock
) -> None:
    rec = Recorder(registry)
    pool = Pool(factory(object), clock=clock, maintain=False, validate_after=0)
    for _ in range(2):
        pool.putconn(pool.getconn())
    pool.close()
    assert rec.kinds("validate") == []
    rec.assert_valid()


def test_create_backoff_one_log_line_per_window(
    make: Callable[..., Pool[Res]],
    clock: ManualClock,
    fac: ScriptedFactory,
    rec: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = make(max_size=2, backoff_initial=1.0, backoff_max=8.0, backoff_jitter=0.0)
    fac.fail_create = ConnectionRefusedError("password=hunter2 refused")
    caplog.set_level(logging.WARNING, logger="poolmon")
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.05)
    assert fac.creates == 1  # the clock did not move: no retry inside the 1 s window
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    clock.advance(1.0)
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.05)
    assert fac.creates == 2
    assert pool._backoff.window() == 2.0  # doubled
    clock.advance(1.0)  # still inside the 2 s window: no attempt, no line
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.02)
    assert fac.creates == 2
    lines = [r for r in caplog.records if "could not open a connection" in r.getMessage()]
    assert len(lines) == 2
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    clock.advance(1.0)
    fac.fail_create = None
    pool.putconn(pool.getconn(timeout=1))  # recovered: backoff reset
    assert pool._backoff.failures == 0
    assert [e["outcome"] for e in rec.kinds("create")] == ["error", "error", "ok"]
    rec.assert_valid()


def test_timeout_error_carries_snapshot(make: Callable[..., Pool[Res]], rec: Recorder) -> None:
    pool = make(max_size=1)
    pool.getconn()
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.01)
    snap = info.value.snapshot
    assert snap is not None and (snap.used, snap.idle, snap.max) == (1, 0, 1)
    assert "used=1, idle=0, waiting=1, max=1" in str(info.value)
    assert [e["error_type"] for e in rec.kinds("error")] == ["timeout"]
    rec.assert_valid()


def test_fail_fast_and_max_waiting_refuse(make: Callable[..., Pool[Res]], rec: Recorder) -> None:
    pool = make(max_size=1, fail_fast=True)
    pool.getconn()
    with pytest.raises(PoolExhausted, match="fail_fast"):
        pool.getconn()
    limited = make(max_size=1, max_waiting=0)
    limited.getconn()
    with pytest.raises(PoolExhausted, match="max_waiting=0") as info:
        limited.getconn()
    assert info.value.snapshot is not None
    assert [e["error_type"] for e in rec.kinds("error")] == ["exhausted", "exhausted"]
    rec.assert_valid()


def test_close_wakes_every_waiter_with_a_clear_error(
    make: Callable[..., Pool[Res]], rec: Recorder
) -> None:
    pool = make(max_size=1)
    held = pool.getconn()
    errors: list[BaseException] = []

    def borrower() -> None:
        try:
            pool.getconn(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=borrower) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: pool.waiting == 3, "three waiters")
    pool.close()
    for t in threads:
        t.join(5)
    assert len(errors) == 3 and all(isinstance(e, PoolClosed) for e in errors)
    assert all("closed" in str(e) for e in errors)
    pool.putconn(held)  # returned after close: closed quietly
    assert held.closed
    with pytest.raises(PoolClosed):
        pool.getconn()
    assert [e["error_type"] for e in rec.kinds("error")] == ["pool_closed"] * 3
    assert rec.events[-1]["kind"] == "close"
    rec.assert_valid()


def test_close_waits_for_lent_up_to_timeout(make: Callable[..., Pool[Res]], rec: Recorder) -> None:
    pool = make(max_size=1)
    conn = pool.getconn()
    returner = threading.Timer(0.0, lambda: pool.putconn(conn))
    wait_started = threading.Event()
    original = pool._drained.wait

    def observed_wait(timeout: float | None = None) -> bool:
        wait_started.set()
        return original(timeout)

    pool._drained.wait = observed_wait  # type: ignore[method-assign]

    def return_once_waiting() -> None:
        wait_started.wait(5)
        returner.run()

    threading.Thread(target=return_once_waiting).start()
    pool.close(timeout=5)
    assert conn.closed
    assert [e["kind"] for e in rec.events][-3:] == ["return", "evict", "close"]
    rec.assert_valid()


def test_drain_replaces_every_connection(make: Callable[..., Pool[Res]], rec: Recorder) -> None:
    pool = make(max_size=2)
    lent, idle = pool.getconn(), pool.getconn()
    pool.putconn(idle)
    pool.drain()
    assert (idle.closed, lent.closed) == (True, False)  # not narrowed: putconn closes ``lent``
    pool.putconn(lent)
    assert lent.closed
    fresh = pool.getconn()
    assert fresh not in (lent, idle)
    assert rec.reasons() == ["pool_closed", "pool_closed"]
    rec.assert_valid()


def test_warmup_spread_with_jitter(registry: PoolRegistry, clock: ManualClock) -> None:
    draws = iter([0.1, 0.9, 0.5])
    fac = ScriptedFactory()
    pool = Pool(
        fac,
        clock=clock,
        maintain=False,
        min_size=3,
        max_size=4,
        warmup_jitter=10.0,
        rng=lambda: next(draws, 0.0),
    )
    assert pool.size == 0  # lazy: nothing opened at construction
    assert pool.run_maintenance() == pytest.approx(1.0)  # next due at t=1
    assert fac.creates == 0
    clock.advance(1.0)
    pool.run_maintenance()
    assert fac.creates == 1
    clock.advance(4.0)
    pool.run_maintenance()
    assert fac.creates == 2
    clock.advance(4.0)
    pool.run_maintenance()
    assert fac.creates == 3 and pool.idle == 3
    pool.close()


def test_eager_fills_min_size(registry: PoolRegistry, clock: ManualClock) -> None:
    fac = ScriptedFactory()
    pool = Pool(fac, clock=clock, maintain=False, min_size=2, eager=True)
    assert pool.idle == 2
    pool.close()


def test_maintainer_holds_only_a_weak_reference(registry: PoolRegistry) -> None:
    pool = Pool(ScriptedFactory(), maintain=True, maintenance_interval=0.01)
    thread = next(t for t in threading.enumerate() if t.name == f"poolmon-maintainer:{pool.name}")
    del pool
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_maintainer_survives_its_own_errors(registry: PoolRegistry) -> None:
    calls: list[int] = []

    class Failing(Pool[Res]):
        def run_maintenance(self) -> float:
            calls.append(1)
            raise RuntimeError("maintenance bug")

    pool = Failing(ScriptedFactory(), maintain=True, maintenance_interval=0.005)
    wait_until(lambda: len(calls) >= 3, "three maintenance passes")
    pool.close()
    errors = registry.self_metrics.snapshot()["poolmon.shim.errors"]
    assert errors["maintainer"] >= 3
