"""Pool: a thread-safe pool of anything, speaking the poolmon standard natively.

Algorithm
---------
One mutex (``_lock``) guards four structures:

* ``_idle``: a deque of idle entries; borrowers pop the right end (LIFO, the warmest connection,
  so surplus ones idle out) or the left end (FIFO); returns append on the right.
* ``_waiters``: a deque of queued callers, oldest first. Each waiter owns a private lock that
  starts held; the waiter blocks acquiring it and whoever serves it releases it.
* ``_lent``: ``id(resource) -> entry`` for every entry outside ``_idle`` (lent, being validated).
* ``_size``: open connections plus creations in flight. ``_size <= max_size`` always.

Invariant: ``_idle`` and ``_waiters`` are never both non-empty. A return, with waiters queued,
hands its connection *directly* to the oldest waiter instead of parking it in ``_idle``; so no
newcomer can barge past a queued caller, and waiters are served strictly in arrival order. When
a slot frees up (an eviction) the oldest waiter is granted it and opens a connection itself.

Events: every ledger call that names a connection is made under ``_lock`` after checking that
the entry is not ``gone``, so the recorded stream follows the real order of state changes (a
borrow can never be recorded after the connection's eviction). The one exception is ``release``
on return, made before the lock: the entry is still in ``_lent`` then (nobody can lend it), and
the ledger ignores a release of a connection already evicted by ``close()`` or reclamation.

Caveats: fair hand-off costs a thread switch per queued borrow, where barging pools let the
returning thread take its connection straight back; under pure-CPU contention a barging pool
can cycle faster while starving most threads (DESIGN.md section 4). Blocking waits use real
time (``time.monotonic``); every lifecycle rule uses the injected clock.
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
    """A queued caller. Exactly one of ``entry``/``grant``/``closed`` is set by whoever wakes it."""

    __slots__ = ("closed", "entry", "grant", "lock", "t0")

    def __init__(self, t0: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # held until served: the waiter blocks on a second acquire
        self.t0 = t0
        self.entry: Entry[T] | None = None
        self.grant = False  # a slot was reserved for it: it opens a connection itself
        self.closed = False


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
        self._validate_after = self.config.validate_after
        # Hooks the factory leaves as no-ops are skipped: a call saved on every return.
        self._reset = hook(factory, "reset") if self.config.reset_on_return else None
        self._is_broken = hook(factory, "is_broken")
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
        self._acquire()
        try:
            if self._idle:
                entry = self._pop()
                now = self._now()
                if now < entry.expires and (
                    self._validate_after is None or now - entry.checked < self._validate_after
                ):
                    self._lent[id(entry.conn)] = entry
                    self._ledger.borrow(entry.id, None, False, now)
                    return entry.conn
                self._lent[id(entry.conn)] = entry  # being checked: close() must still see it
            else:
                entry = None
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
                if self._idle:
                    entry = self._pop()
                    self._lent[id(entry.conn)] = entry
                    return entry, False
                if self._size < self.config.max_size and self._backoff.ready(self._now()):
                    self._size += 1  # reserve the slot; the connection is opened unlocked
                else:
                    waiter = self._enqueue_locked(req)
            finally:
                self._release()
            if waiter is not None:
                served = self._wait(waiter, req)
                if served is not None:
                    req.pending = False
                    return served, True
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

    def _wait(self, waiter: _Waiter[T], req: _Request) -> Entry[T] | None:
        """Block until served (the entry, already lent), granted a slot (None, ``grant`` set),
        a backoff window ends (None: retry), or the deadline (raises PoolTimeout)."""
        while True:
            remaining = req.deadline - time.monotonic()
            step = remaining
            backoff_left = self._backoff.ready_at - self._now()
            if 0 < backoff_left < step:
                step = backoff_left  # a slot may be free once the window ends: look again
            if remaining > 0:
                waiter.lock.acquire(timeout=step)
            self._acquire()
            try:
                if waiter.closed:
                    req.pending = False  # close() recorded the error for us
                    raise PoolClosed("the pool was closed while waiting", None)
                if waiter.entry is not None or waiter.grant:
                    return waiter.entry
                if time.monotonic() < req.deadline:
                    self._offer_slots_locked()  # a backoff window may have ended: oldest first
                    if _granted(waiter):
                        return None
                    continue
                self._waiters.remove(waiter)
            finally:
                self._release()
            error = self._timeout_error(req.t0, req.timeout)
            self._ledger.timeout(req.t0, error)
            req.pending = False
            raise _Resolved(error)

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
        """Give ``conn`` back. ``broken=True`` evicts it (reason ``broken``) instead."""
        key = id(conn)
        entry = self._lent.get(key)
        if entry is None or entry.conn is not conn:
            raise PoolError(f"{type(conn).__name__} object was not lent by pool {self.name!r}")
        now = self._now()
        self._ledger.release(entry.id, now)  # before the lock: see the module docstring
        reason = self._return_reason(entry, now, broken)
        reset_error: Exception | None = None
        if reason is None and self._reset is not None:
            try:
                self._reset(conn)
            except Exception as exc:
                reason, reset_error = "reset_failed", exc
        self._acquire()
        try:
            del self._lent[key]
            if reason is None and not entry.gone and not self._closed:
                entry.last_used = entry.checked = now
                if not self._waiters:
                    self._idle.append(entry)
                    return
                # Hand-off: straight to the oldest waiter, never via _idle (no barging).
                waiter = self._waiters.popleft()
                self._lent[key] = entry
                self._ledger.borrow(entry.id, waiter.t0, True)
                waiter.entry = entry
                waiter.lock.release()
                return
            if not entry.gone:
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
            waiter.lock.release()

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
                self._make_available_locked(entry)
        finally:
            self._release()
        if closed:
            self._destroy(conn)

    def _make_available_locked(self, entry: Entry[T]) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            self._lent[id(entry.conn)] = entry
            self._ledger.borrow(entry.id, waiter.t0, True)
            waiter.entry = entry
            waiter.lock.release()
        else:
            self._idle.append(entry)

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
                    cfg.background_validation is not None
                    and now - entry.checked >= cfg.background_validation
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
                self._make_available_locked(entry)
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
                # The holder's later putconn finds it gone and only forgets it.
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
                waiter.lock.release()
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
