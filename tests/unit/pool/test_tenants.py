"""Tenants on one shared pool: per-tenant limits and reserves, wait or refuse at the quota, a
flood that starves nobody, the global max never exceeded, the cardinality cap. Deterministic
(AsyncPool on one loop, ManualClock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import ConfigError, PoolQuotaExceeded
from poolmon.pool import AsyncPool, Pool, TenantQuota
from tests.unit.pool._support import Recorder, Res, ScriptedFactory
from tests.unit.pool.test_async_pool import AsyncScripted, _until


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def make(**options: Any) -> AsyncPool[Res]:
    options.setdefault("maintain", False)
    options.setdefault("validate_after", None)
    options.setdefault("handoff_after", 0.0)
    return AsyncPool(AsyncScripted(), name="t", clock=ManualClock(), rng=lambda: 0.5, **options)


def test_refuse_at_the_quota_and_others_still_borrow(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool = make(max_size=3, tenants={"acme": 1}, tenant_policy="refuse")
        mine = await pool.getconn(tenant="acme")
        with pytest.raises(PoolQuotaExceeded) as info:
            await pool.getconn(tenant="acme")
        assert "tenant 'acme' holds 1 of its limit 1" in str(info.value)
        other = await pool.getconn(tenant="globex")  # unused quota is everybody's
        stats = pool.tenant_stats()
        assert (stats["acme"].used, stats["acme"].limit) == (1, 1)
        assert stats["acme"].errors == {"quota_exceeded": 1}
        assert stats["globex"].used == 1
        await pool.putconn(mine)
        assert pool.tenant_stats()["acme"].used == 0
        await pool.putconn(await pool.getconn(tenant="acme"))  # quota free again
        await pool.putconn(other)
        await pool.close()

    run(main)
    (refusal,) = [e for e in rec.kinds("error") if e["error_type"] == "quota_exceeded"]
    assert (refusal["phase"], refusal["tenant"]) == ("borrow", "acme")
    assert {e.get("tenant") for e in rec.kinds("borrow")} == {"acme", "globex"}
    rec.assert_valid()


def test_a_waiting_tenant_blocks_nobody_and_gets_its_own_return(registry: PoolRegistry) -> None:
    async def main() -> None:
        pool = make(max_size=3, tenants={"acme": 1})
        mine = await pool.getconn(tenant="acme")
        queued = asyncio.create_task(pool.getconn(tenant="acme", timeout=30))
        await _until(lambda: pool.waiting == 1)
        # acme's waiter is first in line, but at its quota: globex passes it.
        other = await pool.getconn(tenant="globex", timeout=0)
        assert not queued.done()
        await pool.putconn(other)  # an idle connection does not help acme either
        assert not queued.done() and pool.waiting == 1
        await pool.putconn(mine)  # acme's own return frees its quota: handed to its waiter
        got = await queued
        assert pool.tenant_stats()["acme"].used == 1
        await pool.putconn(got)
        await pool.close()

    run(main)


def test_a_tenant_flood_starves_nobody_and_the_max_holds(registry: PoolRegistry) -> None:
    sizes: list[int] = []

    async def main() -> None:
        pool = make(max_size=4, tenant_limit=2)
        flood = [asyncio.create_task(pool.getconn(tenant="flood", timeout=3600)) for _ in range(50)]
        await _until(lambda: pool.waiting == 48)
        served: list[Res] = []
        for n in range(20):  # other tenants keep borrowing while the flood queues
            a = await pool.getconn(tenant=f"t{n % 2}", timeout=0)  # never waits
            b = await pool.getconn(tenant=f"t{n % 2}", timeout=0)
            sizes.append(pool.size)
            assert pool.tenant_stats()["flood"].used == 2
            await pool.putconn(a)
            await pool.putconn(b)
            served += [a, b]
        assert len(served) == 40
        # The flood drains through its own two connections, in arrival order.
        done = 0
        while done < 50:
            finished = [t for t in flood if t.done()]
            for task in finished:
                flood.remove(task)
                await pool.putconn(task.result())
                done += 1
            sizes.append(pool.size)
            await asyncio.sleep(0)
        await pool.close()

    run(main)
    assert max(sizes) <= 4


def test_reserves_keep_connections_for_their_tenant(registry: PoolRegistry) -> None:
    async def main() -> None:
        pool = make(max_size=4, tenants={"vip": TenantQuota(reserve=2)}, tenant_policy="refuse")
        a = await pool.getconn(tenant="batch")
        b = await pool.getconn(tenant="batch")
        with pytest.raises(PoolQuotaExceeded, match="reserved for other tenants"):
            await pool.getconn(tenant="batch")  # 2 free slots, both vip's reserve
        v1 = await pool.getconn(tenant="vip")
        v2 = await pool.getconn(tenant="vip")
        assert pool.size == 4
        for conn in (a, b, v1, v2):
            await pool.putconn(conn)
        await pool.close()

    run(main)


def test_a_wait_that_ends_at_the_quota_is_quota_exceeded(registry: PoolRegistry) -> None:
    rec = Recorder(registry)

    async def main() -> None:
        pool = make(max_size=2, tenants={"acme": 1})
        mine = await pool.getconn(tenant="acme")
        with pytest.raises(PoolQuotaExceeded):
            await pool.getconn(tenant="acme", timeout=0.01)
        await pool.putconn(mine)
        await pool.close()

    run(main)
    (resolved,) = [e for e in rec.kinds("error") if e["phase"] == "wait"]
    assert (resolved["error_type"], resolved["tenant"]) == ("quota_exceeded", "acme")
    rec.assert_valid()


def test_tenant_names_past_the_cap_fold_into_other(registry: PoolRegistry) -> None:
    rec = Recorder(registry)
    pool = Pool(ScriptedFactory(), maintain=False, max_size=2, tenant_limit=1, tenant_cap=2)
    for tenant in ("a", "b", "c", "d"):
        with pool.connection(tenant=tenant):
            pass
    stats = pool.tenant_stats()
    pool.close()
    assert [e["tenant"] for e in rec.kinds("borrow")] == ["a", "b", "other", "other"]
    assert set(stats) == {"a", "b", "other"} and stats["other"].borrows == 2
    rec.assert_valid()


def test_bad_tenant_and_priority_values(registry: PoolRegistry) -> None:
    pool = Pool(ScriptedFactory(), maintain=False, max_size=1, priorities=3)
    with pytest.raises(ConfigError) as info:
        pool.getconn(priority=3)
    assert info.value.parameter == "priority" and "[0, priorities - 1 = 2]" in str(info.value)
    with pytest.raises(ConfigError, match="tenant"):
        pool.getconn(tenant="other")
    plain = Pool(ScriptedFactory(), maintain=False, max_size=1)
    with pytest.raises(ConfigError, match=r"\[0, priorities - 1 = 0\]"):
        plain.getconn(priority=1)
    assert pool.size == 0 and plain.size == 0  # nothing was taken
    pool.close()
    plain.close()
