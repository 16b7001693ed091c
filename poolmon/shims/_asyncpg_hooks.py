"""Wrappers for asyncpg's pool (``asyncpg.pool``), hook points read from asyncpg 0.32.0.

* known: ``Pool._initialize`` (the pool is registered once its holders exist);
* create: ``Pool._get_new_connection`` (connect, then the user's ``init``: its time is part of
  the create duration, a failing ``init`` makes the create fail);
* wait: ``Pool._acquire`` with an empty holder queue (every holder lent out); an
  ``asyncio.TimeoutError`` there is ``timeout``, a cancelled waiter is ``cancelled`` (phase
  ``wait``): nothing stays pending;
* borrow: ``Pool._acquire`` (``await pool.acquire()``, ``async with pool.acquire()`` and the
  ``fetch*``/``execute*``/``copy*`` shortcuts all go through it); ``setup`` runs inside it, so
  its time is part of the borrow's wait;
* return: ``PoolConnectionHolder._release``, just before the holder goes back into the queue,
  after the reset query;
* evict: ``Connection._cleanup`` (every close and terminate of a pool connection ends there),
  and ``PoolConnectionHolder.acquire`` for a connection it finds closed or expired; reasons from
  the context (:data:`REASON`) and the connection's state (:func:`_reason`).

asyncpg's ``Pool``, holders and connections have ``__slots__``: poolmon keeps its links in
dicts of its own (:mod:`poolmon.shims._asyncpg_state`), never in their attributes. Everything
here is asynchronous or runs on the loop's thread: no compiled hook (an ``async def`` returns a
coroutine, which a borrow hook cannot read a connection from).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable
from typing import Any, Final

from poolmon.shims._asyncpg_state import STATE, conn_entry, drop_conn, ledger_of, track_conn
from poolmon.shims._patch import PatchSet

__all__ = ["REASON", "patch"]

Fn = Callable[..., Any]

#: Why connections are closed in the current context: ``pool_closed`` inside ``close()`` and
#: ``terminate()``, ``idle_timeout`` in the inactivity timer, ``release`` inside the holder's
#: release (the connection's state then says more). Transport callbacks run in a copy of the
#: context the connection was opened in, so nothing is set around opening connections.
REASON: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "poolmon_asyncpg_reason", default=None
)


def _reason(con: Any, holder: Any, pool: Any) -> str:
    if pool is not None and (pool._closing or pool._closed):
        return "pool_closed"
    context = REASON.get()
    if context == "release" and holder is not None:
        protocol = con._protocol
        if protocol is not None and protocol.queries_count >= holder._max_queries:
            return "max_uses"
        if holder._generation != holder._pool._generation:
            return "other"  # Pool.expire_connections()
        if sys.exc_info()[1] is not None:
            return "reset_failed"  # release's reset query failed: asyncpg terminates it
        return "broken"  # found closed at release (killed mid-checkout)
    if context in ("pool_closed", "idle_timeout"):
        return context
    return "broken"  # the server or the network closed it (or the user's setup failed)


def _make_get_new_connection(original: Fn) -> Fn:
    async def _get_new_connection(self: Any) -> Any:
        ledger = ledger_of(self)
        if not ledger:
            return await original(self)
        t0 = ledger._now()
        try:
            con = await original(self)
        except BaseException as exc:
            try:
                ledger.create_failed(t0, exc)
            except Exception as inner:
                STATE.absorb(inner, "create")
            raise
        try:
            track_conn(con, ledger, ledger.create(t0), self)
        except Exception as exc:
            STATE.absorb(exc, "create")
        return con

    return _get_new_connection


def _make_initialize(original: Fn) -> Fn:
    async def _initialize(self: Any) -> None:
        await original(self)
        ledger_of(self)  # known from creation on, even with min_size=0 (counters at zero)

    return _initialize


def _make_acquire(original: Fn) -> Fn:
    async def _acquire(self: Any, timeout: Any) -> Any:
        ledger = ledger_of(self)
        if not ledger:
            return await original(self, timeout)
        queued = False
        t0 = ledger._now()
        try:
            queue = self._queue
            if queue is not None and queue.empty() and not self._closing:
                queued = True
                ledger.wait()
        except Exception as exc:
            STATE.absorb(exc, "acquire")
        try:
            proxy = await original(self, timeout)
        except BaseException as exc:
            _acquire_failed(ledger, exc, t0, queued)
            raise
        try:
            entry = conn_entry(proxy._con)
            if entry is None:
                from poolmon.shims._asyncpg_state import adopt_conn

                entry = adopt_conn(proxy._con, ledger, self)
            if entry is not None:
                ledger.borrow(entry.cid, t0 if queued else None, queued=queued)
        except Exception as exc:
            STATE.absorb(exc, "acquire")
        return proxy

    return _acquire


def _acquire_failed(ledger: Any, exc: BaseException, t0: float, queued: bool) -> None:
    try:
        if isinstance(exc, asyncio.TimeoutError):
            if not queued:
                ledger.wait()
            ledger.timeout(t0, exc)
        elif queued:
            kind = "cancelled" if isinstance(exc, asyncio.CancelledError) else "other"
            ledger.error(kind, "wait", exc)
    except Exception as inner:
        STATE.absorb(inner, "acquire")


def _make_holder_release_internal(original: Fn) -> Fn:
    def _release(self: Any) -> None:
        # Recorded just before the holder re-enters the queue (the original's last step).
        if self._in_use is not None and self._con is not None:
            try:
                entry = conn_entry(self._con)
                if entry is not None:
                    entry.ledger.release(entry.cid)
            except Exception as exc:
                STATE.absorb(exc, "release")
        original(self)

    return _release


def _make_cleanup(original: Fn) -> Fn:
    def _cleanup(self: Any) -> None:
        try:
            entry = drop_conn(self)
            if entry is not None:
                ref = self._pool_holder
                holder = ref() if ref is not None else None
                if holder is not None and holder._con is not self:
                    holder = None
                if holder is not None and holder._in_use is not None:
                    entry.ledger.release(entry.cid)  # closed while lent out: return, then evict
                entry.ledger.evict(entry.cid, _reason(self, holder, entry.pool()))
        except Exception as exc:
            STATE.absorb(exc, "close")
        original(self)

    return _cleanup


def _make_holder_acquire(original: Fn) -> Fn:
    async def acquire(self: Any) -> Any:
        try:
            con = self._con
            if con is not None and (con.is_closed() or self._generation != self._pool._generation):
                entry = drop_conn(con)
                if entry is not None:
                    entry.ledger.evict(entry.cid, "broken" if con.is_closed() else "other")
        except Exception as exc:
            STATE.absorb(exc, "acquire")
        # No context is set here: connections opened inside run their transport callbacks
        # (the server closing them) in a copy of this context, where a reason would be wrong.
        return await original(self)

    return acquire


def _make_holder_release(original: Fn) -> Fn:
    async def release(self: Any, timeout: Any) -> None:
        token = REASON.set("release")
        try:
            await original(self, timeout)
        finally:
            REASON.reset(token)

    return release


def _make_deactivate(original: Fn) -> Fn:
    def _deactivate_inactive_connection(self: Any) -> None:
        token = REASON.set("idle_timeout")
        try:
            original(self)
        finally:
            REASON.reset(token)

    return _deactivate_inactive_connection


def _make_pool_close(original: Fn) -> Fn:
    async def close(self: Any) -> None:
        token = REASON.set("pool_closed")
        try:
            await original(self)
        finally:
            REASON.reset(token)
            _closed(self)

    return close


def _make_pool_terminate(original: Fn) -> Fn:
    def terminate(self: Any) -> None:
        token = REASON.set("pool_closed")
        try:
            original(self)
        finally:
            REASON.reset(token)
            _closed(self)

    return terminate


def _closed(pool: Any) -> None:
    try:
        if pool._closed:
            from poolmon.shims._asyncpg_state import forget_pool

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
    holder = pool.PoolConnectionHolder
    patches.wrap(holder, "_release", _make_holder_release_internal)
    patches.wrap(holder, "acquire", _make_holder_acquire)
    patches.wrap(holder, "release", _make_holder_release)
    patches.wrap(holder, "_deactivate_inactive_connection", _make_deactivate)
    patches.wrap(connection.Connection, "_cleanup", _make_cleanup)
