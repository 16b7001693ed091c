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

Invariants (the same numbers as :class:`Pool`'s; each kept between two awaits, and the
comments at the code say which step keeps which):

1. No connection is lent twice: an entry is in exactly one of ``_idle``, ``_lent``, a waiter's
   ``entry`` (also in ``_lent``) or nowhere (gone).
2. ``len(_lent) + len(_idle) <= _size <= ceiling`` (``max_size``, or ``burst_max`` with
   burst capacity): a slot is reserved before a create and released by every eviction or
   failed create; above ``max_size`` only while waits are measured (``_can_open_locked``).
3. If ``_idle`` and live waiters are both present, the head's future is done (it will look):
   ``_wake_head_locked`` after every step that parks a connection or removes the head.
4. A woken waiter never loses a connection handed to it: the hand-off sets ``waiter.entry``
   and dequeues the waiter in one step; the waiter checks ``entry`` first, before its timer.
5. Timeouts and cancellation lose no slot: a cancelled waiter still queued leaves the queue
   (an error of type ``cancelled`` in phase ``wait``) and wakes the new head if a connection
   is idle; one already handed a connection gives it back; one granted a slot releases it; one
   cancelled while validating an idle connection puts it back. A cancelled waiter's future is
   cancelled at once (``dead``), so hand-offs and grants skip it before its task cleans up.
6. ``close()`` marks every live waiter ``closed`` and wakes it: each raises PoolClosed.

The ``*_locked`` helpers shared with :class:`Pool` (``poolmon/pool/_base.py``) are the
critical sections; here "locked" means "runs without an await".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from poolmon.errors import PoolClosed
from poolmon.pool._base import BasePool, Entry
from poolmon.pool.factory import AsyncFactory
from poolmon.pool.maintainer import start_task

__all__ = ["AsyncPool"]

T = TypeVar("T")


class _AsyncWaiter(Generic[T]):
    """A queued task. Whoever serves it sets one of ``entry``/``grant``/``closed`` and dequeues
    it in the same step; a bare wake (normal mode, or its timer) only says "look"."""

    __slots__ = ("closed", "entry", "expired", "fut", "grant", "prio", "t0", "tenant")

    def __init__(self, fut: asyncio.Future[None], t0: float, tenant: str, prio: int) -> None:
        self.tenant = tenant  # its tenant (pools with tenants; "" the default one)
        self.prio = prio  # its priority class
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


