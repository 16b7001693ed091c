"""Wrappers for synchronous redis-py: ``redis.ConnectionPool``, ``BlockingConnectionPool`` and
``redis.connection.AbstractConnection``.

Hook points (redis-py 8.1, read from ``redis/connection.py``):

* borrow: ``get_connection`` (the client calls it with no arguments; it connects and checks the
  connection with ``can_read`` before lending it);
* return: ``release`` (it may ``disconnect()`` a connection marked for reconnect: return, then
  evict, in that order);
* create: ``AbstractConnection.connect_check_health`` (``make_connection`` opens nothing;
  ``connect()`` calls it on every borrow and it returns at once when a socket exists);
* evict: ``AbstractConnection.disconnect`` when a socket exists (reason from
  :func:`~poolmon.shims._redis_common.disconnect_reason`);
* validate: ``check_health`` when a PING health check is due (``health_check_interval``);
* wait: only ``BlockingConnectionPool`` waits, on its queue. The queue holds connections and
  ``None`` placeholders for connections not made yet, so an *empty* queue means every slot is lent
  out and the caller will block. We peek at ``len(queue)`` without the queue's mutex: a stale read
  only misplaces one wait event in a race (a caller that finds the queue refilled a moment later
  still gets wait then borrow; one that finds it drained a moment later blocks without a wait event
  and its timeout, if any, emits the wait first).

Every wrapper has the original's exact signature (``*args`` forwarding and wrapt cost ~0.5 us a
call), reads the clock at most once per event, and catches its own failures.
"""

from __future__ import annotations

from collections.abc import Callable
from queue import Empty
from typing import Any

from poolmon.core.compiled import fast_method
from poolmon.shims._attrs import pop_attr
from poolmon.shims._patch import PatchSet
from poolmon.shims._redis_common import (
    CLOSING,
    CONN_ID,
    CONN_LEDGER,
    CONN_SOCK,
    HC_T0,
    POOL_LEDGER,
    STATE,
    Shadowed,
    attach,
    disconnect_reason,
    set_socket,
    slow_conn_id,
    stamp,
)

__all__ = ["patch_sync"]

Fn = Callable[..., Any]


def _borrowed(ledger: Any, conn: Any, t0: float | None, *, queued: bool) -> None:
    try:
        try:
            cid = conn._poolmon_id
        except AttributeError:
            cid = None
        if cid is None:
            cid = slow_conn_id(ledger, conn)
            if cid is None:
                return
        ledger.borrow(cid, t0, queued=queued)
    except Exception as exc:
        STATE.absorb(exc, "borrow")


