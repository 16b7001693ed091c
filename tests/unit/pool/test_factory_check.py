"""A factory the pool cannot drive is refused at construction with ConfigError, naming the
missing or wrong method and showing the accepted forms (instead of a PoolTimeout 30 s later)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from poolmon.core.registry import PoolRegistry
from poolmon.errors import ConfigError
from poolmon.pool import AsyncPool, BaseAsyncFactory, BaseFactory, Pool, SqliteFactory, factory


class NoCreate:
    def validate(self, conn: object) -> bool:
        return True


class WithCreate:
    def create(self) -> object:
        return object()


class NotOverridden(BaseFactory[object]):
    pass


class AsyncCreate:
    async def create(self) -> object:
        return object()


class SyncFactoryAsyncValidate(BaseFactory[object]):
    def create(self) -> object:
        return object()

    async def validate(self, conn: object) -> bool:  # type: ignore[override]
        return True


class AsyncFactoryAsyncIsBroken(BaseAsyncFactory[object]):
    async def create(self) -> object:
        return object()

    async def is_broken(self, conn: object) -> bool:  # type: ignore[override]
        return False


class AsyncFactorySyncReset(BaseAsyncFactory[object]):
    async def create(self) -> object:
        return object()

    def reset(self, conn: object) -> None:  # type: ignore[override]
        return None


class GoodAsync(BaseAsyncFactory[object]):
    async def create(self) -> object:
        return object()

    def is_broken(self, conn: object) -> bool:
        return False


SYNC_CASES: list[tuple[object, str]] = [
    (NoCreate(), "create() method is missing"),
    (SimpleNamespace(create=42), "create is not callable"),
    (WithCreate, "got the class WithCreate, pass an instance"),
    (NotOverridden(), "create() is not implemented"),
    (AsyncCreate(), "create() is async def; use AsyncPool"),
    (SyncFactoryAsyncValidate(), "validate() is async def; use AsyncPool"),
    (GoodAsync(), "create() is async def; use AsyncPool"),
]

ASYNC_CASES: list[tuple[object, str]] = [
    (NoCreate(), "create() method is missing"),
    (WithCreate(), "create() is a plain def; use Pool"),
    (factory(object), "create() is a plain def; use Pool"),
    (SqliteFactory(":memory:"), "create() is a plain def; use Pool"),
    (AsyncFactoryAsyncIsBroken(), "is_broken() is async def; is_broken must not do I/O"),
    (AsyncFactorySyncReset(), "reset() is a plain def; use Pool"),
]


@pytest.mark.parametrize(("bad", "why"), SYNC_CASES)
def test_pool_refuses_a_factory_it_cannot_drive(registry: PoolRegistry, bad: Any, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        Pool(bad, maintain=False)
    error = info.value
    assert error.parameter == "factory"
    assert why in str(error)
    # The accepted forms are shown.
    assert "BaseFactory subclass" in error.accepted
    assert "poolmon.factory(create" in error.accepted
    assert registry.snapshot() == []  # refused before the pool was registered


@pytest.mark.parametrize(("bad", "why"), ASYNC_CASES)
def test_async_pool_refuses_a_factory_it_cannot_drive(
    registry: PoolRegistry, bad: Any, why: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AsyncPool(bad, maintain=False)
    assert info.value.parameter == "factory"
    assert why in str(info.value)
    assert "async def" in info.value.accepted
    assert "BaseAsyncFactory subclass" in info.value.accepted
    assert registry.snapshot() == []


@pytest.mark.parametrize(
    "good",
    [WithCreate(), factory(object), SimpleNamespace(create=object), SqliteFactory(":memory:")],
)
def test_pool_accepts_every_documented_sync_form(registry: PoolRegistry, good: Any) -> None:
    pool = Pool(good, maintain=False)
    with pool.connection() as conn:
        assert conn is not None
    pool.close()


def test_async_pool_accepts_async_forms(registry: PoolRegistry) -> None:
    async def create() -> object:
        return object()

    async def run(good: Any) -> None:
        async with AsyncPool(good, maintain=False) as pool, pool.connection() as conn:
            assert conn is not None

    asyncio.run(run(GoodAsync()))
    asyncio.run(run(SimpleNamespace(create=create)))


def test_the_refusal_never_shows_a_secret(registry: PoolRegistry) -> None:
    class Leaky:
        def __repr__(self) -> str:
            return "Leaky(dsn='postgresql://app:s3cret@db:5432/app')"

    with pytest.raises(ConfigError) as info:
        Pool(Leaky(), maintain=False)  # type: ignore[arg-type]  # the refusal under test
    assert "s3cret" not in str(info.value)
