"""Burst capacity: connections above max_size only while waits are measured, closed first and
gradually when demand falls. Deterministic: a ManualClock drives every rule (no sleeps, no
timing assertions); AsyncPool keeps the interleaving on one loop, a Pool case uses threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.pool import AsyncPool, Pool
from tests.unit.pool._support import Recorder, Res, ScriptedFactory
from tests.unit.pool.test_async_pool import AsyncScripted, _until
from tests.unit.pool.test_lifecycle import wait_until


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def make(clock: ManualClock, **options: Any) -> AsyncPool[Res]:
    options.setdefault("maintain", False)
    options.setdefault("validate_after", None)
    options.setdefault("max_size", 2)
    options.setdefault("burst_max", 4)
    return AsyncPool(AsyncScripted(), name="b", clock=clock, rng=lambda: 0.5, **options)


def test_no_burst_without_a_measured_wait(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool = make(clock, burst_after=1.0)
        held = [await pool.getconn(), await pool.getconn()]
        assert pool.size == 2  # all in use, but nobody waits yet: no burst
        waiter = asyncio.create_task(pool.getconn(timeout=30))
        await _until(lambda: pool.waiting == 1)
        clock.advance(0.5)
        await pool.run_maintenance()
        assert pool.size == 2 and pool.waiting == 1  # waited 0.5 s < burst_after
        clock.advance(0.5)
        await pool.run_maintenance()  # waited 1.0 s: the head is granted a burst slot
        extra = await waiter
        assert pool.size == 3 and pool.bursts == 1
        await pool.putconn(extra)
        for conn in held:
            await pool.putconn(conn)
        await pool.close()

    run(main)
    creates = rec.kinds("create")
    assert [c.get("burst") for c in creates] == [None, None, True]
    (opened,) = rec.kinds("open")
    assert (opened["max"], opened["burst_max"]) == (4, 2)
    rec.assert_valid()


def test_no_burst_while_a_connection_is_idle(registry: PoolRegistry) -> None:
    clock = ManualClock()

    async def main() -> None:
        pool = make(clock, burst_after=0.0, handoff_after=3600.0)
        a, b = await pool.getconn(), await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=30))
        await _until(lambda: pool.waiting == 1)
        await pool.putconn(a)  # idle now, the head is woken to take it: no burst for it
        assert pool._burst_demand_locked() is False
        got = await waiter
        assert got is a and pool.size == 2 and pool.bursts == 0
        await pool.putconn(got)
        await pool.putconn(b)
        await pool.close()

    run(main)


def test_queue_depth_opens_a_burst_at_once(registry: PoolRegistry) -> None:
    clock = ManualClock()

    async def main() -> None:
        pool = make(clock, burst_after=3600.0, burst_queue=2)
        held = [await pool.getconn(), await pool.getconn()]
        first = asyncio.create_task(pool.getconn(timeout=30))
        await _until(lambda: pool.waiting == 1)
        assert pool.size == 2
        second = asyncio.create_task(pool.getconn(timeout=30))
        got = await first  # the second arrival made the queue 2 deep: the head got a slot
        assert pool.bursts == 1
        for conn in held:
            await pool.putconn(conn)  # the second waiter is served by a return
        await pool.putconn(await second)
        await pool.putconn(got)
        assert pool.size == 3
        await pool.close()

    run(main)


def test_burst_connections_serve_last_and_live_shorter(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool = make(clock, burst_after=0.0, burst_lifetime=10.0, burst_idle=3600.0)
        a, b = await pool.getconn(), await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=30))
        await _until(lambda: pool.waiting == 1)
        await pool.run_maintenance()
        burst = await waiter
        await pool.putconn(burst)
        await pool.putconn(a)
        await pool.putconn(b)
        # LIFO would hand out the burst connection (returned... first) last: normal ones first.
        first, second = await pool.getconn(), await pool.getconn()
        assert burst not in (first, second)
        await pool.putconn(first)
        await pool.putconn(second)
        clock.advance(10.0)  # the burst connection's own lifetime (max_lifetime is 30 min)
        await pool.run_maintenance()
        assert pool.bursts == 0 and pool.size == 2
        await pool.close()

    run(main)
    burst_evicts = [e for e in rec.kinds("evict") if e.get("burst")]
    assert [e["reason"] for e in burst_evicts] == ["max_lifetime"]
    rec.assert_valid()


def test_a_burst_that_ends_contracts_gradually_without_oscillating(registry: PoolRegistry) -> None:
    """A long simulated trace: 20 s of overload (6 concurrent callers on max_size=2 +
    burst 4), then 200 s of moderate load (at most 2 concurrent). The pool grows to its
    ceiling, then closes burst connections a decay fraction per maintenance pass, never
    opens another one once the overload ended, and ends at max_size."""
    rec = Recorder(registry)
    clock = ManualClock()
    sizes: list[int] = []

    async def main() -> None:
        pool = make(
            clock, max_size=2, burst_max=6, burst_after=0.05, burst_idle=1.0, burst_decay=0.5
        )

        async def call() -> None:
            conn = await pool.getconn(timeout=3600)
            await asyncio.sleep(0)
            await pool.putconn(conn)

        async def overload_tick() -> None:
            held = [await pool.getconn(timeout=3600) for _ in range(min(pool.size, 2))]
            tasks = [asyncio.create_task(call()) for _ in range(6 - len(held))]
            await _until(lambda: pool.waiting > 0 or all(t.done() for t in tasks))
            clock.advance(0.05)
            await pool.run_maintenance()  # waits measured: burst slots granted
            for conn in held:
                await pool.putconn(conn)
            await asyncio.gather(*tasks)

        for _ in range(200):  # 20 s at 0.1 s per tick
            await overload_tick()
            clock.advance(0.05)
            sizes.append(pool.size)
        assert pool.size == 6 and pool.bursts == 4
        creates_at_end_of_burst = len(rec.kinds("create"))
        shrinking: list[int] = []
        for _ in range(2000):  # 200 s of moderate load
            a = await pool.getconn(timeout=1)
            b = await pool.getconn(timeout=1)
            await pool.putconn(b)
            await pool.putconn(a)
            clock.advance(0.1)
            if round(clock.monotonic() * 10) % 10 == 0:  # one maintenance pass a second
                before = pool.bursts
                await pool.run_maintenance()
                shrinking.append(before - pool.bursts)
            sizes.append(pool.size)
        # No burst connection was opened once the overload ended (no oscillation) ...
        assert len(rec.kinds("create")) == creates_at_end_of_burst
        # ... the contraction was gradual (half the idle surplus at most, per pass) ...
        assert max(shrinking) <= 2 and sum(shrinking) == 4
        assert shrinking.index(2) < shrinking.index(1)  # 4 -> 2 -> 1 -> 0
        # ... and the pool is back at max_size with every burst connection closed.
        assert pool.size == 2 and pool.bursts == 0
        await pool.close()

    run(main)
    assert max(sizes) == 6
    reasons = [e["reason"] for e in rec.kinds("evict") if e.get("burst")]
    assert reasons.count("burst_shrink") == 4
    rec.assert_valid()


def test_sync_pool_bursts_for_a_waiting_thread(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()
    pool = Pool(
        ScriptedFactory(),
        name="bs",
        clock=clock,
        maintain=False,
        validate_after=None,
        max_size=1,
        burst_max=2,
        burst_after=1.0,
    )
    held = pool.getconn()
    got: list[Res] = []
    thread = threading.Thread(target=lambda: got.append(pool.getconn(timeout=30)))
    thread.start()
    wait_until(lambda: pool.waiting == 1, "the thread to queue")
    pool.run_maintenance()
    assert pool.size == 1  # no measured wait on the pool clock yet
    clock.advance(1.0)
    pool.run_maintenance()  # grants the head a burst slot
    thread.join(10)
    assert got and got[0] is not held and pool.bursts == 1
    pool.putconn(got[0])
    pool.putconn(held)
    pool.close()
    assert [c.get("burst") for c in rec.kinds("create")] == [None, True]
    rec.assert_valid()


def test_burst_off_by_default_costs_no_state(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    pool = Pool(ScriptedFactory(), maintain=False, max_size=1)
    with pool.connection():
        pass
    pool.close()
    assert pool.bursts == 0
    assert all("burst" not in e and "burst_max" not in e for e in rec.events)