def _make_pool_get_connection(original: Fn, owner: type, max_error: type[BaseException]) -> Fn:
    shadowed = Shadowed(owner, "get_connection")

    def get_connection(self: Any, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        try:
            ledger = self._poolmon_ledger  # POOL_LEDGER as a plain attribute read: fastest
        except AttributeError:
            ledger = attach(self)
        if not ledger or (type(self) is not owner and shadowed(type(self))):
            if command_name is None and not keys and not options:
                return original(self)
            return original(self, command_name, *keys, **options)
        try:
            # Forward exactly what the caller passed: redis-py warns about any argument given.
            if command_name is None and not keys and not options:
                conn = original(self)
            else:
                conn = original(self, command_name, *keys, **options)
        except max_error as exc:
            # ConnectionPool refuses at once when max_connections are all made: fail-fast.
            try:
                ledger.error("exhausted", "borrow", exc)
            except Exception as inner:
                STATE.absorb(inner, "get_connection")
            raise
        # Inlined rather than calling _borrowed(): this is the hottest line of the shim. The
        # ledger takes its lock-free lane while it is open (poolmon.core.lane); this pool never
        # waits (it refuses at once when full), so no t0.
        try:
            cid = conn._poolmon_id
            if cid is None:
                cid = slow_conn_id(ledger, conn)
            if cid is not None:
                ledger.borrow(cid)
        except AttributeError:
            _borrowed(ledger, conn, None, queued=False)  # not stamped: made before instrument()
        except Exception as exc:
            STATE.absorb(exc, "borrow")
        return conn

    # The compiled fast path (poolmon._hot) where built: calls on ``owner`` itself; a lent
    # connection whose socket link (CONN_SOCK) is live is recorded in C, any other goes to
    # adopt. Calls on a subclass go to ``get_connection`` above unchanged.
    return fast_method(
        "BORROW",
        original,
        get_connection,
        exact_type=owner,
        conn_link=CONN_SOCK,
        failed=_make_pool_failed(max_error),
        adopt=_pool_adopt,
        absorb=STATE.absorber("borrow"),
    )


# The compiled wrapper calls the original first and hands these the pool, not its ledger.
def _make_pool_failed(max_error: type[BaseException]) -> Fn:
    def failed(pool: Any, _conn: None, _t0: None, exc: BaseException) -> None:
        if isinstance(exc, max_error):
            try:
                ledger = getattr(pool, POOL_LEDGER, None)
                if ledger is None:
                    ledger = attach(pool)
                if ledger:
                    ledger.error("exhausted", "borrow", exc)
            except Exception as inner:
                STATE.absorb(inner, "get_connection")

    return failed


def _pool_adopt(pool: Any, conn: Any, _t0: None) -> None:
    try:
        ledger = getattr(pool, POOL_LEDGER, None)
        if ledger is None:
            ledger = attach(pool)
    except Exception as exc:
        STATE.absorb(exc, "borrow")
        return
    if ledger:
        _borrowed(ledger, conn, None, queued=False)


def _make_blocking_get_connection(original: Fn, owner: type) -> Fn:
    shadowed = Shadowed(owner, "get_connection")

    def get_connection(self: Any, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        ledger = getattr(self, POOL_LEDGER, None)
        if ledger is None:
            ledger = attach(self)
        if not ledger or (type(self) is not owner and shadowed(type(self))):
            if command_name is None and not keys and not options:
                return original(self)
            return original(self, command_name, *keys, **options)
        t0 = ledger.now()
        queued = False
        try:
            # An empty queue (no connection, no None placeholder): the caller is about to block.
            if not self.pool.queue:
                queued = True
                ledger.wait()
        except Exception as exc:
            STATE.absorb(exc, "get_connection")
        try:
            if command_name is None and not keys and not options:
                conn = original(self)
            else:
                conn = original(self, command_name, *keys, **options)
        except BaseException as exc:
            _blocking_failed(ledger, exc, t0, queued=queued)
            raise
        _borrowed(ledger, conn, t0 if queued else None, queued=queued)
        return conn

    return get_connection


def _blocking_failed(ledger: Any, exc: BaseException, t0: float, *, queued: bool) -> None:
    try:
        if isinstance(exc.__context__, Empty):
            # "No connection available.": the queue wait timed out.
            if not queued:
                ledger.wait()  # the queue drained after our peek: the caller did wait
            ledger.timeout(t0, exc)
        elif queued:
            # The caller got a slot but connecting failed (create_failed is already recorded),
            # or it was interrupted: resolve its wait so pending returns to zero.
            kind = "other" if isinstance(exc, Exception) else "cancelled"
            ledger.error(kind, "wait", exc)
    except Exception as inner:
        STATE.absorb(inner, "get_connection")


def _make_release(original: Fn, owner: type) -> Fn:
    shadowed = Shadowed(owner, "release")

    def release(self: Any, connection: Any) -> None:
        # Record the return before the original runs: it may disconnect a connection marked for
        # reconnect, and the standard wants return before evict.
        try:
            cid = connection._poolmon_id
            if cid is not None and (type(self) is owner or not shadowed(type(self))):
                connection._poolmon_ledger.release(cid)  # CONN_LEDGER; its lane when open
        except AttributeError:
            pass  # a connection poolmon does not track (made before instrument(), or foreign)
        except Exception as exc:
            STATE.absorb(exc, "release")
        return original(self, connection)  # type: ignore[no-any-return]

    # Compiled where built: ``release(conn)`` on ``owner`` itself (exactly two positional
    # arguments) with a live socket link is recorded in C before the original runs.
    return fast_method(
        "RELEASE",
        original,
        release,
        exact_type=owner,
        conn_link=CONN_SOCK,
        defaults=(),
        absorb=STATE.absorber("release"),
    )


def _make_make_connection(original: Fn) -> Fn:
    def make_connection(self: Any) -> Any:
        conn = original(self)
        try:
            ledger = getattr(self, POOL_LEDGER, None)
            if ledger is None:
                ledger = attach(self)
            if ledger:
                stamp(conn, ledger)
        except Exception as exc:
            STATE.absorb(exc, "make_connection")
        return conn

    return make_connection


def _make_pool_disconnect(original: Fn) -> Fn:
    def disconnect(
        self: Any,
        inuse_connections: bool = True,  # noqa: FBT001, FBT002 (ConnectionPool.disconnect's)
    ) -> None:
        token = CLOSING.set("pool_closed")
        try:
            original(self, inuse_connections)
        finally:
            CLOSING.reset(token)

    return disconnect


def _make_pool_close(original: Fn) -> Fn:
    def close(self: Any) -> None:
        token = CLOSING.set("pool_closed")
        try:
            original(self)
        finally:
            CLOSING.reset(token)
            ledger = getattr(self, POOL_LEDGER, None)
            if ledger:
                try:
                    ledger.close()
                except Exception as exc:
                    STATE.absorb(exc, "close")

    return close


def _make_connect_check_health(original: Fn) -> Fn:
    def connect_check_health(
        self: Any,
        # redis-py's AbstractConnection.connect_check_health signature, positionals included:
        check_health: bool = True,  # noqa: FBT001, FBT002
        retry_socket_connect: bool = True,  # noqa: FBT001, FBT002
    ) -> None:
        if self._sock:
            return  # the original's own first step: connect() calls this on every borrow
        ledger = getattr(self, CONN_LEDGER, None)
        if not ledger:
            return original(self, check_health, retry_socket_connect)  # type: ignore[no-any-return]
        t0 = ledger.now()
        try:
            original(self, check_health, retry_socket_connect)
        except BaseException as exc:
            STATE.create_failed(ledger, t0, exc, "connect")
            raise
        try:
            if self._sock is not None:
                set_socket(self, ledger, ledger.create(t0))
        except Exception as exc:
            STATE.absorb(exc, "connect")

    # Compiled where built: with a socket the original would only return (its own first step),
    # so the compiled wrapper returns at once (poolmon/_hot.c, skip_if_truthy).
    return fast_method(
        "SKIP_IF_TRUTHY",
        original,
        connect_check_health,
        attr="_sock",
        absorb=STATE.absorber("connect"),
    )


def _make_conn_disconnect(original: Fn) -> Fn:
    def disconnect(self: Any, *args: Any, **kwargs: Any) -> None:
        cid = getattr(self, CONN_ID, None)
        if cid is not None and self._sock is not None:
            try:
                ledger = self._poolmon_ledger  # CONN_LEDGER
                set_socket(self, ledger, None)
                health = kwargs.get("health_check_failed")
                reason = disconnect_reason(args, kwargs.get("error"), health)
                # Broken during a PING health check (redis-py's read path disconnects before
                # the check's own failure handler runs): the check failed.
                hc_t0 = pop_attr(self, HC_T0)
                if reason == "failed_validation" or (hc_t0 is not None and reason == "broken"):
                    reason = "failed_validation"
                    ledger.validate(cid, ledger.now() if hc_t0 is None else hc_t0, ok=False)
                ledger.evict(cid, reason)
            except Exception as exc:
                STATE.absorb(exc, "disconnect")
        return original(self, *args, **kwargs)  # type: ignore[no-any-return]

    return disconnect


def _make_check_health(original: Fn, monotonic: Callable[[], float]) -> Fn:
    def check_health(self: Any) -> None:
        # Called before every command. Without a health_check_interval (the default) the
        # original does nothing (its only statement is ``if self.health_check_interval and
        # ...``, in every supported release; a test checks it): answer here, in one frame, as
        # it would, rather than add a second frame to every command.
        if not self.health_check_interval:
            return None
        # Only a due PING is a health check; otherwise this is the per-command no-op.
        if getattr(self, CONN_ID, None) is None:
            return original(self)  # type: ignore[no-any-return]
        if monotonic() <= self.next_health_check:
            return original(self)  # type: ignore[no-any-return]
        ledger: Any = getattr(self, CONN_LEDGER, None)
        t0 = ledger.now()
        setattr(self, HC_T0, t0)
        try:
            original(self)  # a failed PING is recorded where the socket is dropped (disconnect)
        finally:
            pop_attr(self, HC_T0)
        try:
            cid = getattr(self, CONN_ID, None)
            if cid is not None and self._sock is not None:
                ledger.validate(cid, t0, ok=True)
        except Exception as exc:
            STATE.absorb(exc, "check_health")

    return check_health


def patch_sync(patches: PatchSet) -> None:
    """Install the synchronous wrappers into ``patches``."""
    import time

    import redis.connection as rc
    from redis.exceptions import MaxConnectionsError

    pool, blocking, conn = rc.ConnectionPool, rc.BlockingConnectionPool, rc.AbstractConnection
    patches.wrap(
        pool, "get_connection", lambda f: _make_pool_get_connection(f, pool, MaxConnectionsError)
    )
    patches.wrap(blocking, "get_connection", lambda f: _make_blocking_get_connection(f, blocking))
    patches.wrap(pool, "release", lambda f: _make_release(f, pool))
    patches.wrap(blocking, "release", lambda f: _make_release(f, blocking))
    for cls in (pool, blocking):
        patches.wrap(cls, "make_connection", _make_make_connection)
        patches.wrap(cls, "disconnect", _make_pool_disconnect)
    patches.wrap(pool, "close", _make_pool_close)
    patches.wrap(conn, "connect_check_health", _make_connect_check_health)
    patches.wrap(conn, "disconnect", _make_conn_disconnect)
    patches.wrap(conn, "check_health", lambda f: _make_check_health(f, time.monotonic))
