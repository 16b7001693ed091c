"""AsyncPool: the same rules under asyncio, including cancellation and timeouts."""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolClosed, PoolError, PoolExhausted, PoolTimeout
from poolmon.pool import AsyncPool, BaseAsyncFactory
from tests.unit.pool._support import Recorder, Res


class AsyncScripted(BaseAsyncFactory[Res]):
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.fail_create: Exception | None = None
        self.valid = True
        self.reset_error: Exception | None = None
        self.made: list[Res] = []

    async def create(self) -> Res:
        await asyncio.sleep(0)  # a real suspension point, like a network connect
        if self.fail_create is not None:
            raise self.fail_create
        res = Res(next(self._ids))
        self.made.append(res)
        return res

    async def validate(self, conn: Res) -> bool:
        await asyncio.sleep(0)
        return self.valid

    async def reset(self, conn: Res) -> None:
        if self.reset_error is not None:
            raise self.reset_error


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def _waiting_is(pool: AsyncPool[Any], n: int) -> Callable[[], bool]:
    return lambda: pool.waiting == n


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def make(clock: ManualClock | None = None, **options: Any) -> tuple[AsyncPool[Res], AsyncScripted]:
    fac = AsyncScripted()
    options.setdefault("maintain", False)
    options.setdefault("validate_after", None)
    return AsyncPool(fac, clock=clock or ManualClock(), rng=lambda: 0.5, **options), fac


@pytest.mark.parametrize("handoff_after", [0.0, 3600.0], ids=["strict", "normal"])
def test_borrow_return_and_fair_handoff(registry: PoolRegistry, handoff_after: float) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1, handoff_after=handoff_after)
        held = await pool.getconn()
        order: list[int] = []

        async def waiter(i: int) -> None:
            conn = await pool.getconn(timeout=10)
            order.append(i)
            await pool.putconn(conn)

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(waiter(i)))
            await _until(_waiting_is(pool, i + 1))
        await pool.putconn(held)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3]
        await pool.close()

    run(main)
    rec.assert_valid()


def test_cancelled_waiter_loses_no_slot(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1)
        held = await pool.getconn()
        task = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.waiting == 0
        await pool.putconn(held)
        again = await pool.getconn(timeout=0.1)  # the slot is still there
        assert again is held
        await pool.putconn(again)
        await pool.close()

    run(main)
    errors = rec.kinds("error")
    assert [(e["error_type"], e["phase"]) for e in errors] == [("cancelled", "wait")]
    rec.assert_valid()


def test_cancelled_after_handoff_gives_the_connection_back(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1, handoff_after=0)
        held = await pool.getconn()
        task = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        await pool.putconn(held)  # handed to the waiter, which has not resumed yet
        assert pool.waiting == 0 and pool.idle == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.idle == 1 and pool.size == 1
        assert await pool.getconn(timeout=0.1) is held
        await pool.close()

    run(main)
    rec.assert_valid()


def test_cancelled_while_granted_slot_releases_it(registry: PoolRegistry) -> None:
    async def main() -> None:
        pool, _ = make(max_size=1)
        held = await pool.getconn()
        task = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        await pool.putconn(held, broken=True)  # frees the slot: granted to the waiter
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.size == 0
        fresh = await pool.getconn(timeout=0.1)
        assert fresh is not held
        await pool.close()

    run(main)


def test_timeout_carries_snapshot(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1)
        await pool.getconn()
        with pytest.raises(PoolTimeout) as info:
            await pool.getconn(timeout=0.01)
        assert "used=1, idle=0, waiting=1, max=1" in str(info.value)
        await pool.close()

    run(main)
    assert [e["error_type"] for e in rec.kinds("error")] == ["timeout"]
    rec.assert_valid()


def test_fail_fast(registry: PoolRegistry) -> None:
    async def main() -> None:
        pool, _ = make(max_size=1, fail_fast=True)
        await pool.getconn()
        with pytest.raises(PoolExhausted):
            await pool.getconn()
        await pool.close()

    run(main)


