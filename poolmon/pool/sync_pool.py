"""Pool: a thread-safe pool of anything, speaking the poolmon standard natively.

Algorithm
---------
One mutex (``_lock``) guards four structures:

* ``_idle``: a deque of idle entries; borrowers pop the right end (LIFO, the warmest connection,
  so surplus ones idle out) or the left end (FIFO); returns append on the right.
* ``_waiters``: a deque of queued callers, oldest first. Each waiter owns a private lock that
  starts held; the waiter blocks acquiring it and ``_signal`` releases it (once per sleep).
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
2. ``len(_lent) + len(_idle) <= _size <= max_size``: a slot is reserved before a create and
   released by every eviction or failed create.
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
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from poolmon.core.clock import Clock
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolClosed, PoolError, PoolmonError
from poolmon.pool._base import BasePool, Entry
from poolmon.pool.config import PoolConfig
from poolmon.pool.factory import Factory, hook
from poolmon.pool.maintainer import start_thread

__all__ = ["Pool"]

T = TypeVar("T")


class _Request:
    """One caller's borrow in progress: when it started, its deadline, whether it is queued."""

    __slots__ = ("deadline", "pending", "t0", "timeout")

    def __init__(self, t0: float, deadline: float, timeout: float) -> None:
        self.t0 = t0  # on the pool clock (wait-time metric)
        self.deadline = deadline  # on time.monotonic (real blocking)
        self.timeout = timeout
        self.pending = False  # a wait event is recorded and not yet resolved


class _Waiter(Generic[T]):
    """A queued caller. Whoever serves it sets exactly one of ``entry``/``grant``/``closed``
    and removes it from the queue in the same critical section; a bare signal (normal mode)
    only says "a connection is idle: look", and the waiter stays queued."""

    __slots__ = ("closed", "entry", "grant", "lock", "retracts", "signalled", "t0")

    def __init__(self, t0: float) -> None:
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


#: Wake-ups bargers may take back per sleep of the head (see Pool._unwake_head_locked).
_RETRACTS = 8


def _signal(waiter: _Waiter[Any]) -> None:
    """Wake ``waiter`` (pool lock held). Idempotent until the waiter consumes the wake-up."""
    if not waiter.signalled:
        waiter.signalled = True
        waiter.lock.release()


