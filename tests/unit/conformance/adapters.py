"""Conformance-kit adapters: the example api pool, three deliberately wrong pools, poolmon's
pools."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from poolmon import AsyncPool, Pool
from poolmon.core.registry import PoolRegistry
from poolmon.pool.factory import BaseAsyncFactory, BaseFactory

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def load_example() -> Any:
    """examples/api_pool.py as a module (it is a script, not a package)."""
    name = "poolmon_example_api_pool"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "api_pool.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Resource:
    """A pooled thing that can be broken (like a closed socket)."""

    def __init__(self) -> None:
        self.broken = False


class TinyPoolAdapter:
    """The worked example of docs/for-pool-authors.md, written only against poolmon.api."""

    emits_close = True

    def __init__(self, pool_class: type | None = None) -> None:
        self.pool_class = pool_class or load_example().TinyPool

    def open(self, max_size: int, registry: PoolRegistry) -> None:
        self.pool = self.pool_class(
            Resource, max_size=max_size, name="tiny", is_broken=lambda r: r.broken
        )

    def borrow(self, timeout: float) -> Any:
        return self.pool.getconn(timeout)

    def give_back(self, handle: Any) -> None:
        self.pool.putconn(handle)

    def break_resource(self, handle: Any) -> None:
        handle[1].broken = True

    def close(self) -> None:
        self.pool.close()


def _wrong_pools() -> dict[str, type]:
    base = load_example().TinyPool

    class DoubleReturn(base):  # type: ignore[misc, valid-type]
        """Reports every return twice (a bug in the pool's bookkeeping)."""

        def putconn(self, item: Any) -> None:
            self._tracker.returned(item[0])
            super().putconn(item)

    class BorrowAfterEvict(base):  # type: ignore[misc, valid-type]
        """Reports a broken resource evicted, then keeps lending it."""

        def putconn(self, item: Any) -> None:
            rid, resource = item
            with self._lock:
                self._tracker.returned(rid)
                if self._is_broken(resource):
                    self._tracker.evicted(rid, "broken")
                    resource.broken = False  # "repaired" in place: still the same id
                self._idle.append(item)
                self._wake_next()

    class PendingNeverResolved(base):  # type: ignore[misc, valid-type]
        """Reports waits but never says that a queued borrow ended one."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            real = self._tracker.borrowed

            def borrowed(conn: int, t0: float | None = None, *, queued: bool = False) -> None:
                real(conn, t0)  # queued dropped: the wait stays pending for ever

            self._tracker.borrowed = borrowed

    return {
        "double-return": DoubleReturn,
        "borrow-after-evict": BorrowAfterEvict,
        "pending-never-resolved": PendingNeverResolved,
    }


def wrong_adapter(kind: str) -> TinyPoolAdapter:
    return TinyPoolAdapter(_wrong_pools()[kind])


class _Factory(BaseFactory[Resource]):
    def create(self) -> Resource:
        return Resource()

    def is_broken(self, conn: Resource) -> bool:
        return conn.broken


class PoolAdapter:
    """poolmon.Pool, recording into the kit's registry."""

    emits_close = True

    def open(self, max_size: int, registry: PoolRegistry) -> None:
        self.pool: Pool[Resource] = Pool(
            _Factory(), max_size=max_size, registry=registry, name="poolmon-pool", maintain=False
        )

    def borrow(self, timeout: float) -> Resource:
        return self.pool.getconn(timeout=timeout)

    def give_back(self, handle: Resource) -> None:
        self.pool.putconn(handle)

    def break_resource(self, handle: Resource) -> None:
        handle.broken = True

    def close(self) -> None:
        self.pool.close()


class _AsyncFactory(BaseAsyncFactory[Resource]):
    async def create(self) -> Resource:
        return Resource()

    def is_broken(self, conn: Resource) -> bool:
        return conn.broken


class AsyncPoolAdapter:
    """poolmon.AsyncPool on an event loop in a thread of its own; the kit's threads call into it."""

    emits_close = True

    def open(self, max_size: int, registry: PoolRegistry) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> AsyncPool[Resource]:
            return AsyncPool(
                _AsyncFactory(),
                max_size=max_size,
                registry=registry,
                name="poolmon-async-pool",
                maintain=False,
            )

        self.pool = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def borrow(self, timeout: float) -> Resource:
        return self._call(self.pool.getconn(timeout=timeout))

    def give_back(self, handle: Resource) -> None:
        self._call(self.pool.putconn(handle))

    def break_resource(self, handle: Resource) -> None:
        handle.broken = True

    def close(self) -> None:
        try:
            self._call(self.pool.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()
