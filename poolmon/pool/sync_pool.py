"""Pool: a thread-safe pool of anything, speaking the poolmon standard natively.

Algorithm
---------
One mutex (``_lock``) guards four structures:

* ``_idle``: a deque of idle entries; borrowers pop the right end (LIFO, the warmest connection,
  so surplus ones idle out) or the left end (FIFO); returns append on the right.
* ``_waiters``: a deque of queued callers, oldest first. Each waiter owns a private lock that
  starts held; the waiter blocks acquiring it and ``wake()`` releases it (once per sleep).
* ``_lent``: ``id(resource) -> entry`` for every entry outside ``_idle`` (lent, being validated).
* ``_size``: open connections plus creations in flight. ``_size <= max_size`` always.

Bounded barging (``handoff_after``, as Go's ``sync.Mutex`` "starvation mode"):

* Normal mode. A return parks its connection in ``_idle`` and signals the oldest waiter, which
  stays at the head of the queue. A caller that arrives before the woken waiter runs (typically
  the returning thread borrowing again) may take the connection first: no thread switch per
  cycle, which is what makes barging pools fast under the GIL. A woken waiter that finds
  ``_idle`` empty goes back to sleep *at the head* (it keeps its place).
* Starvation mode: while the oldest waiter has waited ``handoff_after`` seconds or more (pool
  clock), returns hand connections *directly* to it (recorded as its borrow before the lock is
  released), and newcomers may not take idle connections: they queue behind. It ends by itself
  when the queue empties or the head has waited less than the bound. A barger that empties
  ``_idle`` takes back the head's pending wake-up (a bounded number of times per sleep), so a
  head that would only find nothing does not compete for the GIL. ``handoff_after=0`` is
  always starvation mode: strict FIFO hand-off, the fairest and slowest under contention.
* Among themselves, waiters are always served in arrival order: only the head takes an idle
  connection or receives a hand-off, and a freed slot is granted to the head.

Invariants (each kept under ``_lock``; the comments at the code say which step keeps which):

1. No connection is lent twice: an entry is in exactly one of ``_idle``, ``_lent``, a waiter's
   ``entry`` (also in ``_lent``) or nowhere (gone).
2. ``len(_lent) + len(_idle) <= _size <= ceiling`` (``max_size``, or ``burst_max`` with
   burst capacity): a slot is reserved before a create and released by every eviction or
   failed create; above ``max_size`` only while waits are measured (``_can_open_locked``).
3. If ``_idle`` and ``_waiters`` are both non-empty, the head waiter is signalled (``_wake_head``
   after every step that parks a connection or removes the head), so an idle connection never
   sits unseen while someone waits.
4. A woken waiter never loses a connection handed to it: the hand-off sets ``waiter.entry`` and
   removes the waiter from the queue in one critical section; the waiter checks ``entry`` first,
   before any timeout, and an interrupted waiter gives a received connection back.
5. Timeouts and interruptions lose no slot: a leaving waiter removes itself (and signals the new
   head), a granted slot is released if it is not used.
6. ``close()`` marks every waiter ``closed`` and signals it: each raises PoolClosed.

Events: every ledger call that names a connection is made under ``_lock`` after checking that
the entry is not ``gone``, so the recorded stream follows the real order of state changes (a
borrow can never be recorded after the connection's eviction). The one exception is ``release``
on return, made before the lock: the entry is still in ``_lent`` then (nobody can lend it), and
the ledger ignores a release of a connection already evicted by ``close()`` or reclamation.

Trade-off: strict hand-off costs a thread switch per queued borrow, where barging lets the
returning thread take its connection straight back; unbounded barging (``queue.LifoQueue``,
redis-py, urllib3) cycles faster while starving threads (DESIGN.md section 4). The bound trades
at most ``handoff_after`` extra wait per caller (plus scheduling) for barging throughput.
Blocking waits use real time (``time.monotonic``); every rule, including ``handoff_after``,
uses the injected clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from poolmon.errors import PoolClosed, PoolError, PoolmonError
from poolmon.pool._base import BasePool, Entry
from poolmon.pool.factory import Factory
from poolmon.pool.maintainer import start_thread

__all__ = ["Pool"]

T = TypeVar("T")


class _Request:
    """One caller's borrow in progress: when it started, its deadline, whether it is queued."""

    __slots__ = ("deadline", "key", "pending", "prio", "t0", "timeout")

    def __init__(
        self, t0: float, deadline: float, timeout: float, key: str = "", prio: int = 0
    ) -> None:
        self.t0 = t0  # on the pool clock (wait-time metric)
        self.key = key  # its tenant (pools with tenants; "" the default one)
        self.prio = prio  # its priority class
        self.deadline = deadline  # on time.monotonic (real blocking)
        self.timeout = timeout
        self.pending = False  # a wait event is recorded and not yet resolved