class Pool(BasePool[T]):
    """A pool of resources made by ``factory``. Thread-safe.

    >>> pool = Pool(factory(lambda: object()), max_size=2, maintain=False)
    >>> with pool.connection() as conn:
    ...     pass
    >>> pool.close()
    """

    def __init__(
        self,
        factory: Factory[T],
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
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._idle: deque[Entry[T]] = deque()
        self._pop = self._idle.pop if self.config.order == "lifo" else self._idle.popleft
        self._waiters: deque[_Waiter[T]] = deque()
        self._lent: dict[int, Entry[T]] = {}
        self._size = 0
        self._closed = False
        self._drained = threading.Event()  # set once closed and nothing is lent any more
        self._stop = threading.Event()
        # Hooks the factory leaves as no-ops are skipped: a call saved on every return, and a
        # factory without a health check is never "validated" (no validate events).
        self._reset = hook(factory, "reset") if self.config.reset_on_return else None
        self._is_broken = hook(factory, "is_broken")
        if hook(factory, "validate") is None:
            self._validate_after = self._background_validation = None
        if self.config.eager:
            self.fill()
        if self.config.maintain:
            start_thread(self, self._stop, self.config.maintenance_interval)

    # ------------------------------------------------------------------ reading

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        """Open connections plus creations in flight."""
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # ------------------------------------------------------------------ borrow

    def getconn(self, timeout: float | None = None) -> T:
        """Borrow a resource; wait up to ``timeout`` seconds (default ``config.timeout``).

        Raises PoolTimeout, PoolExhausted (fail-fast, max_waiting) or PoolClosed, each carrying
        a snapshot of the pool.
        """
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
                    if now < entry.expires and (
                        self._validate_after is None or now - entry.checked < self._validate_after
                    ):
                        self._lent[id(entry.conn)] = entry
                        self._ledger.borrow(entry.id, None, False, now)
                        return entry.conn
                    self._lent[id(entry.conn)] = entry  # being checked: close() must see it
        finally:
            self._release()
        return self._getconn_slow(timeout, entry)

    def _getconn_slow(self, timeout: float | None, entry: Entry[T] | None) -> T:
        if timeout is None:
            timeout = self.config.timeout
        req = _Request(self._now(), time.monotonic() + timeout, timeout)
        try:
            while True:
                if entry is not None:
                    conn = self._check_out(entry, req)
                    if conn is not None:
                        return conn
                entry, lent = self._next_entry(req)
                if lent:
                    return entry.conn
        except _Refusal as refusal:
            raise self._exhausted_error(str(refusal)) from None
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

    def _next_entry(self, req: _Request) -> tuple[Entry[T], bool]:
        """An idle entry still to check (False), or one already lent to this caller (True):
        handed over by a return, or freshly opened in a slot."""
        while True:
            waiter: _Waiter[T] | None = None
            self._acquire()
            try:
                if self._closed:
                    raise PoolClosed("the pool is closed", None)
                if self._idle and not self._starving_locked():
                    entry = self._pop()
                    if self._waiters and not self._idle:
                        self._unwake_head_locked()
                    self._lent[id(entry.conn)] = entry
                    return entry, False
                if self._size < self.config.max_size and self._backoff.ready(self._now()):
                    self._size += 1  # reserve the slot; the connection is opened unlocked
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
            if self.config.fail_fast:
                raise _Refusal("no connection available and fail_fast is set")
            limit = self.config.max_waiting
            if limit is not None and len(self._waiters) >= limit:
                raise _Refusal(f"max_waiting={limit} callers already waiting")
        waiter: _Waiter[T] = _Waiter(req.t0)
        self._waiters.append(waiter)
        if not req.pending:
            self._ledger.wait()
            req.pending = True
        return waiter

    def _starving_locked(self) -> bool:
        """The oldest waiter has waited ``handoff_after`` or more: no barging (lock held)."""
        waiters = self._waiters
        return bool(waiters) and self._now() - waiters[0].t0 >= self._handoff_after

    def _wait(self, waiter: _Waiter[T], req: _Request) -> tuple[Entry[T] | None, bool]:
        """Block until handed a connection ``(entry, True)``: already lent and recorded; at the
        head with a connection idle ``(entry, False)``: taken, still to check; granted a slot
        ``(None, False)``. Raises _Resolved(PoolTimeout) at the deadline, PoolClosed on close.
        Wakes that find nothing (barged) sleep again at the same place in the queue."""
        while True:
            remaining = req.deadline - time.monotonic()
            step = remaining
            backoff_left = self._backoff.ready_at - self._now()
            if 0 < backoff_left < step:
                step = backoff_left  # a slot may be free once the window ends: look again
            acquired = waiter.lock.acquire(timeout=step) if remaining > 0 else False
            self._acquire()
            try:
                if acquired:
                    waiter.retracts = 0
                    # Wake-up consumed: the next _signal releases the lock again. Everything
                    # below is re-read under the pool lock, so a signal that came between the
                    # acquire and here (and saw signalled=True) is not lost.
                    waiter.signalled = False
                if waiter.closed:
                    req.pending = False  # close() recorded the error for us
                    raise PoolClosed("the pool was closed while waiting", None)
                if waiter.entry is not None or waiter.grant:  # checked first (invariant 4)
                    return waiter.entry, waiter.entry is not None
                waiters = self._waiters
                if self._idle and waiters[0] is waiter:
                    # Normal mode: the head takes an idle connection (nobody barged first).
                    waiters.popleft()
                    entry = self._pop()
                    self._lent[id(entry.conn)] = entry
                    self._wake_head_locked()  # more idle: the next waiter's turn
                    return entry, False
                if time.monotonic() < req.deadline:
                    self._offer_slots_locked()  # a backoff window may have ended: oldest first
                    if _granted(waiter):
                        return None, False
                    continue  # barged, or a spurious wake: sleep again, keeping its place
                waiters.remove(waiter)
                self._wake_head_locked()  # it may have been the signalled head (invariant 3)
            finally:
                self._release()
            error = self._timeout_error(req.t0, req.timeout)
            self._ledger.timeout(req.t0, error)
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
                self._lent.pop(id(entry.conn), None)
                if not entry.gone:
                    if self._closed:
                        self._evict_locked(entry, "pool_closed")
                    else:
                        self._give_locked(entry, self._now())
            elif waiter.grant:
                waiter.grant = False
                self._size -= 1
                self._offer_slots_locked()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._wake_head_locked()
        finally:
            self._release()

    def _open(self, req: _Request) -> Entry[T] | None:
        """Open a connection in a reserved slot and lend it. None if the create failed."""
        start = self._now()
        try:
            conn = self._factory.create()
        except Exception as exc:
            self._create_failed(start, exc)
            return None
        except BaseException:
            self._free_slot()
            raise
        self._acquire()
        try:
            if self._closed:
                self._size -= 1
                entry = None
            else:
                self._backoff.success()
                now = self._now()
                entry = Entry(self._ledger.create(start), conn, now, self._expiry(now))
                self._lent[id(conn)] = entry
                self._ledger.borrow(entry.id, req.t0, req.pending)
                req.pending = False
        finally:
            self._release()
        if entry is None:
            self._destroy(conn)
            raise PoolClosed("the pool is closed", None)
        return entry

    def _create_failed(self, start: float, exc: Exception) -> None:
        self._acquire()
        try:
            self._size -= 1
            if not self._closed:
                self._ledger.create_failed(start, exc)
            now = self._now()
            delay = self._backoff.failure(now, exc)
            self._log_create_failure(now, delay)
        finally:
            self._release()

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
                self._ledger.borrow(entry.id, req.t0 if req.pending else None, req.pending)
                req.pending = False
        finally:
            self._release()
        if gone:
            self._destroy_entry(entry)
            raise PoolClosed("the pool is closed", None)
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
            if entry.gone:
                return True  # the caller sees gone and handles it
            self._ledger.validate(entry.id, start, ok)
            if ok:
                entry.checked = self._now()
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
            if self._reclaimed and self._forget_reclaimed(conn):
                return
            raise PoolError(f"{type(conn).__name__} object was not lent by pool {self.name!r}")
        now = self._now()
        self._ledger.release(entry.id, now)  # before the lock: see the module docstring
        # The common case (nothing to check) without a call: one attribute test per rule.
        if (
            broken
            or entry.doomed is not None
            or self._is_broken is not None
            or now >= entry.expires
        ):
            reason = self._return_reason(entry, now, broken)
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
            if reason is None and not entry.gone and not self._closed:
                entry.last_used = entry.checked = now
                if not self._waiters:
                    self._idle.append(entry)
                    return
                self._give_locked(entry, now)
                return
            if entry.gone:
                self._reclaimed.pop(key, None)  # reclaimed meanwhile: this was its late return
            else:
                if reset_error is not None:
                    self._ledger.error("reset_failed", "reset", reset_error, conn=entry.id)
                self._evict_locked(entry, reason or "pool_closed")
            if self._closed and not self._lent:
                self._drained.set()
        finally:
            self._release()
        self._destroy_entry(entry)

    def _return_reason(self, entry: Entry[T], now: float, broken: bool) -> str | None:
        """Why a returned entry must be evicted instead of reused (None: reuse it)."""
        if broken:
            return "broken"
        if entry.doomed is not None:
            return entry.doomed
        if self._is_broken is not None:
            try:
                if self._is_broken(entry.conn):
                    return "broken"
            except Exception:
                return "broken"
        if now >= entry.expires:
            return "max_lifetime"
        return None

    def mark_broken(self, conn: T) -> None:
        """Flag a lent ``conn`` so its return evicts it (reason ``broken``), never lends it."""
        entry = self._lent.get(id(conn))
        if entry is not None and entry.conn is conn:
            entry.doomed = "broken"

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[T]:
        """``with pool.connection() as conn:`` borrow, and always return (even on error)."""
        conn = self.getconn(timeout)
        try:
            yield conn
        finally:
            self.putconn(conn)

    # ------------------------------------------------------------------ eviction

    def _give_locked(self, entry: Entry[T], now: float) -> None:
        """Make a usable entry (in neither ``_idle`` nor ``_lent``) available (lock held).

        Starvation mode (the head has waited >= handoff_after): hand it straight to the head,
        recording the borrow now, so nobody can barge. Normal mode: park it in ``_idle`` and
        signal the head, which keeps its place whether or not someone barges first.
        """
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
            _signal(head)
            self._wake_head_locked()  # idle ones left from normal mode: the new head's turn
            return
        self._idle.append(entry)
        _signal(head)

    def _wake_head_locked(self) -> None:
        """Keep invariant 3: an idle connection and a waiter -> the head is signalled."""
        if self._idle and self._waiters:
            _signal(self._waiters[0])

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
        head = self._waiters[0]
        if head.signalled and head.retracts < _RETRACTS and head.lock.acquire(False):
            head.signalled = False
            head.retracts += 1

    def _evict_locked(self, entry: Entry[T], reason: str) -> None:
        """Record the eviction and free its slot (caller holds _lock and destroys later)."""
        entry.gone = True
        self._ledger.evict(entry.id, reason)
        self._size -= 1
        if self._waiters:
            self._offer_slots_locked()

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

    def _offer_slots_locked(self) -> None:
        """Grant free slots to the oldest waiters (each opens its own connection)."""
        while (
            self._waiters
            and self._size < self.config.max_size
            and not self._closed
            and self._backoff.ready(self._now())
        ):
            waiter = self._waiters.popleft()
            self._size += 1
            waiter.grant = True
            _signal(waiter)
            self._wake_head_locked()

    def _free_slot(self) -> None:
        self._acquire()
        try:
            self._size -= 1
            self._offer_slots_locked()
        finally:
            self._release()

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
        """Open connections up to ``min_size`` now (used by ``eager=True``). Returns how many."""
        opened = 0
        while True:
            self._acquire()
            try:
                if self._closed or self._size >= self.config.min_size:
                    return opened
                self._size += 1
            finally:
                self._release()
            start = self._now()
            try:
                conn = self._factory.create()
            except Exception as exc:
                self._create_failed(start, exc)
                raise
            self._park_new(conn, start)
            opened += 1

    def _park_new(self, conn: T, start: float) -> None:
        """Record a connection opened in a reserved slot and make it available."""
        self._acquire()
        try:
            if self._closed:
                self._size -= 1
                closed = True
            else:
                closed = False
                self._backoff.success()
                now = self._now()
                entry = Entry(self._ledger.create(start), conn, now, self._expiry(now))
                self._give_locked(entry, now)
        finally:
            self._release()
        if closed:
            self._destroy(conn)

    def run_maintenance(self) -> float:
        """One maintenance pass; returns seconds until the next one is due.

        Evicts idle connections past their lifetime, or idle too long while above ``min_size``;
        validates long-idle ones; reports and optionally reclaims leaks; grants slots to waiters
        once a backoff window ended; refills ``min_size`` (warm-up spread by jitter).
        """
        if self._closed:
            return self.config.maintenance_interval
        victims, to_check = self._sweep_idle()
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

    def _sweep_idle(self) -> tuple[list[Entry[T]], list[Entry[T]]]:
        cfg = self.config
        victims: list[Entry[T]] = []
        to_check: list[Entry[T]] = []
        self._acquire()
        try:
            now = self._now()
            surplus = self._size - cfg.min_size
            keep: list[Entry[T]] = []
            # The left end holds the least recently returned entries, in both orders.
            for entry in self._idle:
                if now >= entry.expires:
                    self._evict_locked(entry, "max_lifetime")
                    victims.append(entry)
                    surplus -= 1
                elif surplus > 0 and self._idle_expired(entry, now):
                    self._evict_locked(entry, "idle_timeout")
                    victims.append(entry)
                    surplus -= 1
                elif (
                    self._background_validation is not None
                    and now - entry.checked >= self._background_validation
                ):
                    self._lent[id(entry.conn)] = entry  # being checked: close() must see it
                    to_check.append(entry)
                else:
                    keep.append(entry)
            self._idle.clear()
            self._idle.extend(keep)
        finally:
            self._release()
        return victims, to_check

    def _restore(self, entry: Entry[T]) -> None:
        """Put a validated idle entry back (or hand it to a waiter)."""
        self._acquire()
        try:
            del self._lent[id(entry.conn)]
            gone = entry.gone
            if not gone:
                self._give_locked(entry, self._now())
        finally:
            self._release()
        if gone:
            self._destroy_entry(entry)

    def _reclaim(self, after: float) -> None:
        leaked = {leak.conn for leak in self._ledger.leaks(after)}
        if not leaked:
            return
        self._acquire()
        try:
            victims = [e for e in self._lent.values() if e.id in leaked and not e.gone]
            for entry in victims:
                # Out of _lent now (a holder that never returns keeps nothing busy); its late
                # putconn finds it in _reclaimed and is absorbed, with no second evict.
                del self._lent[id(entry.conn)]
                self._remember_reclaimed(entry.conn)
                self._evict_locked(entry, "leaked")
        finally:
            self._release()
        for entry in victims:
            self._destroy_entry(entry)

    def _refill(self) -> float:
        interval = self.config.maintenance_interval
        while True:
            self._acquire()
            try:
                now = self._now()
                if self._closed:
                    return interval
                self._offer_slots_locked()
                if self._size >= self.config.min_size:
                    return interval
                if not self._backoff.ready(now):
                    return min(interval, self._backoff.ready_at - now)
                if self._warmup:
                    if self._warmup[0] > now:
                        return min(interval, self._warmup[0] - now)
                    self._warmup.pop(0)
                self._size += 1
            finally:
                self._release()
            start = self._now()
            try:
                conn = self._factory.create()
            except Exception as exc:
                self._create_failed(start, exc)
                continue
            self._park_new(conn, start)

    # ------------------------------------------------------------------ close

    def drain(self) -> None:
        """Replace every connection: idle ones are closed now, lent ones when returned
        (reason ``pool_closed``). The pool stays open and opens fresh connections on demand."""
        self._acquire()
        try:
            victims = list(self._idle)
            self._idle.clear()
            for entry in victims:
                self._evict_locked(entry, "pool_closed")
            for entry in self._lent.values():
                entry.doomed = "pool_closed"
        finally:
            self._release()
        for entry in victims:
            self._destroy_entry(entry)

    def close(self, timeout: float = 0.0) -> None:
        """Close the pool: waiters get PoolClosed, idle connections close now; lent ones are
        awaited up to ``timeout`` seconds, then recorded as evicted and closed on return."""
        self._acquire()
        try:
            if self._closed:
                return
            self._closed = True
            waiters = list(self._waiters)
            self._waiters.clear()
            for waiter in waiters:
                # Resolved here, in order, so the stream has no event after the close event.
                self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
                waiter.closed = True
                _signal(waiter)
            victims = list(self._idle)
            self._idle.clear()
            for entry in victims:
                self._evict_locked(entry, "pool_closed")
            if not self._lent:
                self._drained.set()
        finally:
            self._release()
        self._stop.set()
        for entry in victims:
            self._destroy_entry(entry)
        if timeout > 0:
            self._drained.wait(timeout)
        self._acquire()
        try:
            for entry in self._lent.values():
                if not entry.gone:
                    self._evict_locked(entry, "pool_closed")
            self._ledger.close()
        finally:
            self._release()

    def __enter__(self) -> Pool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Refusal(PoolmonError):
    """Internal: fail-fast or admission control refused; becomes PoolExhausted."""


class _Resolved(PoolmonError):
    """Internal: carries an error whose wait was already resolved in the ledger."""

    def __init__(self, error: PoolError) -> None:
        super().__init__(str(error))
        self.error = error


def _granted(waiter: _Waiter[Any]) -> bool:
    # A call, not an attribute test, so the type checker does not carry an earlier narrowing
    # of ``waiter.grant`` past _offer_slots_locked(), which may set it.
    return waiter.grant