def test_lifecycle_rules(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool, fac = make(
            clock,
            max_size=2,
            min_size=0,
            max_lifetime=100,
            lifetime_jitter=0.0,
            idle_timeout=30,
            validate_after=10,
        )
        a = await pool.getconn()
        clock.advance(100)
        await pool.putconn(a)  # lifetime on return
        b = await pool.getconn()
        await pool.putconn(b)
        clock.advance(11)
        fac.valid = False
        c = await pool.getconn()  # validation after idle fails: replaced
        assert c is not b
        fac.reset_error = RuntimeError("no reset")
        await pool.putconn(c)
        d = await pool.getconn()
        fac.reset_error = None
        await pool.putconn(d)
        clock.advance(31)
        await pool.run_maintenance()
        assert pool.size == 0
        await pool.close()

    run(main)
    assert rec.reasons() == ["max_lifetime", "failed_validation", "reset_failed", "idle_timeout"]
    rec.assert_valid()


def test_backoff_then_recovery(registry: PoolRegistry) -> None:
    clock = ManualClock()

    async def main() -> None:
        pool, fac = make(clock, max_size=1, backoff_initial=1.0, backoff_jitter=0.0)
        fac.fail_create = ConnectionRefusedError("down")
        with pytest.raises(PoolTimeout) as info:
            await pool.getconn(timeout=0.02)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        clock.advance(1.0)
        fac.fail_create = None
        conn = await pool.getconn(timeout=0.5)
        await pool.putconn(conn)
        await pool.close()

    run(main)


def test_close_wakes_waiters(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1)
        held = await pool.getconn()
        tasks = [asyncio.create_task(pool.getconn(timeout=10)) for _ in range(3)]
        await _until(lambda: pool.waiting == 3)
        await pool.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, PoolClosed) for r in results)
        await pool.putconn(held)
        assert held.closed

    run(main)
    assert rec.events[-1]["kind"] == "close"
    rec.assert_valid()


def test_maintainer_task_and_context_manager(registry: PoolRegistry) -> None:
    async def main() -> None:
        fac = AsyncScripted()
        async with AsyncPool(fac, min_size=2, maintenance_interval=0.01) as pool:
            await _wait_real(lambda: pool.idle == 2)
            async with pool.connection() as conn:
                assert isinstance(conn, Res)
        assert all(r.closed for r in fac.made)

    run(main)


async def _wait_real(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def test_maintainer_task_ends_when_pool_dropped(registry: PoolRegistry) -> None:
    async def main() -> None:
        pool = AsyncPool(AsyncScripted(), maintenance_interval=0.01)
        await pool.open()
        task = pool._task
        assert task is not None
        del pool
        gc.collect()
        await asyncio.wait_for(task, 5)

    run(main)


# ---------------------------------------------------------------------- bounded barging


def test_strict_mode_hands_off_and_nobody_barges(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1, handoff_after=0)
        held = await pool.getconn()
        task = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        await pool.putconn(held)
        assert (pool.idle, pool.waiting) == (0, 0)
        with pytest.raises(PoolTimeout):
            await pool.getconn(timeout=0)  # runs before the waiter: still no barging
        assert await task is held
        await pool.putconn(held)
        await pool.close()

    run(main)
    rec.assert_valid()


def test_normal_mode_barge_and_the_head_keeps_its_place(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1, handoff_after=10)
        held = await pool.getconn()
        first = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        head = pool._waiters[0]
        second = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 2)
        await pool.putconn(held)  # parked; the head is woken but has not run
        assert (pool.idle, pool.waiting) == (1, 2) and head.fut.done()
        # No await between the return and this borrow: this task runs before the head.
        assert await pool.getconn(timeout=0) is held
        await _until(lambda: not head.fut.done())  # it looked, found nothing, sleeps again
        assert pool._waiters[0] is head and pool.waiting == 2
        await pool.putconn(held)
        assert await first is held
        assert not second.done()
        await pool.putconn(held)
        assert await second is held
        await pool.putconn(held)
        await pool.close()

    run(main)
    rec.assert_valid()


def test_starvation_mode_after_the_bound(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool, _ = make(clock, max_size=1, handoff_after=1.0)
        held = await pool.getconn()
        first = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)  # waiting from t=0
        clock.advance(0.5)
        await pool.putconn(held)
        assert await pool.getconn(timeout=0) is held  # 0.5 < 1: a barge is allowed
        clock.advance(1.0)
        second = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 2)  # waiting from t=1.5
        await pool.putconn(held)  # the head waited 1.5: handed straight to it
        assert (pool.idle, pool.waiting) == (0, 1)
        with pytest.raises(PoolTimeout):
            await pool.getconn(timeout=0)
        assert await first is held
        await pool.putconn(held)  # the new head waited 0 < 1: parked again
        assert (pool.idle, pool.waiting) == (1, 1)
        assert await pool.getconn(timeout=0) is held
        clock.advance(1.0)
        await pool.putconn(held)
        assert (pool.idle, pool.waiting) == (0, 0)
        assert await second is held
        await pool.putconn(held)
        await pool.close()

    run(main)
    queued = [e["duration"] for e in rec.kinds("borrow") if e.get("queued")]
    assert queued == [1.5, 1.0]
    rec.assert_valid()


