"""AsyncPool: the same pool for asyncio, with the same rules and events as :class:`Pool`.

Algorithm
---------
The state (``_idle`` deque, ``_waiters`` deque, ``_lent`` map, ``_size``) lives on one event
loop and is only touched between ``await`` points, so each state change and the ledger event
that records it happen atomically without a lock. Every ``await`` (create, validate, reset,
destroy) happens on an entry that no other task can reach: it sits in ``_lent`` (so ``close()``
still sees it) and is re-checked for ``gone`` after the ``await``.

Waiters are futures in arrival order. A return hands its connection straight to the oldest
waiter (recording the borrow at that moment); a freed slot is granted to the oldest waiter,
which opens the connection itself.

Cancellation never loses a slot: a cancelled waiter still queued leaves the queue (an error of
type ``cancelled`` in phase ``wait``); one that had already been handed a connection gives it
back through the normal return path; one that had been granted a slot releases it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from poolmon.core.clock import Clock
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolError
from poolmon.pool._base import BasePool, Entry
from poolmon.pool.config import PoolConfig
from poolmon.pool.factory import AsyncFactory
from poolmon.pool.maintainer import start_task

__all__ = ["AsyncPool"]

T = TypeVar("T")


class _AsyncWaiter(Generic[T]):
    __slots__ = ("closed", "entry", "fut", "grant", "t0", "timed_out")

    def __init__(self, fut: asyncio.Future[None], t0: float) -> None:
        self.fut = fut
        self.t0 = t0
        self.entry: Entry[T] | None = None
        self.grant = False
        self.closed = False
        self.timed_out = False

    def wake(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)


class AsyncPool(BasePool[T]):
    """A pool of resources made by an async ``factory``; use from one event loop.

    Open it with ``await pool.open()`` or ``async with AsyncPool(...) as pool``.
    """

    def __init__(
        self,
        factory: AsyncFactory[T],
        config: PoolConfig | None = None,
        *,
        name: str | None = None,
        identity: PoolIdentity | None = None,
        registry: PoolRegistry | None = None,
        clock: Clock | None = None,
        rng: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            config,
            options,
            name=name,
            identity=identity,
            factory_identity=getattr(factory, "identity", None),
            registry=registry,
            clock=clock,
            rng=rng,
        )
        self._factory = factory
        self._idle: deque[Entry[T]] = deque()
        self._pop = self._idle.pop if self.config.order == "lifo" else self._idle.popleft
        self._waiters: deque[_AsyncWaiter[T]] = deque()
        self._lent: dict[int, Entry[T]] = {}
        self._size = 0
        self._closed = False
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Start the maintainer (needs a running loop) and, with ``eager``, fill ``min_size``."""
        if self.config.eager:
            await self.fill()
        if self.config.maintain and self._task is None and not self._closed:
            self._stop = asyncio.Event()
            self._task = start_task(self, self._stop, self.config.maintenance_interval)

    async def __aenter__(self) -> AsyncPool[T]:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # ------------------------------------------------------------------ borrow

    async def getconn(self, timeout: float | None = None) -> T:
        """Borrow a resource, waiting up to ``timeout`` seconds (default ``config.timeout``)."""
        if self._idle:
            entry = self._pop()
            now = self._now()
            if now < entry.expires and not self._needs_validation(entry, now):
                self._lent[id(entry.conn)] = entry
                self._ledger.borrow(entry.id, None, False, now)
                return entry.conn
            self._lent[id(entry.conn)] = entry
        else:
            entry = None
        return await self._getconn_slow(timeout, entry)

    async def _getconn_slow(self, timeout: float | None, entry: Entry[T] | None) -> T:
        if timeout is None:
            timeout = self.config.timeout
        t0 = self._now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = False
        while True:
            if entry is not None:
                if await self._check_out(entry, t0 if pending else None, pending):
                    return entry.conn
                entry = None
            if self._closed:
                if pending:
                    self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
                raise self._closed_error()
            if self._idle:
                entry = self._pop()
                self._lent[id(entry.conn)] = entry
                continue
            if self._size < self.config.max_size and self._backoff.ready(self._now()):
                self._size += 1
                fresh = await self._open_slot(t0, pending)
                if fresh is not None:
                    return fresh.conn
                continue
            if not pending:
                self._admit()
            waiter: _AsyncWaiter[T] = _AsyncWaiter(loop.create_future(), t0)
            self._waiters.append(waiter)
            if not pending:
                self._ledger.wait()
                pending = True
            served = await self._wait(waiter, deadline, timeout)
            if served is not None:
                return served.conn
            if waiter.grant:
                fresh = await self._open_slot(t0, True)
                if fresh is not None:
                    return fresh.conn
            # else: a backoff window ended; look again (still pending)

    def _admit(self) -> None:
        if self.config.fail_fast:
            raise self._exhausted_error("no connection available and fail_fast is set")
        limit = self.config.max_waiting
        if limit is not None and len(self._waiters) >= limit:
            raise self._exhausted_error(f"max_waiting={limit} callers already waiting")

    async def _wait(
        self, waiter: _AsyncWaiter[T], deadline: float, timeout: float
    ) -> Entry[T] | None:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        backoff_left = self._backoff.ready_at - self._now()
        step = min(remaining, backoff_left) if backoff_left > 0 else remaining
        timer = loop.call_later(max(step, 0.0), self._expire, waiter)
        try:
            await waiter.fut
        except asyncio.CancelledError:
            orphan = self._cancelled(waiter)
            if orphan is not None:
                await self._destroy_entry(orphan)
            raise
        finally:
            timer.cancel()
        if waiter.closed:
            raise self._closed_error()  # close() recorded the wait's resolution
        if waiter.entry is not None or waiter.grant:
            return waiter.entry
        # Timer fired: the waiter has left the queue.
        if loop.time() >= deadline:
            error = self._timeout_error(waiter.t0, timeout)
            self._ledger.timeout(waiter.t0, error)
            raise error
        return None

    def _expire(self, waiter: _AsyncWaiter[T]) -> None:
        if waiter.fut.done():
            return
        self._offer_slots()  # a backoff window may have ended: the oldest waiter goes first
        if waiter.fut.done():
            return
        self._waiters.remove(waiter)
        waiter.timed_out = True
        waiter.wake()

    def _cancelled(self, waiter: _AsyncWaiter[T]) -> Entry[T] | None:
        """The waiting task was cancelled: give back whatever it was given (no slot lost).

        Returns an entry the caller must destroy (the pool closed meanwhile)."""
        if waiter.entry is not None:
            # Already handed over and recorded as borrowed: return it properly.
            entry = waiter.entry
            self._ledger.release(entry.id)
            del self._lent[id(entry.conn)]
            if entry.gone:
                return entry
            if self._closed:
                self._evict(entry, "pool_closed")
                return entry
            self._make_available(entry)
            return None
        if waiter.grant:
            self._size -= 1
            self._offer_slots()
        elif waiter in self._waiters:
            self._waiters.remove(waiter)
        if not waiter.closed:
            self._ledger.error("cancelled", "wait", "the waiting task was cancelled")
        return None

    async def _open_slot(self, t0: float, queued: bool) -> Entry[T] | None:
        """Open a connection in a reserved slot and lend it; None if the create failed."""
        start = self._now()
        try:
            conn = await self._factory.create()
        except Exception as exc:
            self._create_failed(start, exc)
            return None
        except BaseException:
            self._size -= 1
            self._offer_slots()
            raise
        if self._closed:
            self._size -= 1
            await self._destroy(conn)
            raise self._closed_error()
        self._backoff.success()
        now = self._now()
        entry = Entry(self._ledger.create(start), conn, now, self._expiry(now))
        self._lent[id(conn)] = entry
        self._ledger.borrow(entry.id, t0, queued)
        return entry

    def _create_failed(self, start: float, exc: Exception) -> None:
        self._size -= 1
        if not self._closed:
            self._ledger.create_failed(start, exc)
        now = self._now()
        delay = self._backoff.failure(now, exc)
        self._log_create_failure(now, delay)

    async def _check_out(self, entry: Entry[T], t0: float | None, queued: bool) -> bool:
        now = self._now()
        if now >= entry.expires:
            await self._discard(entry, "max_lifetime")
            return False
        if self._needs_validation(entry, now) and not await self._validate(entry):
            return False
        if entry.gone:
            await self._destroy_entry(entry)
            raise self._closed_error()
        self._ledger.borrow(entry.id, t0, queued)
        return True

    async def _validate(self, entry: Entry[T]) -> bool:
        start = self._now()
        try:
            ok = bool(await self._factory.validate(entry.conn))
        except Exception:
            ok = False
        if entry.gone:
            return True  # the caller sees gone and handles it
        self._ledger.validate(entry.id, start, ok)
        if ok:
            entry.checked = self._now()
            return True
        await self._discard(entry, "failed_validation")
        return False

    # ------------------------------------------------------------------ return

    async def putconn(self, conn: T, *, broken: bool = False) -> None:
        """Give ``conn`` back; ``broken=True`` evicts it (reason ``broken``)."""
        key = id(conn)
        entry = self._lent.get(key)
        if entry is None or entry.conn is not conn:
            raise PoolError(f"{type(conn).__name__} object was not lent by pool {self.name!r}")
        now = self._now()
        self._ledger.release(entry.id, now)
        reason = "broken" if broken else entry.doomed
        if reason is None:
            try:
                broken_now = self._factory.is_broken(conn)
            except Exception:
                broken_now = True
            if broken_now:
                reason = "broken"
            elif now >= entry.expires:
                reason = "max_lifetime"
        reset_error: Exception | None = None
        if reason is None and self.config.reset_on_return:
            try:
                await self._factory.reset(conn)
            except Exception as exc:
                reason, reset_error = "reset_failed", exc
        del self._lent[key]
        if entry.gone:
            await self._destroy_entry(entry)
            return
        if reason is not None or self._closed:
            if reset_error is not None:
                self._ledger.error("reset_failed", "reset", reset_error, conn=entry.id)
            self._evict(entry, reason or "pool_closed")
            await self._destroy_entry(entry)
            return
        entry.last_used = entry.checked = now
        self._make_available(entry)

    def mark_broken(self, conn: T) -> None:
        """Flag a lent ``conn`` so its return evicts it (reason ``broken``)."""
        entry = self._lent.get(id(conn))
        if entry is not None and entry.conn is conn:
            entry.doomed = "broken"

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[T]:
        """``async with pool.connection() as conn:`` borrow, and always return."""
        conn = await self.getconn(timeout)
        try:
            yield conn
        finally:
            await self.putconn(conn)

    def _make_available(self, entry: Entry[T]) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.fut.done():
                continue  # cancelled: its task cleans up after itself
            self._lent[id(entry.conn)] = entry
            self._ledger.borrow(entry.id, waiter.t0, True)
            waiter.entry = entry
            waiter.wake()
            return
        self._idle.append(entry)

    # ------------------------------------------------------------------ eviction

    def _evict(self, entry: Entry[T], reason: str) -> None:
        entry.gone = True
        self._ledger.evict(entry.id, reason)
        self._size -= 1
        self._offer_slots()

    async def _discard(self, entry: Entry[T], reason: str) -> None:
        self._lent.pop(id(entry.conn), None)
        if not entry.gone:
            self._evict(entry, reason)
        await self._destroy_entry(entry)

    def _offer_slots(self) -> None:
        while (
            self._waiters
            and self._size < self.config.max_size
            and not self._closed
            and self._backoff.ready(self._now())
        ):
            waiter = self._waiters.popleft()
            if waiter.fut.done():
                continue
            self._size += 1
            waiter.grant = True
            waiter.wake()

    async def _destroy_entry(self, entry: Entry[T]) -> None:
        if not entry.destroyed:
            entry.destroyed = True
            await self._destroy(entry.conn)

    async def _destroy(self, conn: T) -> None:
        try:
            await self._factory.destroy(conn)
        except Exception as exc:
            self._log_destroy_failure(exc)

    # ------------------------------------------------------------------ maintenance

    async def fill(self) -> int:
        """Open connections up to ``min_size`` now. Returns how many were opened."""
        opened = 0
        while not self._closed and self._size < self.config.min_size:
            self._size += 1
            start = self._now()
            try:
                conn = await self._factory.create()
            except Exception as exc:
                self._create_failed(start, exc)
                raise
            await self._park_new(conn, start)
            opened += 1
        return opened

    async def _park_new(self, conn: T, start: float) -> None:
        if self._closed:
            self._size -= 1
            await self._destroy(conn)
            return
        self._backoff.success()
        now = self._now()
        self._make_available(Entry(self._ledger.create(start), conn, now, self._expiry(now)))

    async def run_maintenance(self) -> float:
        """One maintenance pass (see :meth:`Pool.run_maintenance`); seconds to the next."""
        cfg = self.config
        if self._closed:
            return cfg.maintenance_interval
        now = self._now()
        surplus = self._size - cfg.min_size
        keep: list[Entry[T]] = []
        victims: list[Entry[T]] = []
        to_check: list[Entry[T]] = []
        for entry in self._idle:
            if now >= entry.expires:
                self._evict(entry, "max_lifetime")
                victims.append(entry)
                surplus -= 1
            elif surplus > 0 and self._idle_expired(entry, now):
                self._evict(entry, "idle_timeout")
                victims.append(entry)
                surplus -= 1
            elif cfg.background_validation is not None and (
                now - entry.checked >= cfg.background_validation
            ):
                self._lent[id(entry.conn)] = entry
                to_check.append(entry)
            else:
                keep.append(entry)
        self._idle.clear()
        self._idle.extend(keep)
        for entry in victims:
            await self._destroy_entry(entry)
        for entry in to_check:
            if await self._validate(entry):
                del self._lent[id(entry.conn)]
                if entry.gone:
                    await self._destroy_entry(entry)
                else:
                    self._make_available(entry)
        if cfg.leak_threshold is not None:
            self._ledger.check_leaks(cfg.leak_threshold)
        if cfg.reclaim_after is not None:
            await self._reclaim(cfg.reclaim_after)
        return await self._refill()

    async def _reclaim(self, after: float) -> None:
        leaked = {leak.conn for leak in self._ledger.leaks(after)}
        victims = [e for e in self._lent.values() if e.id in leaked and not e.gone]
        for entry in victims:
            self._evict(entry, "leaked")
        for entry in victims:
            await self._destroy_entry(entry)

    async def _refill(self) -> float:
        interval = self.config.maintenance_interval
        while True:
            now = self._now()
            if self._closed:
                return interval
            self._offer_slots()
            if self._size >= self.config.min_size:
                return interval
            if not self._backoff.ready(now):
                return min(interval, self._backoff.ready_at - now)
            if self._warmup:
                if self._warmup[0] > now:
                    return min(interval, self._warmup[0] - now)
                self._warmup.pop(0)
            self._size += 1
            start = self._now()
            try:
                conn = await self._factory.create()
            except Exception as exc:
                self._create_failed(start, exc)
                continue
            await self._park_new(conn, start)

    # ------------------------------------------------------------------ close

    async def drain(self) -> None:
        """Close idle connections now and lent ones when returned (reason ``pool_closed``)."""
        victims = list(self._idle)
        self._idle.clear()
        for entry in victims:
            self._evict(entry, "pool_closed")
        for entry in self._lent.values():
            entry.doomed = "pool_closed"
        for entry in victims:
            await self._destroy_entry(entry)

    async def close(self, timeout: float = 0.0) -> None:
        """Close: waiters get PoolClosed, idle connections close now, lent ones are awaited up
        to ``timeout`` seconds, then recorded as evicted and closed when returned."""
        if self._closed:
            return
        self._closed = True
        waiters = list(self._waiters)
        self._waiters.clear()
        for waiter in waiters:
            if waiter.fut.done():
                continue
            self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
            waiter.closed = True
            waiter.wake()
        victims = list(self._idle)
        self._idle.clear()
        for entry in victims:
            self._evict(entry, "pool_closed")
        if self._stop is not None:
            self._stop.set()
        for entry in victims:
            await self._destroy_entry(entry)
        if timeout > 0 and self._lent:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while self._lent and loop.time() < deadline:
                await asyncio.sleep(min(0.01, timeout))  # polling real state with a deadline
        for entry in self._lent.values():
            if not entry.gone:
                self._evict(entry, "pool_closed")
        self._ledger.close()
        if self._task is not None:
            await self._task
