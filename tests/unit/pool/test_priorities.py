"""Priority classes with aging. The bound (docs/pool.md): a class-k waiter's class improves by
one per ``aging`` seconds waited, so after ``k * aging`` it ranks with class 0 and only waiters
that queued before it can precede it; under constant class-0 load it is served by the first
return at or after ``k * aging`` of waiting. Deterministic: ManualClock, strict hand-off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.pool import AsyncPool
from tests.unit.pool._support import Recorder, Res
from tests.unit.pool.test_async_pool import AsyncScripted, _until


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def make(clock: ManualClock, **options: Any) -> AsyncPool[Res]:
    options.setdefault("maintain", False)
    options.setdefault("validate_after", None)
    options.setdefault("handoff_after", 0.0)
    options.setdefault("max_size", 1)
    return AsyncPool(AsyncScripted(), name="p", clock=clock, rng=lambda: 0.5, **options)


def _depth(pool: AsyncPool[Res], n: int) -> Callable[[], bool]:
    return lambda: pool.waiting == n


def test_more_urgent_classes_are_served_first(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()
    order: list[str] = []

    async def main() -> None:
        pool = make(clock, priorities=3, aging=3600.0)
        held = await pool.getconn()

        async def borrow(label: str, priority: int) -> None:
            conn = await pool.getconn(priority=priority, timeout=30)
            order.append(label)
            await pool.putconn(conn)

        tasks = []
        for label, priority in (("low", 2), ("mid", 1), ("high", 0), ("low2", 2)):
            tasks.append(asyncio.create_task(borrow(label, priority)))
            await _until(_depth(pool, len(tasks)))
        await pool.putconn(held)
        await asyncio.gather(*tasks)
        await pool.close()

    run(main)
    assert order == ["high", "mid", "low", "low2"]  # by class, then arrival
    waits = rec.kinds("wait")
    assert [w["priority"] for w in waits] == [2, 1, 0, 2]
    rec.assert_valid()


def test_a_low_class_is_served_within_the_aging_bound_under_constant_load(
    registry: PoolRegistry,
) -> None:
    clock = ManualClock()
    served: list[tuple[str, float]] = []
    aging, step = 1.0, 0.25

    async def main() -> None:
        pool = make(clock, priorities=3, aging=aging)
        holder = await pool.getconn()
        start = clock.monotonic()

        async def borrow(label: str, priority: int) -> Res:
            conn = await pool.getconn(priority=priority, timeout=3600)
            served.append((label, clock.monotonic() - start))
            return conn

        low = asyncio.create_task(borrow("low", 2))
        await _until(lambda: pool.waiting == 1)
        n = 0
        while not low.done():
            clock.advance(step)
            high = asyncio.create_task(borrow(f"high{n}", 0))  # constant class-0 load
            n += 1
            await _until(lambda: pool.waiting >= 2)
            await pool.putconn(holder)  # one return per step: handed to the best-ranked
            await asyncio.sleep(0)
            winner = low if low.done() else high
            holder = await winner
            assert n < 100, "the low class starved"
        await pool.putconn(holder)  # to the class-0 waiter still queued
        last = await high
        await pool.putconn(last)
        assert pool.waiting == 0
        await pool.close()

    run(main)
    low_at = dict(served)["low"]
    # Served by the first return at or after 2 * aging, and not before.
    assert low_at == 2 * aging
    assert all(label.startswith("high") for label, at in served if at < low_at)
    assert len([1 for label, at in served if at < low_at]) == int(2 * aging / step) - 1


def test_no_priority_inversion_through_barging(registry: PoolRegistry) -> None:
    """In normal (barging) mode a newcomer of a less urgent class may not take an idle
    connection while a more urgent caller waits for it."""
    clock = ManualClock()

    async def main() -> None:
        pool = make(clock, priorities=2, handoff_after=3600.0, max_size=1)
        held = await pool.getconn(priority=1)
        urgent = asyncio.create_task(pool.getconn(priority=0, timeout=30))
        await _until(lambda: pool.waiting == 1)
        await pool.putconn(held)  # parked idle, the urgent head woken (normal mode)
        assert not pool._may_take_locked("", 1)  # a class-1 newcomer must queue
        assert pool._may_take_locked("", 0)  # an equally urgent one may barge (bounded)
        conn = await urgent
        await pool.putconn(conn)
        await pool.close()

    run(main)
