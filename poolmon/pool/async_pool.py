"""AsyncPool: the same pool for asyncio, with the same rules and events as :class:`Pool`.

Algorithm
---------
The state (``_idle`` deque, ``_waiters`` deque, ``_lent`` map, ``_size``) lives on one event
loop and is only touched between ``await`` points, so each state change and the ledger event
that records it happen atomically without a lock. Every ``await`` (create, validate, reset,
destroy) happens on an entry that no other task can reach: it sits in ``_lent`` (so ``close()``
still sees it) and is re-checked for ``gone`` after the ``await``.

Waiters wait on futures, queued in arrival order; bounded barging works as in :class:`Pool`
(``handoff_after``), with "barging" meaning a task that runs before the woken waiter does:

* Normal mode: a return parks its connection in ``_idle`` and wakes the head waiter, which
  stays at the head. Any task that runs first (the returning task borrowing again, a newcomer)
  may take the connection; the head then finds nothing and sleeps again at its place (a new
  future, the same timer).
* Starvation mode, while the head has waited ``handoff_after`` or more (pool clock): returns
  hand connections straight to it (borrow recorded at once) and newcomers queue behind.
  ``handoff_after=0``: always, i.e. strict FIFO hand-off.
* Among waiters, service is in arrival order: only the head takes an idle connection or is
  handed one; a freed slot is granted to the head, which opens the connection itself.

Invariants: no connection lent twice (an entry is in ``_idle``, in ``_lent``, or gone);
``len(_lent) + len(_idle) <= _size <= max_size``; when ``_idle`` and live waiters are both
present the head's future is done (it will look); a hand-off sets ``waiter.entry`` and
dequeues the waiter in one step, and the waiter checks ``entry`` before anything else.

Cancellation never loses a slot: a cancelled waiter still queued leaves the queue (an error of
type ``cancelled`` in phase ``wait``) and wakes the new head if a connection is idle; one that
had already been handed a connection gives it back through the normal return path; one that
had been granted a slot releases it; one cancelled while validating an idle connection puts it
back. ``close()`` wakes every waiter with PoolClosed. A cancelled waiter's future is cancelled
at once, so hand-offs and grants skip it even before its task runs its clean-up.
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
from poolmon.errors import PoolClosed, PoolError
from poolmon.pool._base import BasePool, Entry
from poolmon.pool.config import PoolConfig
from poolmon.pool.factory import AsyncFactory, hook
from poolmon.pool.maintainer import start_task

__all__ = ["AsyncPool"]

T = TypeVar("T")


class _AsyncWaiter(Generic[T]):
    """A queued task. Whoever serves it sets one of ``entry``/``grant``/``closed`` and dequeues
    it in the same step; a bare wake (normal mode, or its timer) only says "look"."""

    __slots__ = ("closed", "entry", "expired", "fut", "grant", "t0")

    def __init__(self, fut: asyncio.Future[None], t0: float) -> None:
        self.fut = fut  # replaced by a fresh one each time the waiter sleeps again
        self.t0 = t0  # when the borrow started (pool clock): handoff_after counts from here
        self.entry: Entry[T] | None = None
        self.grant = False
        self.closed = False
        self.expired = False  # its timer fired: deadline, or the end of a backoff window

    def wake(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)

    @property
    def dead(self) -> bool:
        """Its task was cancelled while it waited; the task cleans up when it runs."""
        return self.fut.cancelled()


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
        # No-op hooks are skipped, as in Pool: no call (and no await) per return, and a factory
        # without a health check is never "validated".
        self._reset = hook(factory, "reset") if self.config.reset_on_return else None
        self._is_broken = hook(factory, "is_broken")
        if hook(factory, "validate") is None:
            self._validate_after = self._background_validation = None
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
        entry: Entry[T] | None = None
        if self._idle:
            now = self._now()
            waiters = self._waiters
            # Barging is allowed unless the oldest waiter is starving (see the module doc).
            if not waiters or now - waiters[0].t0 < self._handoff_after:
                entry = self._pop()
                if now < entry.expires and not self._needs_validation(entry, now):
                    self._lent[id(entry.conn)] = entry
                    self._ledger.borrow(entry.id, None, False, now)
                    return entry.conn
                self._lent[id(entry.conn)] = entry
        return await self._getconn_slow(timeout, entry)

    async def _getconn_slow(self, timeout: float | None, entry: Entry[T] | None) -> T:
        if timeout is None:
            timeout = self.config.timeout
        t0 = self._now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = False  # a wait event is recorded and not yet resolved
        try:
            while True:
                if entry is not None:
                    try:
                        ok = await self._check_out(entry, t0 if pending else None, pending)
                    except asyncio.CancelledError:
                        self._put_back(entry)  # cancelled while validating: lose no slot
                        raise
                    if ok:
                        return entry.conn
                    entry = None
                if self._closed:
                    raise self._closed_error()
                if self._idle and not self._starving():
                    entry = self._pop()
                    self._lent[id(entry.conn)] = entry
                    continue
                if self._size < self.config.max_size and self._backoff.ready(self._now()):
                    self._size += 1
                    fresh = await self._open_slot(t0, pending)
                    if fresh is not None:
                        return fresh.conn
                    continue
                # Queue (behind a starving head if connections are idle: they are its to take).
                if not pending:
                    self._admit()
                waiter: _AsyncWaiter[T] = _AsyncWaiter(loop.create_future(), t0)
                self._waiters.append(waiter)
                if not pending:
                    self._ledger.wait()
                    pending = True
                try:
                    served, lent = await self._wait(waiter, deadline, timeout)
                except BaseException:
                    pending = False  # _wait resolved it: timeout, close or cancellation
                    raise
                if served is not None:
                    if lent:
                        return served.conn
                    entry = served  # taken from idle at the head: check it, then lend it
                    continue
                if waiter.grant:
                    fresh = await self._open_slot(t0, True)
                    if fresh is not None:
                        return fresh.conn
                # else: a backoff window ended; look again (still pending)
        except asyncio.CancelledError:
            if pending:
                self._ledger.error("cancelled", "wait", "the waiting task was cancelled")
            raise
        except PoolClosed:
            if pending:
                self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
            raise

    def _admit(self) -> None:
        if self.config.fail_fast:
            raise self._exhausted_error("no connection available and fail_fast is set")
        limit = self.config.max_waiting
        if limit is not None and len(self._waiters) >= limit:
            raise self._exhausted_error(f"max_waiting={limit} callers already waiting")

    def _starving(self) -> bool:
        """The oldest live waiter has waited ``handoff_after`` or more: no barging."""
        self._drop_dead_heads()
        waiters = self._waiters
        return bool(waiters) and self._now() - waiters[0].t0 >= self._handoff_after

    def _drop_dead_heads(self) -> None:
        # A cancelled waiter's task removes itself later; until then it must not hold the head.
        waiters = self._waiters
        while waiters and waiters[0].dead:
            waiters.popleft()

    async def _wait(
        self, waiter: _AsyncWaiter[T], deadline: float, timeout: float
    ) -> tuple[Entry[T] | None, bool]:
        """Sleep until handed a connection ``(entry, True)``: lent and recorded; at the head
        with one idle ``(entry, False)``: taken, still to check; granted a slot ``(None,
        False)`` with ``grant`` set; or the timer fired ``(None, False)``: a backoff window
        ended, look again. Raises PoolTimeout at the deadline, PoolClosed on close."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        backoff_left = self._backoff.ready_at - self._now()
        step = min(remaining, backoff_left) if backoff_left > 0 else remaining
        timer = loop.call_later(max(step, 0.0), self._expire, waiter)
        try:
            while True:
                try:
                    await waiter.fut
                except asyncio.CancelledError:
                    orphan = self._cancelled(waiter)
                    if orphan is not None:
                        await self._destroy_entry(orphan)
                    raise
                if waiter.closed:
                    raise self._closed_error()  # close() recorded the wait's resolution
                if waiter.entry is not None or waiter.grant:  # checked first: never lost
                    return waiter.entry, waiter.entry is not None
                self._drop_dead_heads()
                waiters = self._waiters
                if self._idle and waiters[0] is waiter:
                    # Normal mode: the head takes an idle connection (nobody ran first).
                    waiters.popleft()
                    entry = self._pop()
                    self._lent[id(entry.conn)] = entry
                    self._wake_head()  # more idle: the next waiter's turn
                    return entry, False
                if waiter.expired:
                    self._offer_slots()  # a backoff window may have ended: oldest first
                    if _granted(waiter):
                        return None, False
                    waiters.remove(waiter)
                    self._wake_head()  # it may have been the woken head
                    if loop.time() >= deadline:
                        error = self._timeout_error(waiter.t0, timeout)
                        self._ledger.timeout(waiter.t0, error)
                        raise error
                    return None, False
                # Barged: sleep again at the same place (the timer still runs).
                waiter.fut = loop.create_future()
        finally:
            timer.cancel()

    def _expire(self, waiter: _AsyncWaiter[T]) -> None:
        # Only flags and wakes: the waiter's own task decides (so a wake that is already
        # pending, e.g. a hand-off, is never overtaken by the timer).
        waiter.expired = True
        waiter.wake()

    def _cancelled(self, waiter: _AsyncWaiter[T]) -> Entry[T] | None:
        """The waiting task was cancelled: give back whatever it was given (no slot lost).

        Returns an entry the caller must destroy (the pool closed meanwhile)."""
        if waiter.entry is not None:
            # Already handed over and recorded as borrowed: return it properly.
            entry = waiter.entry
            self._ledger.release(entry.id)
            self._lent.pop(id(entry.conn), None)
            if entry.gone:
                return entry
            if self._closed:
                self._evict(entry, "pool_closed")
                return entry
            self._give(entry, self._now())
            return None
        if waiter.grant:
            self._size -= 1
            self._offer_slots()
        elif waiter in self._waiters:
            self._waiters.remove(waiter)
            self._wake_head()  # it may have been the woken head
        if not waiter.closed:
            self._ledger.error("cancelled", "wait", "the waiting task was cancelled")
        return None

    def _put_back(self, entry: Entry[T]) -> None:
        """An entry taken from idle whose check was interrupted goes back (or away if gone)."""
        self._lent.pop(id(entry.conn), None)
        if not entry.gone and not self._closed:
            self._give(entry, self._now())
        elif not entry.gone:
            self._evict(entry, "pool_closed")

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
        """Give ``conn`` back; ``broken=True`` evicts it (reason ``broken``).

        Raises PoolError for a resource this pool did not lend; a late return of a connection
        taken back by forced reclamation is absorbed silently (see :meth:`Pool.putconn`).
        """
        key = id(conn)
        entry = self._lent.get(key)
        if entry is None or entry.conn is not conn:
            if self._reclaimed and self._forget_reclaimed(conn):
                return
            raise PoolError(f"{type(conn).__name__} object was not lent by pool {self.name!r}")
        now = self._now()
        self._ledger.release(entry.id, now)
        reason = "broken" if broken else entry.doomed
        if reason is None:
            if self._is_broken is not None:
                try:
                    if self._is_broken(conn):
                        reason = "broken"
                except Exception:
                    reason = "broken"
            if reason is None and now >= entry.expires:
                reason = "max_lifetime"
        reset_error: Exception | None = None
        if reason is None and self._reset is not None:
            try:
                await self._reset(conn)
            except Exception as exc:
                reason, reset_error = "reset_failed", exc
        # pop, not del: reclamation may have taken it out of _lent during the reset.
        self._lent.pop(key, None)
        if entry.gone:
            self._reclaimed.pop(key, None)  # reclaimed meanwhile: this was its late return
            await self._destroy_entry(entry)
            return
        if reason is not None or self._closed:
            if reset_error is not None:
                self._ledger.error("reset_failed", "reset", reset_error, conn=entry.id)
            self._evict(entry, reason or "pool_closed")
            await self._destroy_entry(entry)
            return
        entry.last_used = entry.checked = now
        self._give(entry, now)

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

    def _give(self, entry: Entry[T], now: float) -> None:
        """Make a usable entry (in neither ``_idle`` nor ``_lent``) available.

        Starvation mode (the head has waited >= handoff_after): hand it to the head, recording
        the borrow now. Normal mode: park it in ``_idle`` and wake the head, which keeps its
        place whether or not another task takes the connection first.
        """
        self._drop_dead_heads()
        waiters = self._waiters
        if not waiters:
            self._idle.append(entry)
            return
        head = waiters[0]
        if now - head.t0 >= self._handoff_after:
            waiters.popleft()
            self._lent[id(entry.conn)] = entry
            self._ledger.borrow(entry.id, head.t0, True, now)
            head.entry = entry
            head.wake()
            self._wake_head()  # idle ones left from normal mode: the new head's turn
            return
        self._idle.append(entry)
        head.wake()

    def _wake_head(self) -> None:
        """An idle connection and a live waiter: the head must look."""
        if self._idle:
            self._drop_dead_heads()
            if self._waiters:
                self._waiters[0].wake()

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
        granted = False
        while (
            self._waiters
            and self._size < self.config.max_size
            and not self._closed
            and self._backoff.ready(self._now())
        ):
            waiter = self._waiters.popleft()
            if waiter.dead:
                continue  # cancelled: its task cleans up after itself
            self._size += 1
            waiter.grant = True
            waiter.wake()  # a future already done (woken to look) still sees grant first
            granted = True
        if granted:
            self._wake_head()

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
        self._give(Entry(self._ledger.create(start), conn, now, self._expiry(now)), now)

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
            elif self._background_validation is not None and (
                now - entry.checked >= self._background_validation
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
                    self._give(entry, self._now())
        if cfg.leak_threshold is not None:
            self._ledger.check_leaks(cfg.leak_threshold)
        if cfg.reclaim_after is not None:
            await self._reclaim(cfg.reclaim_after)
        return await self._refill()

    async def _reclaim(self, after: float) -> None:
        leaked = {leak.conn for leak in self._ledger.leaks(after)}
        victims = [e for e in self._lent.values() if e.id in leaked and not e.gone]
        for entry in victims:
            # Out of _lent now; the holder's late putconn is absorbed (no second evict).
            del self._lent[id(entry.conn)]
            self._remember_reclaimed(entry.conn)
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
            if waiter.dead:
                continue  # its task records its own cancellation
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


def _granted(waiter: _AsyncWaiter[Any]) -> bool:
    # A call, not an attribute test, so the type checker does not carry an earlier narrowing
    # of ``waiter.grant`` past _offer_slots(), which may set it.
    return waiter.grant
