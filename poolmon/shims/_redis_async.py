"""Wrappers for ``redis.asyncio``: ``ConnectionPool``, ``BlockingConnectionPool`` and
``redis.asyncio.connection.AbstractConnection``.

The hook points mirror the synchronous ones (see :mod:`poolmon.shims._redis_sync`), with these
differences read from ``redis/asyncio/connection.py`` (redis-py 8.1):

* ``ConnectionPool.get_connection`` checks out under an ``asyncio.Lock`` and raises
  ``MaxConnectionsError`` at once when full (fail-fast: error type ``exhausted``);
* ``BlockingConnectionPool.get_connection`` waits on an ``asyncio.Condition`` for
  ``can_get_connection()``; when that is false on entry the caller is about to wait. Everything
  runs on one thread, so the check cannot race with another task between it and the wait;
* ``BlockingConnectionPool.release`` delegates to ``super().release``: both are patched and the
  :class:`~poolmon.shims._redis_common.Shadowed` guard makes only the outer wrapper record;
* a waiter cancelled by its task raises ``CancelledError`` (error type ``cancelled``);
* ``aclose()`` closes the pool (``disconnect`` gathers each connection's ``disconnect`` in tasks,
  which copy our ``CLOSING`` context, so each eviction says ``pool_closed``).

Wrappers are ``async def`` with the original's exact signature.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from poolmon.shims._attrs import pop_attr
from poolmon.shims._patch import PatchSet
from poolmon.shims._redis_common import (
    CLOSING,
    CONN_ID,
    CONN_LEDGER,
    HC_T0,
    POOL_LEDGER,
    STATE,
    Shadowed,
    attach,
    set_socket,
)
from poolmon.shims._redis_sync import _borrowed, _make_make_connection

__all__ = ["patch_async"]

Fn = Callable[..., Any]


def _make_get_connection(
    original: Fn, owner: type, max_error: type[BaseException] | None = None
) -> Fn:
    """``get_connection`` of ``ConnectionPool`` (``max_error``: it refuses at once when full) or
    of ``BlockingConnectionPool`` (``max_error`` None: it waits, and the wait is recorded)."""
    shadowed = Shadowed(owner, "get_connection")
    blocking = max_error is None

    async def get_connection(
        self: Any, command_name: Any = None, *keys: Any, **options: Any
    ) -> Any:
        ledger = getattr(self, POOL_LEDGER, None)
        if ledger is None:
            ledger = attach(self)
        plain = command_name is None and not keys and not options
        if not ledger or (type(self) is not owner and shadowed(type(self))):
            if plain:
                return await original(self)
            return await original(self, command_name, *keys, **options)
        t0: float | None = None
        queued = False
        if blocking:
            t0 = ledger.now()
            try:
                if not self.can_get_connection():
                    queued = True
                    ledger.wait()
            except Exception as exc:
                STATE.absorb(exc, "get_connection")
        try:
            if plain:
                conn = await original(self)
            else:
                conn = await original(self, command_name, *keys, **options)
        except BaseException as exc:
            _failed(ledger, exc, t0, max_error, queued=queued)
            raise
        _borrowed(ledger, conn, t0 if queued else None, queued=queued)
        return conn

    return get_connection


def _failed(
    ledger: Any,
    exc: BaseException,
    t0: float | None,
    max_error: type[BaseException] | None,
    *,
    queued: bool,
) -> None:
    try:
        if max_error is not None:  # ConnectionPool: fail-fast when full
            if isinstance(exc, max_error):
                ledger.error("exhausted", "borrow", exc)
        elif t0 is not None and isinstance(exc.__cause__, asyncio.TimeoutError):
            if not queued:
                ledger.wait()
            ledger.timeout(t0, exc)
        elif queued:
            if isinstance(exc, asyncio.CancelledError):
                kind = "cancelled"
            else:
                kind = "other" if isinstance(exc, Exception) else "cancelled"
            ledger.error(kind, "wait", exc)
    except Exception as inner:
        STATE.absorb(inner, "get_connection")


def _make_release(original: Fn, owner: type) -> Fn:
    shadowed = Shadowed(owner, "release")

    async def release(self: Any, connection: Any) -> None:
        try:
            cid = connection._poolmon_id
            if cid is not None and (type(self) is owner or not shadowed(type(self))):
                connection._poolmon_ledger.release(cid)
        except AttributeError:
            pass
        except Exception as exc:
            STATE.absorb(exc, "release")
        await original(self, connection)

    return release


def _make_pool_disconnect(original: Fn) -> Fn:
    async def disconnect(
        self: Any,
        inuse_connections: bool = True,  # noqa: FBT001, FBT002 (ConnectionPool.disconnect's)
    ) -> None:
        token = CLOSING.set("pool_closed")
        try:
            await original(self, inuse_connections)
        finally:
            CLOSING.reset(token)

    return disconnect


def _make_pool_aclose(original: Fn) -> Fn:
    async def aclose(self: Any) -> None:
        token = CLOSING.set("pool_closed")
        try:
            await original(self)
        finally:
            CLOSING.reset(token)
            ledger = getattr(self, POOL_LEDGER, None)
            if ledger:
                try:
                    ledger.close()
                except Exception as exc:
                    STATE.absorb(exc, "aclose")

    return aclose


def _make_connect_check_health(original: Fn) -> Fn:
    async def connect_check_health(
        self: Any,
        # redis-py's AbstractConnection.connect_check_health signature, positionals included:
        check_health: bool = True,  # noqa: FBT001, FBT002
        retry_socket_connect: bool = True,  # noqa: FBT001, FBT002
    ) -> None:
        if self._reader is not None and self._writer is not None:
            return  # the original's own first step (is_connected): connect() runs every borrow
        ledger = getattr(self, CONN_LEDGER, None)
        if not ledger:
            await original(self, check_health, retry_socket_connect)
            return
        t0 = ledger.now()
        try:
            await original(self, check_health, retry_socket_connect)
        except BaseException as exc:
            STATE.create_failed(ledger, t0, exc, "connect")
            raise
        try:
            if self._writer is not None:
                set_socket(self, ledger, ledger.create(t0))
        except Exception as exc:
            STATE.absorb(exc, "connect")

    return connect_check_health


def _make_conn_disconnect(original: Fn) -> Fn:
    async def disconnect(
        self: Any,
        # redis.asyncio's AbstractConnection.disconnect signature, positionals included:
        nowait: bool = False,  # noqa: FBT001, FBT002
        error: Exception | None = None,
        failure_count: int | None = None,
        health_check_failed: bool = False,  # noqa: FBT001, FBT002
    ) -> None:
        cid = getattr(self, CONN_ID, None)
        if cid is not None and self._writer is not None:
            try:
                ledger = self._poolmon_ledger  # CONN_LEDGER
                set_socket(self, ledger, None)
                closing = CLOSING.get()
                if closing is not None:
                    reason = closing
                elif error is not None or sys.exc_info()[1] is not None or nowait:
                    # redis-py passes nowait=True only on its error paths (failed read/write).
                    reason = "broken"
                else:
                    reason = "other"
                hc_t0 = pop_attr(self, HC_T0)
                if health_check_failed or (hc_t0 is not None and reason == "broken"):
                    reason = "failed_validation"
                    ledger.validate(cid, ledger.now() if hc_t0 is None else hc_t0, ok=False)
                ledger.evict(cid, reason)
            except Exception as exc:
                STATE.absorb(exc, "disconnect")
        await original(self, nowait, error, failure_count, health_check_failed)

    return disconnect


def _make_check_health(original: Fn) -> Fn:
    async def check_health(self: Any) -> None:
        # Before every command; the original does nothing without a health_check_interval
        # (see the sync wrapper): answer as it would, without a second coroutine per command.
        if not self.health_check_interval:
            return
        if getattr(self, CONN_ID, None) is None:
            await original(self)
            return
        if asyncio.get_running_loop().time() <= self.next_health_check:
            await original(self)
            return
        ledger: Any = getattr(self, CONN_LEDGER, None)
        t0 = ledger.now()
        setattr(self, HC_T0, t0)
        try:
            await original(self)
        finally:
            pop_attr(self, HC_T0)
        try:
            cid = getattr(self, CONN_ID, None)
            if cid is not None and self._writer is not None:
                ledger.validate(cid, t0, ok=True)
        except Exception as exc:
            STATE.absorb(exc, "check_health")

    return check_health


def patch_async(patches: PatchSet) -> None:
    """Install the asyncio wrappers into ``patches``."""
    import redis.asyncio.connection as rac
    from redis.exceptions import MaxConnectionsError

    pool, blocking, conn = rac.ConnectionPool, rac.BlockingConnectionPool, rac.AbstractConnection
    full = MaxConnectionsError
    patches.wrap(pool, "get_connection", lambda f: _make_get_connection(f, pool, full))
    patches.wrap(blocking, "get_connection", lambda f: _make_get_connection(f, blocking))
    patches.wrap(pool, "release", lambda f: _make_release(f, pool))
    patches.wrap(blocking, "release", lambda f: _make_release(f, blocking))
    patches.wrap(pool, "make_connection", _make_make_connection)  # a plain def: the sync one
    patches.wrap(pool, "disconnect", _make_pool_disconnect)
    patches.wrap(pool, "aclose", _make_pool_aclose)
    patches.wrap(conn, "connect_check_health", _make_connect_check_health)
    patches.wrap(conn, "disconnect", _make_conn_disconnect)
    patches.wrap(conn, "check_health", _make_check_health)