def test_cancelled_woken_head_passes_the_connection_on(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool, _ = make(max_size=1, handoff_after=10)
        held = await pool.getconn()
        first = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        second = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 2)
        await pool.putconn(held)  # parked, the head woken
        first.cancel()  # ... and cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        await _until(second.done)  # woken by the departing head, not by its timer
        assert second.result() is held  # the connection went to the next waiter
        await pool.putconn(held)
        assert pool.snapshot().pending == 0
        await pool.close()

    run(main)
    assert [(e["error_type"], e["phase"]) for e in rec.kinds("error")] == [("cancelled", "wait")]
    rec.assert_valid()


def test_cancelled_while_validating_puts_the_connection_back(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool, fac = make(clock, max_size=1, validate_after=5)
        conn = await pool.getconn()
        await pool.putconn(conn)
        clock.advance(6)
        gate = asyncio.Event()

        async def slow_validate(conn: Res) -> bool:
            await gate.wait()
            return True

        fac.validate = slow_validate  # type: ignore[method-assign]
        task = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.idle == 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.idle == 1 and pool.size == 1  # back, not lost
        gate.set()
        assert await pool.getconn(timeout=0) is conn
        await pool.putconn(conn)
        await pool.close()

    run(main)
    rec.assert_valid()


# ---------------------------------------------------------------------- loose ends


def test_no_op_hooks_are_skipped(registry: PoolRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def counted_reset(self: object, conn: object) -> None:
        calls.append("reset")

    def counted_is_broken(self: object, conn: object) -> bool:
        calls.append("is_broken")
        return False

    async def counted_validate(self: object, conn: object) -> bool:
        calls.append("validate")
        return True

    # The defaults themselves (what a factory that does not override them inherits).
    monkeypatch.setattr(BaseAsyncFactory, "reset", counted_reset)
    monkeypatch.setattr(BaseAsyncFactory, "is_broken", counted_is_broken)
    monkeypatch.setattr(BaseAsyncFactory, "validate", counted_validate)

    class Plain(BaseAsyncFactory[Res]):
        async def create(self) -> Res:
            return Res(1)

    class Resetting(Plain):
        async def reset(self, conn: Res) -> None:
            calls.append("own reset")

    rec = Recorder(registry)

    async def main() -> None:
        for fac in (Plain(), Resetting()):
            pool = AsyncPool(fac, clock=ManualClock(), maintain=False, validate_after=0)
            for _ in range(2):
                conn = await pool.getconn()
                await pool.putconn(conn)
            await pool.close()

    run(main)
    assert calls == ["own reset", "own reset"]
    assert rec.kinds("validate") == []  # a factory without a health check is not validated
    rec.assert_valid()


def test_reclaimed_leak_leaves_the_lent_map(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool, _ = make(clock, max_size=1, leak_threshold=5, reclaim_after=20)
        leaked = await pool.getconn()
        clock.advance(21)
        await pool.run_maintenance()
        assert leaked.closed and pool.size == 0
        assert id(leaked) not in pool._lent
        other = await pool.getconn()
        await pool.putconn(leaked)  # the holder's late return: absorbed
        with pytest.raises(PoolError, match="not lent"):
            await pool.putconn(leaked)  # a second one is a caller bug again
        await pool.putconn(other)
        await pool.close()

    run(main)
    assert rec.reasons() == ["leaked", "pool_closed"]
    rec.assert_valid()


def test_newcomer_leaves_an_idle_connection_to_a_starving_head(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool, _ = make(clock, max_size=1, handoff_after=1.0)
        held = await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=10))
        await _until(lambda: pool.waiting == 1)
        await pool.putconn(held)  # parked; the head is woken but has not run yet
        clock.advance(2.0)  # ... and is starving by now
        with pytest.raises(PoolTimeout):
            await pool.getconn(timeout=0)
        assert await waiter is held
        await pool.putconn(held)
        await pool.close()

    run(main)
    rec.assert_valid()
