"""Adaptive backpressure: refuse at once (``shed``) when the estimated wait of a caller about
to queue, (waiting + 1) x mean use / size, exceeds ``wait_budget``. ManualClock-driven."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolShed
from poolmon.pool import AsyncPool, Pool
from tests.unit.pool._support import Recorder, Res, ScriptedFactory
from tests.unit.pool.test_async_pool import AsyncScripted, _until


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def test_shed_when_the_estimated_wait_exceeds_the_budget(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    clock = ManualClock()

    async def main() -> None:
        pool = AsyncPool(
            AsyncScripted(),
            clock=clock,
            maintain=False,
            validate_after=None,
            max_size=1,
            wait_budget=2.0,
            shed_smoothing=1.0,  # the last use time is the estimate: exact numbers below
        )
        conn = await pool.getconn()
        clock.advance(1.0)
        await pool.putconn(conn)  # one use of 1.0 s measured
        held = await pool.getconn()
        first = asyncio.create_task(pool.getconn(timeout=30))  # estimate 1 x 1.0 s: queues
        await _until(lambda: pool.waiting == 1)
        second = asyncio.create_task(pool.getconn(timeout=30))  # 2 x 1.0 s = budget: queues
        await _until(lambda: pool.waiting == 2)
        with pytest.raises(PoolShed, match=r"estimated wait 3s exceeds wait_budget=2s"):
            await pool.getconn(timeout=30)  # 3 x 1.0 s > 2.0 s: refused at once
        assert pool.waiting == 2  # the refused caller never queued
        clock.advance(0.1)
        await pool.putconn(held)
        c1 = await first
        clock.advance(0.1)
        await pool.putconn(c1)
        c2 = await second
        await pool.putconn(c2)
        await pool.close()

    run(main)
    (shed,) = [e for e in rec.kinds("error") if e["error_type"] == "shed"]
    assert shed["phase"] == "borrow"
    assert len(rec.kinds("wait")) == 2  # the shed caller produced no wait
    rec.assert_valid()


def test_no_shed_before_any_use_was_measured_and_when_off(registry: PoolRegistry) -> None:
    pool = Pool(ScriptedFactory(), maintain=False, max_size=1, wait_budget=0.001, fail_fast=True)
    held = pool.getconn()
    with pytest.raises(Exception) as info:
        pool.getconn()
    assert not isinstance(info.value, PoolShed)  # no estimate yet: fail_fast decides
    pool.putconn(held)
    pool.close()
    off = Pool(ScriptedFactory(), maintain=False, max_size=1)
    assert off._shed_on is False and off._plain is True
    off.close()


def test_sync_pool_sheds_too(registry: PoolRegistry) -> None:
    clock = ManualClock()
    pool: Pool[Res] = Pool(
        ScriptedFactory(), clock=clock, maintain=False, max_size=1, wait_budget=0.5
    )
    conn = pool.getconn()
    clock.advance(1.0)
    pool.putconn(conn)
    held = pool.getconn()
    with pytest.raises(PoolShed):
        pool.getconn(timeout=30)  # 1 x 1.0 s > 0.5 s
    assert pool.snapshot().errors["shed"] == 1
    pool.putconn(held)
    pool.close()
