"""A small resource pool that speaks the poolmon standard through ``poolmon.api`` alone.

It depends on nothing but the standard library and the one file ``poolmon/api.py`` (which a library
would vendor). With nobody listening every tracker call is a no-op; ``poolmon.instrument()`` (or
``poolmon run``) makes its pools show up in /metrics, OTLP and ``poolmon top`` like any other.

Run it::

    python examples/api_pool.py            # a few borrows, then the pool's metrics as text

The worked example of docs/for-pool-authors.md; tests/unit/test_api_pool.py runs the conformance
kit against it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

try:
    from poolmon import api
except ImportError:  # a library would vendor the file instead: from mylib._vendor import api
    raise

R = TypeVar("R")


class PoolTimeout(Exception):
    """No resource became free within the borrow timeout."""


class PoolClosed(Exception):
    """The pool is closed."""


class TinyPool(Generic[R]):
    """At most ``max_size`` resources made by ``create``; fair FIFO hand-off; ``is_broken``
    resources are discarded on return. Every event is reported under ``self._lock`` so the
    stream's order is the order things happened (the standard's ordering rule)."""

    def __init__(
        self,
        create: Callable[[], R],
        *,
        max_size: int = 4,
        name: str = "tiny",
        is_broken: Callable[[R], bool] = lambda r: False,
        destroy: Callable[[R], None] = lambda r: None,
    ) -> None:
        self._create, self._is_broken, self._destroy = create, is_broken, destroy
        self._max = max_size
        self._lock = threading.Lock()
        self._idle: deque[tuple[int, R]] = deque()  # (resource id, resource)
        self._waiters: deque[threading.Condition] = deque()
        self._open = 0  # resources that exist (idle + lent out), and ones being created
        self._closed = False
        # Register once, with the name, what the pool talks to and its limits; never a secret.
        self._tracker = api.register(name, "generic", max=max_size, library="tinypool")

    def getconn(self, timeout: float = 5.0) -> tuple[int, R]:
        """Borrow ``(id, resource)``; raises PoolTimeout after ``timeout`` seconds of waiting."""
        tracker = self._tracker
        t0 = tracker.now()  # when the caller started asking: the wait time's origin
        with self._lock:
            if self._closed:
                raise PoolClosed("pool is closed")
            if self._idle and not self._waiters:
                item = self._idle.pop()
                tracker.borrowed(item[0], t0)  # no wait: t0 makes the wait ~0
                return item
            if self._open < self._max:
                self._open += 1
                create = True
            else:
                create = False
                cond = threading.Condition(self._lock)
                self._waiters.append(cond)
                tracker.waiting()  # queued: resolved below by a queued borrow or a failure
        if create:
            return self._new(t0)
        with self._lock:
            while True:
                if self._closed:  # close() resolved this wait already
                    raise PoolClosed("pool is closed")
                if self._idle and self._waiters[0] is cond:
                    self._waiters.popleft()
                    item = self._idle.pop()
                    tracker.borrowed(item[0], t0, queued=True)
                    self._wake_next()
                    return item
                remaining = timeout - (tracker.now() - t0) if timeout is not None else None
                if (remaining is not None and remaining <= 0) or not cond.wait(remaining):
                    if self._idle and self._waiters[0] is cond:
                        continue  # handed a resource at the deadline: take it
                    self._waiters.remove(cond)
                    tracker.failed("timeout", "wait", f"no resource in {timeout}s", t0=t0)
                    raise PoolTimeout(f"no resource within {timeout}s ({self._max} in use)")

    def _new(self, t0: float) -> tuple[int, R]:
        tracker = self._tracker
        try:
            resource = self._create()
        except Exception as exc:
            with self._lock:
                self._open -= 1
                tracker.failed("create_failed", "create", exc, t0=t0)
                self._wake_next()
            raise
        with self._lock:
            rid = tracker.created(t0)  # a fresh id: ids are never reused
            tracker.borrowed(rid, t0)
        return rid, resource

    def putconn(self, item: tuple[int, R]) -> None:
        """Give a borrowed ``(id, resource)`` back."""
        rid, resource = item
        broken = self._is_broken(resource)
        with self._lock:
            self._tracker.returned(rid)
            if broken or self._closed:
                self._open -= 1
                self._tracker.evicted(rid, "pool_closed" if self._closed else "broken")
                self._wake_next()
            else:
                self._idle.append(item)
                self._wake_next()
        if broken or self._closed:
            self._destroy(resource)

    def _wake_next(self) -> None:
        # Lock held. The first waiter takes the next idle resource (or creates one: it wakes,
        # sees none idle and waits again; a free slot is taken by the next new caller).
        if self._waiters:
            self._waiters[0].notify()

    @contextmanager
    def connection(self, timeout: float = 5.0) -> Iterator[R]:
        item = self.getconn(timeout)
        try:
            yield item[1]
        finally:
            self.putconn(item)

    def close(self) -> None:
        """Close idle resources now; lent ones when they come back. Waiters get PoolClosed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            for rid, _ in idle:
                self._open -= 1
                self._tracker.evicted(rid, "pool_closed")  # evict first, then close
            # Every queued caller's wait ends here, before the close (spec: pending-unresolved).
            while self._waiters:
                self._waiters.popleft().notify()
                self._tracker.failed("pool_closed", "wait", "pool closed")
            self._tracker.closed()
        for _, resource in idle:
            self._destroy(resource)


if __name__ == "__main__":
    import poolmon
    from poolmon.core.registry import get_default_registry

    poolmon.instrument("api")
    pool: TinyPool[object] = TinyPool(object, max_size=2, name="example")
    for _ in range(3):
        with pool.connection():
            pass
    snap = next(s for s in get_default_registry().snapshot() if s.name == "example")
    print(f"{snap.name}: idle={snap.idle} used={snap.used} borrows={snap.wait_time.count}")
    pool.close()
