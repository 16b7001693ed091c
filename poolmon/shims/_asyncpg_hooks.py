"""Wrappers for asyncpg's pool (``asyncpg.pool``), hook points read from asyncpg 0.32.0.

* known: ``Pool._initialize`` (the pool is registered once its holders exist);
* create: ``Pool._get_new_connection`` (connect, then the user's ``init``: its time is part of
  the create duration, a failing ``init`` makes the create fail);
* wait: ``Pool._acquire`` with an empty holder queue (every holder lent out); an
  ``asyncio.TimeoutError`` there is ``timeout``, a cancelled waiter is ``cancelled`` (phase
  ``wait``): nothing stays pending;
* borrow and return: ``Connection._set_proxy``, which asyncpg calls with the new proxy when a
  holder lends its connection (``holder.acquire``: every ``acquire()``, ``async with
  pool.acquire()`` and the ``fetch*``/``execute*``/``copy*`` shortcuts) and with ``None`` when the
  holder takes it back (``holder._release``, after the reset query, just before the holder
  re-enters the queue);
* evict: ``Connection._cleanup`` (every close and terminate of a pool connection ends there),
  and, before each new connect, connections asyncpg replaced without closing them
  (:func:`~poolmon.shims._asyncpg_state.sweep`); reasons from :func:`_reason`.

The per-acquire hooks are plain functions: ``_acquire``'s wrapper returns asyncpg's own
coroutine unchanged when no wait is possible (no timeout given and a holder in the queue), and
only a caller that may wait gets a coroutine of poolmon's (it must see the timeout or the
cancellation). asyncpg's ``Pool``, holders and connections have ``__slots__``: poolmon keeps its
links in tables of its own (:mod:`poolmon.shims._asyncpg_state`). No compiled hook: the borrow
is not the return value of the hooked call.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable
from typing import Any, Final

from poolmon.shims._asyncpg_state import (
    CONNS,
    STATE,
    adopt_conn,
    drop_conn,
    forget_pool,
    ledger_of,
    sweep,
    track_conn,
)
from poolmon.shims._patch import PatchSet

__all__ = ["IDLE_TIMEOUT", "WAITING", "patch"]

Fn = Callable[..., Any]

#: Set (to the wait's start) while a caller that may wait acquires: the borrow is then queued.
#: A ContextVar: asyncpg runs a timed acquire in a task of its own, which copies the context.
WAITING: Final[contextvars.ContextVar[float | None]] = contextvars.ContextVar(
    "poolmon_asyncpg_waiting", default=None
)
#: True inside the inactivity timer's callback (``max_inactive_connection_lifetime``).
IDLE_TIMEOUT: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "poolmon_asyncpg_idle_timeout", default=False
)


def _reason(con: Any, holder: Any, pool: Any) -> str:
    if pool is not None and (pool._closing or pool._closed):
        return "pool_closed"
    if IDLE_TIMEOUT.get():
        return "idle_timeout"
    if holder is not None and holder._in_use is not None:
        # Closed while lent out, inside asyncpg's release: its order of checks.
        protocol = con._protocol
        if protocol is not None and protocol.queries_count >= holder._max_queries:
            return "max_uses"
        if holder._generation != holder._pool._generation:
            return "other"  # Pool.expire_connections()
        if sys.exc_info()[1] is not None:
            return "reset_failed"  # the reset query failed: asyncpg terminates the connection
    return "broken"  # the server or the network closed it (or the user's setup failed)


# ---------------------------------------------------------------------------- create


def _make_initialize(original: Fn) -> Fn:
    async def _initialize(self: Any) -> None:
        await original(self)
        ledger_of(self)  # known from creation on, even with min_size=0 (counters at zero)

    return _initialize


def _make_get_new_connection(original: Fn) -> Fn:
    async def _get_new_connection(self: Any) -> Any:
        ledger = ledger_of(self)
        if not ledger:
            return await original(self)
        try:
            sweep(self, ledger)
        except Exception as exc:
            STATE.absorb(exc, "create")
        t0 = ledger.now()
        try:
            con = await original(self)
        except BaseException as exc:
            STATE.create_failed(ledger, t0, exc)
            raise
        try:
            track_conn(con, ledger, ledger.create(t0), self)
        except Exception as exc:
            STATE.absorb(exc, "create")
        return con

    return _get_new_connection


# ---------------------------------------------------------------------------- wait


def _make_acquire(original: Fn) -> Fn:
    async def waiting(self: Any, timeout: Any) -> Any:
        ledger = ledger_of(self)
        if not ledger:
            return await original(self, timeout)
        queued = False
        t0 = ledger.now()
        try:
            queue = self._queue
            if queue is not None and queue.empty() and not self._closing:
                queued = True
                ledger.wait()
        except Exception as exc:
            STATE.absorb(exc, "acquire")
        token = WAITING.set(t0 if queued else None)
        try:
            return await original(self, timeout)
        except BaseException as exc:
            _acquire_failed(ledger, exc, t0, queued=queued)
            raise
        finally:
            WAITING.reset(token)

    def _acquire(self: Any, timeout: Any) -> Any:
        # No timeout and a holder in the queue: asyncpg takes it without suspending (its
        # queue.get() runs synchronously up to the return), so no wait and nothing to catch:
        # its own coroutine, unwrapped.
        queue = self._queue
        if timeout is None and queue is not None and queue._queue:
            return original(self, timeout)
        return waiting(self, timeout)

    return _acquire


def _acquire_failed(ledger: Any, exc: BaseException, t0: float, *, queued: bool) -> None:
    try:
        if isinstance(exc, asyncio.TimeoutError):
            if not queued:
                ledger.wait()  # a holder was taken between our look and the queue's get
            ledger.timeout(t0, exc)
        elif queued:
            kind = "cancelled" if isinstance(exc, asyncio.CancelledError) else "other"
            ledger.error(kind, "wait", exc)
    except Exception as inner:
        STATE.absorb(inner, "acquire")


# ---------------------------------------------------------------------------- borrow, return


def _adopt_borrow(con: Any) -> None:
    """Borrow of a connection poolmon has no entry for (opened before its pool was seen)."""
    ref = con._pool_holder
    holder: Any = ref() if ref is not None else None
    if holder is None:
        return
    ledger = ledger_of(holder._pool)
    if ledger:
        entry = adopt_conn(con, ledger, holder._pool)
        if entry is not None:
            entry.borrow(entry.cid)


def _make_set_proxy(original: Fn) -> Fn:
    def _set_proxy(self: Any, proxy: Any) -> None:
        if proxy is not None and self._proxy is not None:
            return original(self, proxy)  # type: ignore[no-any-return]  # asyncpg refuses it
        # The original's whole effect in every supported release (a test checks its shape):
        # assigning it here saves a frame on every acquire and release.
        self._proxy = proxy
        try:
            entry = CONNS.get(id(self))
            if entry is None:
                if proxy is not None:
                    _adopt_borrow(self)
            elif proxy is None:
                lane = entry.lane
                if not lane.open:
                    entry.release(entry.cid)
                elif lane.release(entry.cid, entry.now()):  # lane.py L1; L2: fold when asked
                    entry.ledger.fold()
            else:
                t0 = WAITING.get()
                lane = entry.lane
                if t0 is None and lane.open:
                    # lane.py L1 (L3: an entry's id is alive, dropped at its evict); L2
                    if lane.borrow(entry.cid, entry.now(), 0.0):
                        entry.ledger.fold()
                elif t0 is None:
                    entry.borrow(entry.cid)
                else:
                    WAITING.set(None)  # resolved: nothing nested in it (setup) is queued
                    entry.borrow(entry.cid, t0, queued=True)
        except Exception as exc:
            STATE.absorb(exc, "proxy")
        return None

    return _set_proxy


# ---------------------------------------------------------------------------- evict, close


def _make_cleanup(original: Fn) -> Fn:
    def _cleanup(self: Any) -> None:
        try:
            entry = drop_conn(self)
            if entry is not None:
                ref = self._pool_holder
                holder = ref() if ref is not None else None
                if holder is not None and holder._con is not self:
                    holder = None
                if self._proxy is not None:
                    entry.ledger.release(entry.cid)  # closed while lent out: return, then evict
                entry.ledger.evict(entry.cid, _reason(self, holder, entry.pool()))
        except Exception as exc:
            STATE.absorb(exc, "close")
        original(self)

    return _cleanup


def _make_deactivate(original: Fn) -> Fn:
    def _deactivate_inactive_connection(self: Any) -> None:
        token = IDLE_TIMEOUT.set(True)
        try:
            original(self)
        finally:
            IDLE_TIMEOUT.reset(token)

    return _deactivate_inactive_connection


def _make_pool_close(original: Fn) -> Fn:
    async def close(self: Any) -> None:
        try:
            await original(self)
        finally:
            _closed(self)

    return close


def _make_pool_terminate(original: Fn) -> Fn:
    def terminate(self: Any) -> None:
        try:
            original(self)
        finally:
            _closed(self)

    return terminate


def _closed(pool: Any) -> None:
    try:
        if pool._closed:
            forget_pool(pool, close=True)
    except Exception as exc:
        STATE.absorb(exc, "close")


def patch(patches: PatchSet) -> None:
    """Install every wrapper into ``patches``."""
    import asyncpg.connection as connection
    import asyncpg.pool as pool

    patches.wrap(pool.Pool, "_initialize", _make_initialize)
    patches.wrap(pool.Pool, "_get_new_connection", _make_get_new_connection)
    patches.wrap(pool.Pool, "_acquire", _make_acquire)
    patches.wrap(pool.Pool, "close", _make_pool_close)
    patches.wrap(pool.Pool, "terminate", _make_pool_terminate)
    patches.wrap(pool.PoolConnectionHolder, "_deactivate_inactive_connection", _make_deactivate)
    patches.wrap(connection.Connection, "_set_proxy", _make_set_proxy)
    patches.wrap(connection.Connection, "_cleanup", _make_cleanup)