class AsyncPool(BasePool[T, "_AsyncWaiter[T]", AsyncFactory[T]]):
    """A pool of resources made by an async ``factory``; use from one event loop.

    Open it with ``await pool.open()`` or ``async with AsyncPool(...) as pool``.
    """

    _asynchronous = True

    def _optional_points(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return self._optional_points_locked()

    def _start(self) -> None:
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

    # ------------------------------------------------------------------ borrow

    async def getconn(
        self,
        timeout: float | None = None,
        *,
        tenant: str | None = None,
        priority: int | None = None,
    ) -> T:
        """Borrow a resource, waiting up to ``timeout`` seconds (default ``config.timeout``);
        ``tenant`` and ``priority`` as in :meth:`Pool.getconn`."""
        if not self._plain or tenant is not None or priority is not None:
            return await self._getconn_shared(timeout, tenant, priority)
        entry: Entry[T] | None = None
        if self._idle:
            now = self._now()
            waiters = self._waiters
            # Barging is allowed unless the oldest waiter is starving (see the module doc).
            if not waiters or now - waiters[0].t0 < self._handoff_after:
                entry = self._pop()
                self._lent[id(entry.conn)] = entry  # lent, or being checked (invariant 1)
                if now < entry.expires and (
                    self._validate_after is None or now - entry.checked < self._validate_after
                ):
                    self._ledger.borrow(entry.id, now=now)
                    return entry.conn
        return await self._getconn_slow(timeout, entry, tenant, priority)

    async def _getconn_shared(
        self, timeout: float | None, tenant: str | None, priority: int | None
    ) -> T:
        """The fast path of a pool with tenants or priorities (see :meth:`Pool.getconn`)."""
        shares = self._shares
        key, prio = shares.check(tenant, priority)
        ledger = self._ledger
        entry: Entry[T] | None = None
        if self._idle and not self._waiters and shares.take(key):
            entry = self._pop()
            self._lent[id(entry.conn)] = entry  # lent now, or being checked (inv. 1)
            now = self._now()
            if now < entry.expires and (
                self._validate_after is None or now - entry.checked < self._validate_after
            ):
                if self._accounting:
                    entry.tenant, entry.lent_at = key, now
                if ledger.lane.open:  # nobody builds event objects: no 1.1 fields
                    ledger.borrow(entry.id, now=now)
                else:
                    self._lent_shared_locked(entry, key, prio, now)
                return entry.conn
            shares.untake(key)  # to check first: _check_out accounts it
        return await self._getconn_slow(timeout, entry, tenant, priority)

    async def _getconn_slow(
        self,
        timeout: float | None,
        entry: Entry[T] | None,
        tenant: str | None = None,
        priority: int | None = None,
    ) -> T:
        timeout, key, prio = self._borrow_args(timeout, tenant, priority)
        t0 = self._now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = False  # a wait event is recorded and not yet resolved
        try:
            while True:
                if entry is not None:
                    if await self._check_out_or_put_back(
                        entry, t0, pending=pending, key=key, prio=prio
                    ):
                        return entry.conn
                    entry = None
                if self._closed:
                    raise self._closed_error()
                if self._idle and self._may_take_locked(key, prio):
                    entry = self._take_idle_locked()
                    continue
                if self._may_open_locked(key):
                    self._reserve_locked(key)  # invariant 2
                    fresh = await self._open(t0, queued=pending, key=key, prio=prio)
                    if fresh is not None:
                        return fresh.conn
                    continue
                # Queue (behind a starving head if connections are idle: they are its to take;
                # invariant 3: it has been woken).
                waiter = self._enqueue_locked(loop, t0, key, prio, pending=pending)
                pending = True
                self._queued_locked()
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
                    fresh = await self._open(t0, queued=True, key=key, prio=prio)
                    if fresh is not None:
                        return fresh.conn
                # else: a backoff window ended; look again (still pending)
        except (asyncio.CancelledError, PoolClosed) as exc:
            if pending:
                self._wait_ended_locked(exc)
            raise

    def _wait_ended_locked(self, exc: BaseException) -> None:
        """Resolve the caller's recorded wait: cancelled, or the pool closed meanwhile."""
        if isinstance(exc, PoolClosed):
            self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
        else:
            self._ledger.error("cancelled", "wait", "the waiting task was cancelled")

    async def _check_out_or_put_back(
        self, entry: Entry[T], t0: float, *, pending: bool, key: str, prio: int
    ) -> bool:
        """:meth:`_check_out` (True: lent); a cancellation meanwhile puts ``entry`` back."""
        try:
            return await self._check_out(
                entry, t0 if pending else None, queued=pending, key=key, prio=prio
            )
        except asyncio.CancelledError:
            if not self._put_back_locked(entry):  # lose no slot (invariant 5)
                await self._destroy_entry(entry)
            raise

    def _enqueue_locked(
        self, loop: asyncio.AbstractEventLoop, t0: float, key: str, prio: int, *, pending: bool
    ) -> _AsyncWaiter[T]:
        """Queue the caller (refused first if it is not queued yet); its wait is recorded
        once, when it first queues."""
        if not pending:
            refusal = self._refusal_locked(key)
            if refusal is not None:
                raise self._refused_error(refusal, key, prio)
        waiter: _AsyncWaiter[T] = _AsyncWaiter(loop.create_future(), t0, key, prio)
        self._waiters.append(waiter)
        if not pending:
            self._record_wait_locked(key, prio)
        return waiter

    async def _wait(
        self, waiter: _AsyncWaiter[T], deadline: float, timeout: float
    ) -> tuple[Entry[T] | None, bool]:
        """Sleep until handed a connection ``(entry, True)``: lent and recorded; at the head
        with one idle ``(entry, False)``: taken, still to check; granted a slot ``(None,
        False)`` with ``grant`` set; or the timer fired ``(None, False)``: a backoff window
        ended, look again. Raises PoolTimeout at the deadline, PoolClosed on close."""
        loop = asyncio.get_running_loop()
        step = self._sleep_step(deadline - loop.time())
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
                served = self._served_locked(waiter)  # entry, grant first (invariant 4)
                if served is not None:
                    return served
                waiters = self._waiters
                if waiter.expired:
                    self._offer_slots_locked()  # a backoff window may have ended: oldest first
                    if _granted(waiter):
                        return None, False
                    waiters.remove(waiter)
                    self._wake_head_locked()  # it may have been the woken head (invariant 3)
                    if loop.time() >= deadline:
                        raise self._timed_out_locked(waiter, timeout)
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
        """The waiting task was cancelled: give back whatever it was given (invariant 5).

        Returns an entry the caller must destroy (the pool closed meanwhile)."""
        if waiter.entry is not None:
            # Already handed over and recorded as borrowed: return it properly.
            entry = waiter.entry
            self._ledger.release(entry.id)
            return None if self._put_back_locked(entry) else entry
        if waiter.grant:
            self._free_slot_locked(waiter.tenant)
        elif waiter in self._waiters:
            self._waiters.remove(waiter)
            self._wake_head_locked()  # it may have been the woken head (invariant 3)
        if not waiter.closed:
            self._ledger.error("cancelled", "wait", "the waiting task was cancelled")
        return None

    async def _create(
        self, key: str | None = None, *, reraise: bool = False
    ) -> tuple[T, float] | None:
        """Call the factory in a reserved slot: ``(resource, start)``, or None when it failed
        (recorded, backed off; raised again with ``reraise``). Any other interruption, e.g.
        cancellation, frees the slot (invariant 5)."""
        start = self._now()
        try:
            return await self._factory.create(), start
        except Exception as exc:
            self._create_failed(start, exc, key)
            if reraise:
                raise
            return None
        except BaseException:
            self._free_slot_locked(key)
            raise

    async def _open(self, t0: float, *, queued: bool, key: str, prio: int) -> Entry[T] | None:
        """Open a connection in a reserved slot and lend it; None if the create failed."""
        made = await self._create(key)
        if made is None:
            return None
        conn, start = made
        entry = self._lend_new_locked(conn, start, t0, queued=queued, key=key, prio=prio)
        if entry is None:
            await self._destroy(conn)
            raise self._closed_error()
        return entry

    def _create_failed(self, start: float, exc: Exception, key: str | None) -> None:
        self._create_failed_locked(start, exc, key)

    async def _check_out(
        self, entry: Entry[T], t0: float | None, *, queued: bool, key: str, prio: int
    ) -> bool:
        now = self._now()
        if now >= entry.expires:
            await self._discard(entry, "max_lifetime")
            return False
        if self._needs_validation(entry, now) and not await self._validate(entry):
            return False
        if entry.gone:
            await self._destroy_entry(entry)
            raise self._closed_error()
        self._record_borrow_locked(entry, t0, queued=queued, now=None, key=key, prio=prio)
        return True

    async def _validate(self, entry: Entry[T]) -> bool:
        start = self._now()
        try:
            ok = bool(await self._factory.validate(entry.conn))
        except Exception:
            ok = False
        if self._validated_locked(entry, start, ok=ok):
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
            self._unknown_return(conn)  # raises, unless it is a reclaimed one's late return
            return
        now = self._now()
        self._ledger.release(entry.id, now)
        reason = self._return_reason(entry, now, broken=broken)
        reset_error: Exception | None = None
        if reason is None and self._reset is not None:
            try:
                await self._reset(conn)
            except Exception as exc:
                reason, reset_error = "reset_failed", exc
        # pop, not del: reclamation may have taken it out of _lent during the reset.
        self._lent.pop(key, None)
        if entry.tenant is not None:
            self._unlend_locked(entry, now)  # quota, use-time average
        if not self._settle_return_locked(entry, now, reason, reset_error):
            await self._destroy_entry(entry)

    @asynccontextmanager
    async def connection(
        self,
        timeout: float | None = None,
        *,
        tenant: str | None = None,
        priority: int | None = None,
    ) -> AsyncIterator[T]:
        """``async with pool.connection() as conn:`` borrow, and always return."""
        conn = await self.getconn(timeout, tenant=tenant, priority=priority)
        try:
            yield conn
        finally:
            await self.putconn(conn)

    # ------------------------------------------------------------------ eviction

    async def _discard(self, entry: Entry[T], reason: str) -> None:
        self._lent.pop(id(entry.conn), None)
        if not entry.gone:
            self._evict_locked(entry, reason)
        await self._destroy_entry(entry)

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
        """Open connections up to ``min_size`` now. Returns how many were opened.
        A create failure is raised (after its backoff is recorded)."""
        opened = 0
        while self._grow_step(maintenance=False) is None:
            await self._open_idle(reraise=True)
            opened += 1
        return opened

    def _grow_step(self, *, maintenance: bool) -> float | None:
        return self._grow_step_locked(maintenance=maintenance)

    async def _open_idle(self, *, reraise: bool) -> None:
        """Open a connection in the slot a grow step reserved and make it available."""
        made = await self._create(reraise=reraise)
        if made is None:
            return
        conn, start = made
        if not self._park_new_locked(conn, start):
            await self._destroy(conn)

    async def run_maintenance(self) -> float:
        """One maintenance pass (see :meth:`Pool.run_maintenance`); seconds to the next."""
        if self._closed:
            return self.config.maintenance_interval
        victims, to_check = self._sweep_idle_locked()
        for entry in victims:
            await self._destroy_entry(entry)
        for entry in to_check:
            if await self._validate(entry):
                await self._restore(entry)
        if self.config.leak_threshold is not None:
            self._ledger.check_leaks(self.config.leak_threshold)
        if self.config.reclaim_after is not None:
            await self._reclaim(self.config.reclaim_after)
        return await self._refill()

    async def _restore(self, entry: Entry[T]) -> None:
        """Put a validated idle entry back (or hand it to a waiter)."""
        if not self._restore_locked(entry):
            await self._destroy_entry(entry)

    async def _reclaim(self, after: float) -> None:
        leaked = {leak.conn for leak in self._ledger.leaks(after)}
        if not leaked:
            return
        for entry in self._reclaim_locked(leaked):
            await self._destroy_entry(entry)

    async def _refill(self) -> float:
        while (delay := self._grow_step(maintenance=True)) is None:
            await self._open_idle(reraise=False)
        return delay

    # ------------------------------------------------------------------ close

    async def drain(self) -> None:
        """Close idle connections now and lent ones when returned (reason ``pool_closed``)."""
        for entry in self._drain_locked():
            await self._destroy_entry(entry)

    async def close(self, timeout: float = 0.0) -> None:
        """Close: waiters get PoolClosed, idle connections close now, lent ones are awaited up
        to ``timeout`` seconds, then recorded as evicted and closed when returned."""
        if self._closed:
            return
        victims = self._close_locked()  # every live waiter raises PoolClosed (invariant 6)
        if self._stop is not None:
            self._stop.set()
        for entry in victims:
            await self._destroy_entry(entry)
        if timeout > 0 and self._lent:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while self._lent and loop.time() < deadline:
                await asyncio.sleep(min(0.01, timeout))  # polling real state with a deadline
        self._evict_lent_locked()
        if self._task is not None:
            await self._task


def _granted(waiter: _AsyncWaiter[Any]) -> bool:
    # A call, not an attribute test, so the type checker does not carry an earlier narrowing
    # of ``waiter.grant`` past _offer_slots_locked(), which may set it.
    return waiter.grant