class _Waiter(Generic[T]):
    """A queued caller. Whoever serves it sets exactly one of ``entry``/``grant``/``closed``
    and removes it from the queue in the same critical section; a bare signal (normal mode)
    only says "a connection is idle: look", and the waiter stays queued."""

    __slots__ = (
        "closed",
        "entry",
        "grant",
        "lock",
        "prio",
        "retracts",
        "signalled",
        "t0",
        "tenant",
    )

    def __init__(self, t0: float, tenant: str = "", prio: int = 0) -> None:
        self.tenant = tenant
        self.prio = prio
        self.lock = threading.Lock()
        self.lock.acquire()  # held until signalled: the waiter blocks on a second acquire
        self.t0 = t0  # when the borrow started (pool clock): handoff_after counts from here
        self.entry: Entry[T] | None = None
        self.grant = False  # a slot was reserved for it: it opens a connection itself
        self.closed = False
        # Mirrors the lock (True: released, a wake-up pending). Read and written under the
        # pool lock only, so a second signal never releases an unheld lock.
        self.signalled = False
        self.retracts = 0  # wake-ups taken back by bargers during the current sleep

    #: Thread waiters are never cancelled while queued (an interrupted one removes itself).
    dead = False

    def wake(self) -> None:
        """Wake it (pool lock held). Idempotent until the waiter consumes the wake-up."""
        if not self.signalled:
            self.signalled = True
            self.lock.release()


#: Wake-ups bargers may take back per sleep of the head (see Pool._unwake_head_locked).
_RETRACTS = 8


class Pool(BasePool[T, _Waiter[T], Factory[T]]):
    """A pool of resources made by ``factory``. Thread-safe.

    >>> pool = Pool(factory(lambda: object()), max_size=2, maintain=False)
    >>> with pool.connection() as conn:
    ...     pass
    >>> pool.close()
    """

    def _optional_points(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        # Read at snapshot time, and snapshots are also taken under this pool's lock (an
        # error's snapshot): never wait for the lock here (it is not reentrant). Without it
        # the read may meet a concurrent change: a dict resized mid-iteration is retried.
        if self._lock.acquire(blocking=False):
            try:
                return self._optional_points_locked()
            finally:
                self._lock.release()
        for _ in range(3):
            try:
                return self._optional_points_locked()
            except RuntimeError:
                continue
        return {}

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._drained = threading.Event()  # set once closed and nothing is lent any more
        self._stop = threading.Event()
        if self.config.eager:
            self.fill()
        if self.config.maintain:
            start_thread(self, self._stop, self.config.maintenance_interval)

    # ------------------------------------------------------------------ borrow

    def getconn(
        self,
        timeout: float | None = None,
        *,
        tenant: str | None = None,
        priority: int | None = None,
    ) -> T:
        """Borrow a resource; wait up to ``timeout`` seconds (default ``config.timeout``).

        ``tenant`` names who borrows (quotas with ``tenants``/``tenant_limit``), ``priority``
        its class (0, the most urgent, to ``priorities - 1``; ConfigError for another).
        Raises PoolTimeout, PoolExhausted (fail-fast, max_waiting), PoolQuotaExceeded (a
        tenant at its quota) or PoolClosed, each carrying a snapshot of the pool.
        """
        if not self._plain or tenant is not None or priority is not None:
            return self._getconn_shared(timeout, tenant, priority)
        # Fast path: an idle connection that needs no check. Everything else is _getconn_slow.
        entry: Entry[T] | None = None
        self._acquire()
        try:
            if self._idle:
                now = self._now()
                waiters = self._waiters
                # Barging is allowed unless the oldest waiter is starving (see the module doc).
                if not waiters or now - waiters[0].t0 < self._handoff_after:
                    entry = self._pop()
                    if waiters and not self._idle:
                        self._unwake_head_locked()
                    # In _lent whether lent now or being checked (invariant 1).
                    if now < entry.expires and (
                        self._validate_after is None or now - entry.checked < self._validate_after
                    ):
                        self._lent[id(entry.conn)] = entry
                        self._ledger.borrow(entry.id, now=now)
                        return entry.conn
                    self._lent[id(entry.conn)] = entry  # being checked: close() must see it
        finally:
            self._release()
        return self._getconn_slow(timeout, entry, tenant, priority)

    def _getconn_shared(self, timeout: float | None, tenant: str | None, priority: int | None) -> T:
        """The fast path of a pool with tenants or priorities: an idle connection, nobody
        waiting (so no rank or barging question), the tenant within its quota."""
        shares = self._shares
        key, prio = shares.check(tenant, priority)
        ledger = self._ledger
        entry: Entry[T] | None = None
        self._acquire()
        try:
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
        finally:
            self._release()
        return self._getconn_slow(timeout, entry, tenant, priority)

    def _getconn_slow(
        self,
        timeout: float | None,
        entry: Entry[T] | None,
        tenant: str | None = None,
        priority: int | None = None,
    ) -> T:
        timeout, key, prio = self._borrow_args(timeout, tenant, priority)
        req = _Request(self._now(), time.monotonic() + timeout, timeout, key, prio)
        try:
            while True:
                if entry is not None:
                    try:
                        conn = self._check_out(entry, req)
                    except BaseException:
                        self._put_back(entry)  # interrupted while checking: inv. 5
                        raise
                    if conn is not None:
                        return conn
                entry, lent = self._next_entry(req)
                if lent:
                    return entry.conn
        except _Refusal as refusal:
            raise self._refused_error(refusal.refusal, req.key, req.prio) from None
        except _Resolved as resolved:
            raise resolved.error from resolved.error.__cause__
        except PoolClosed:
            if req.pending:
                self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
            raise self._closed_error() from None
        except BaseException:
            if req.pending:  # e.g. KeyboardInterrupt while queued: resolve the wait
                self._ledger.error("cancelled", "wait", "the waiting caller was interrupted")
            raise

    def _put_back(self, entry: Entry[T]) -> None:
        with self._lock:
            kept = self._put_back_locked(entry)
        if not kept:
            self._destroy_entry(entry)

    def _next_entry(self, req: _Request) -> tuple[Entry[T], bool]:
        """An idle entry still to check (False), or one already lent to this caller (True):
        handed over by a return, or freshly opened in a slot."""
        while True:
            waiter: _Waiter[T] | None = None
            self._acquire()
            try:
                if self._closed:
                    raise PoolClosed("the pool is closed", None)
                if self._idle and self._may_take_locked(req.key, req.prio):
                    entry = self._take_idle_locked()
                    if self._waiters and not self._idle:
                        self._unwake_head_locked()
                    return entry, False
                if self._may_open_locked(req.key):
                    self._reserve_locked(req.key)  # inv. 2; the connection opens unlocked
                else:
                    # Idle connections with a starving head are left to it (invariant 3: it
                    # has been signalled); this caller queues behind.
                    waiter = self._enqueue_locked(req)
            finally:
                self._release()
            if waiter is not None:
                try:
                    served, lent = self._wait(waiter, req)
                except (_Resolved, PoolClosed):
                    raise  # the waiter already left the queue
                except BaseException:
                    self._abandon(waiter, req)  # e.g. KeyboardInterrupt: lose no slot (inv. 5)
                    raise
                if served is not None:
                    if lent:
                        req.pending = False
                    return served, lent
            fresh = self._open(req)
            if fresh is not None:
                return fresh, True

    def _enqueue_locked(self, req: _Request) -> _Waiter[T]:
        if not req.pending:
            refusal = self._refusal_locked(req.key)
            if refusal is not None:
                raise _Refusal(refusal)
        waiter: _Waiter[T] = _Waiter(req.t0, req.key, req.prio)
        self._waiters.append(waiter)
        if not req.pending:
            self._record_wait_locked(req.key, req.prio)
            req.pending = True
        self._queued_locked()
        return waiter

    def _wait(self, waiter: _Waiter[T], req: _Request) -> tuple[Entry[T] | None, bool]:
        """Block until handed a connection ``(entry, True)``: already lent and recorded; at the
        head with a connection idle ``(entry, False)``: taken, still to check; granted a slot
        ``(None, False)``. Raises _Resolved(PoolTimeout) at the deadline, PoolClosed on close.
        Wakes that find nothing (barged) sleep again at the same place in the queue."""
        while True:
            remaining = req.deadline - time.monotonic()
            step = self._sleep_step(remaining)
            acquired = waiter.lock.acquire(timeout=step) if remaining > 0 else False
            self._acquire()
            try:
                if acquired:
                    waiter.retracts = 0
                    # Wake-up consumed: the next wake() releases the lock again. Everything
                    # below is re-read under the pool lock, so a signal that came between the
                    # acquire and here (and saw signalled=True) is not lost.
                    waiter.signalled = False
                if waiter.closed:
                    req.pending = False  # close() recorded the error for us
                    raise self._closed_error()
                served = self._served_locked(waiter)  # entry, grant first (invariant 4)
                if served is not None:
                    return served
                if time.monotonic() < req.deadline:
                    self._offer_slots_locked()  # a backoff window may have ended: oldest first
                    if _granted(waiter):
                        return None, False
                    continue  # barged, or a spurious wake: sleep again, keeping its place
                self._waiters.remove(waiter)
                self._wake_head_locked()  # it may have been the signalled head (invariant 3)
                error = self._timed_out_locked(waiter, req.timeout)
            finally:
                self._release()
            req.pending = False
            raise _Resolved(error)

    def _abandon(self, waiter: _Waiter[T], req: _Request) -> None:
        """An interrupted waiter leaves: give back whatever it was given (invariant 5)."""
        self._acquire()
        try:
            entry = waiter.entry
            if entry is not None:
                waiter.entry = None
                req.pending = False  # the hand-off's borrow resolved the wait
                self._ledger.release(entry.id)  # ... and this is its return
                self._put_back_locked(entry)
            elif waiter.grant:
                waiter.grant = False
                self._free_slot_locked(waiter.tenant)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._wake_head_locked()  # it may have been the signalled head (invariant 3)
        finally:
            self._release()

    def _create(self, key: str | None = None, *, reraise: bool = False) -> tuple[T, float] | None:
        """Call the factory in a reserved slot: ``(resource, start)``, or None when it failed
        (recorded, backed off; raised again with ``reraise``). Any other interruption, e.g.
        KeyboardInterrupt, frees the slot (invariant 5)."""
        start = self._now()
        try:
            return self._factory.create(), start
        except Exception as exc:
            self._create_failed(start, exc, key)
            if reraise:
                raise
            return None
        except BaseException:
            self._free_slot(key)
            raise

    def _open(self, req: _Request) -> Entry[T] | None:
        """Open a connection in a reserved slot and lend it. None if the create failed."""
        made = self._create(req.key)
        if made is None:
            return None
        conn, start = made
        self._acquire()
        try:
            entry = self._lend_new_locked(
                conn, start, req.t0, queued=req.pending, key=req.key, prio=req.prio
            )
            if entry is not None:
                req.pending = False
        finally:
            self._release()
        if entry is None:
            self._destroy(conn)
            raise self._closed_error()
        return entry

    def _free_slot(self, key: str | None) -> None:
        with self._lock:
            self._free_slot_locked(key)

    def _create_failed(self, start: float, exc: Exception, key: str | None) -> None:
        with self._lock:
            self._create_failed_locked(start, exc, key)

    def _check_out(self, entry: Entry[T], req: _Request) -> T | None:
        """Apply the borrow rules to an entry taken from idle; lend it or evict it (None)."""
        now = self._now()
        if now >= entry.expires:
            self._discard(entry, "max_lifetime")
            return None
        if self._needs_validation(entry, now) and not self._validate(entry):
            return None
        self._acquire()
        try:
            gone = entry.gone  # close() evicted it while we validated
            if not gone:
                t0 = req.t0 if req.pending else None
                self._record_borrow_locked(
                    entry, t0, queued=req.pending, now=None, key=req.key, prio=req.prio
                )
                req.pending = False
        finally:
            self._release()
        if gone:
            self._destroy_entry(entry)
            raise self._closed_error()
        return entry.conn

    def _validate(self, entry: Entry[T]) -> bool:
        """Run the factory's check (outside the lock); record it; evict on failure."""
        start = self._now()
        try:
            ok = bool(self._factory.validate(entry.conn))
        except Exception:
            ok = False
        self._acquire()
        try:
            if self._validated_locked(entry, start, ok=ok):
                return True
        finally:
            self._release()
        self._discard(entry, "failed_validation")
        return False

    # ------------------------------------------------------------------ return

    def putconn(self, conn: T, *, broken: bool = False) -> None:
        """Give ``conn`` back. ``broken=True`` evicts it (reason ``broken``) instead.

        Raises PoolError for a resource this pool did not lend (or a second return). The late
        return of a connection taken back by forced reclamation (``reclaim_after``) is absorbed
        silently: it was already evicted (reason ``leaked``) and closed. (For resources that
        cannot be weakly referenced only the last 256 reclaimed ones are remembered; an older
        one's return raises PoolError.)
        """
        key = id(conn)
        entry = self._lent.get(key)
        if entry is None or entry.conn is not conn:
            self._unknown_return(conn)  # raises, unless it is a reclaimed one's late return
            return
        now = self._now()
        self._ledger.release(entry.id, now)  # before the lock: see the module docstring
        # The common case (nothing to check) without a call: one attribute test per rule.
        if (
            broken
            or entry.doomed is not None
            or self._is_broken is not None
            or now >= entry.expires
        ):
            reason = self._return_reason(entry, now, broken=broken)
        else:
            reason = None
        reset_error: Exception | None = None
        if reason is None and self._reset is not None:
            try:
                self._reset(conn)
            except Exception as exc:
                reason, reset_error = "reset_failed", exc
        self._acquire()
        try:
            # pop, not del: reclamation may have taken it out of _lent since the lookup above.
            self._lent.pop(key, None)
            if entry.tenant is not None:
                self._unlend_locked(entry, now)  # quota, use-time average
            if (
                reason is None
                and not entry.gone
                and not self._closed
                and not self._waiters
                and not entry.burst
            ):
                entry.last_used = entry.checked = now  # the common case, inline
                self._idle.append(entry)
                return
            kept = self._settle_return_locked(entry, now, reason, reset_error)
            if self._closed and not self._lent:
                self._drained.set()
        finally:
            self._release()
        if not kept:
            self._destroy_entry(entry)

    @contextmanager
    def connection(
        self,
        timeout: float | None = None,
        *,
        tenant: str | None = None,
        priority: int | None = None,
    ) -> Iterator[T]:
        """``with pool.connection() as conn:`` borrow, and always return (even on error)."""
        conn = self.getconn(timeout, tenant=tenant, priority=priority)
        try:
            yield conn
        finally:
            self.putconn(conn)

    # ------------------------------------------------------------------ eviction

    def _unwake_head_locked(self) -> None:
        """A barger took the last idle connection (lock held, waiters queued): the head would
        wake to find nothing, so take back its wake-up if it has not consumed it yet. Its OS
        thread may still stir, but it never competes for the GIL or the pool lock; when this
        fails, the head is already on its way and will sleep again at its place.

        Safe for invariant 3 because ``_idle`` is empty now; safe for the others because a
        queued head only ever gets bare "look" signals (a hand-off, grant or close removes the
        waiter from the queue before signalling it).

        At most ``_RETRACTS`` times per sleep: each retraction means the next return signals
        again (a futex wake system call in the returner's path). When one thread cycles
        through its whole GIL slice, the head cannot run anyway and one consumed wake-up keeps
        every later return free of system calls; with I/O between cycles, retracting spares
        the head a GIL round trip per return. (Measured: benchmarks/pool.py, both holds.)
        """
        head = self._live_head_locked()
        if (
            head is not None
            and head.signalled
            and head.retracts < _RETRACTS
            and head.lock.acquire(blocking=False)
        ):
            head.signalled = False
            head.retracts += 1

    def _discard(self, entry: Entry[T], reason: str) -> None:
        """Evict an entry the caller holds privately (in ``_lent``, not lent out)."""
        self._acquire()
        try:
            self._lent.pop(id(entry.conn), None)
            if not entry.gone:
                self._evict_locked(entry, reason)
        finally:
            self._release()
        self._destroy_entry(entry)

    def _destroy_entry(self, entry: Entry[T]) -> None:
        if not entry.destroyed:
            entry.destroyed = True
            self._destroy(entry.conn)

    def _destroy(self, conn: T) -> None:
        try:
            self._factory.destroy(conn)
        except Exception as exc:
            self._log_destroy_failure(exc)

    # ------------------------------------------------------------------ maintenance

    def fill(self) -> int:
        """Open connections up to ``min_size`` now (used by ``eager=True``). Returns how many.
        A create failure is raised (after its backoff is recorded)."""
        opened = 0
        while self._grow_step(maintenance=False) is None:
            self._open_idle(reraise=True)
            opened += 1
        return opened

    def _grow_step(self, *, maintenance: bool) -> float | None:
        with self._lock:
            return self._grow_step_locked(maintenance=maintenance)

    def _open_idle(self, *, reraise: bool) -> None:
        """Open a connection in the slot a grow step reserved and make it available."""
        made = self._create(reraise=reraise)
        if made is None:
            return
        conn, start = made
        with self._lock:
            parked = self._park_new_locked(conn, start)
        if not parked:
            self._destroy(conn)

    def run_maintenance(self) -> float:
        """One maintenance pass; returns seconds until the next one is due.

        Evicts idle connections past their lifetime, or idle too long while above ``min_size``;
        validates long-idle ones; reports and optionally reclaims leaks; grants slots to waiters
        once a backoff window ended; refills ``min_size`` (warm-up spread by jitter).
        """
        if self._closed:
            return self.config.maintenance_interval
        self._acquire()
        try:
            victims, to_check = self._sweep_idle_locked()
        finally:
            self._release()
        for entry in victims:
            self._destroy_entry(entry)
        for entry in to_check:
            if self._validate(entry):
                self._restore(entry)
        if self.config.leak_threshold is not None:
            self._ledger.check_leaks(self.config.leak_threshold)
        if self.config.reclaim_after is not None:
            self._reclaim(self.config.reclaim_after)
        return self._refill()

    def _restore(self, entry: Entry[T]) -> None:
        """Put a validated idle entry back (or hand it to a waiter)."""
        with self._lock:
            kept = self._restore_locked(entry)
        if not kept:
            self._destroy_entry(entry)

    def _reclaim(self, after: float) -> None:
        leaked = {leak.conn for leak in self._ledger.leaks(after)}
        if not leaked:
            return
        with self._lock:
            victims = self._reclaim_locked(leaked)
        for entry in victims:
            self._destroy_entry(entry)

    def _refill(self) -> float:
        while (delay := self._grow_step(maintenance=True)) is None:
            self._open_idle(reraise=False)
        return delay

    # ------------------------------------------------------------------ close

    def drain(self) -> None:
        """Replace every connection: idle ones are closed now, lent ones when returned
        (reason ``pool_closed``). The pool stays open and opens fresh connections on demand."""
        with self._lock:
            victims = self._drain_locked()
        for entry in victims:
            self._destroy_entry(entry)

    def close(self, timeout: float = 0.0) -> None:
        """Close the pool: waiters get PoolClosed, idle connections close now; lent ones are
        awaited up to ``timeout`` seconds, then recorded as evicted and closed on return."""
        self._acquire()
        try:
            if self._closed:
                return
            victims = self._close_locked()  # every waiter raises PoolClosed (invariant 6)
            if not self._lent:
                self._drained.set()
        finally:
            self._release()
        self._stop.set()
        for entry in victims:
            self._destroy_entry(entry)
        if timeout > 0:
            self._drained.wait(timeout)
        with self._lock:
            self._evict_lent_locked()

    def __enter__(self) -> Pool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Refusal(PoolmonError):
    """Internal: fail-fast, admission control or a tenant quota refused (raised under the
    lock); becomes PoolExhausted or PoolQuotaExceeded outside it."""

    def __init__(self, refusal: tuple[str, str]) -> None:
        super().__init__(refusal[1])
        self.refusal = refusal


class _Resolved(PoolmonError):
    """Internal: carries an error whose wait was already resolved in the ledger."""

    def __init__(self, error: PoolError) -> None:
        super().__init__(str(error))
        self.error = error


def _granted(waiter: _Waiter[Any]) -> bool:
    # A call, not an attribute test, so the type checker does not carry an earlier narrowing
    # of ``waiter.grant`` past _offer_slots_locked(), which may set it.
    return waiter.grant
