"""Shim for psycopg2.pool: ``SimpleConnectionPool``, ``ThreadedConnectionPool`` (psycopg2 2.8/2.9).

Hook points: create ``_connect``; borrow ``_getconn``; return ``_putconn``; close ``_closeall``.
``SimpleConnectionPool`` binds ``getconn = AbstractConnectionPool._getconn`` (and ``putconn``,
``closeall``) at class creation, so patching the underscored methods alone would miss it: those
aliases are wrapped too. ``ThreadedConnectionPool`` calls the underscored methods under its own
lock, so its events are ordered by that lock.

psycopg2 never waits: an exhausted pool raises ``PoolError`` at once (error type ``exhausted``).
It keeps at most ``minconn`` idle connections; a return beyond that closes the connection
(eviction reason ``overflow``). A connection returned closed or with a lost server is discarded
(``broken``); ``putconn(close=True)`` is the caller's decision (``other``).

Usage::

    import poolmon
    poolmon.instrument("psycopg2")
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any, Final

from poolmon.core.identity import PoolIdentity, identity_from_libpq_dsn
from poolmon.core.registry import PoolRegistry
from poolmon.shims._psycopg_common import KeyedPoolTracker, PoolTracker, ShimState
from poolmon.shims._version import installed_version, supported

__all__ = ["LIBRARY", "SUPPORTED", "available", "instrument", "is_instrumented", "uninstrument"]

#: The distribution whose version gates this shim (``psycopg2-binary`` is accepted as well).
LIBRARY: Final = "psycopg2"
SUPPORTED: Final = ">=2.8,<3"

Fn = Callable[..., Any]

# psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN: the server connection is lost.
_STATUS_UNKNOWN: Final = 4
# Keyword arguments of psycopg2.connect() that are not connection parameters.
_NOT_PARAMS: Final = frozenset({"dsn", "connection_factory", "cursor_factory", "async", "async_"})


@functools.cache
def _library_version() -> str | None:
    found = installed_version("psycopg2") or installed_version("psycopg2-binary")
    if found is None and available():
        import psycopg2

        found = str(psycopg2.__version__).split()[0]
    return found


def _identity(pool: Any) -> PoolIdentity:
    args: tuple[Any, ...] = pool._args
    kwargs: dict[str, Any] = pool._kwargs
    dsn = args[0] if args and isinstance(args[0], str) else kwargs.get("dsn") or ""
    params = {k: v for k, v in kwargs.items() if k not in _NOT_PARAMS}
    return identity_from_libpq_dsn(
        str(dsn), params, library="psycopg2", library_version=_library_version()
    )


def _limits(pool: Any) -> tuple[int | None, int | None, int | None]:
    # psycopg2 keeps at most ``minconn`` connections idle: that is its idle maximum too.
    return pool.maxconn, pool.minconn, pool.minconn


def _idle(pool: Any) -> list[tuple[Any, float]]:
    return [(conn, 0.0) for conn in tuple(pool._pool)]  # ages unknown: psycopg2 keeps none


# psycopg2 connections are a C type without ``__dict__``: connection ids are kept by id() in the
# tracker, guarded by identity (see KeyedPoolTracker).
_state: Final = ShimState(
    "psycopg2", identity=_identity, limits=_limits, idle=_idle, tracker_class=KeyedPoolTracker
)


def available() -> bool:
    """psycopg2 can be imported."""
    return importlib.util.find_spec("psycopg2") is not None


def instrument(registry: PoolRegistry | None = None, *, version: str | None = None) -> bool:
    """Instrument psycopg2.pool in place; True if active now.

    ``version`` overrides the installed version for the support check (tests). Twice changes
    nothing; an unsupported version is reported once and left untouched.
    """
    if _state.patches.active:
        return True
    if not available():
        return False
    found = version if version is not None else _library_version()
    if not supported(LIBRARY, SUPPORTED, found or "0"):
        return False
    from psycopg2 import pool as pool_mod

    _state.start(registry)
    try:
        _patch(_state, pool_mod)
    except BaseException:
        uninstrument()
        raise
    return True


def _patch(st: ShimState, pool_mod: Any) -> None:
    base = pool_mod.AbstractConnectionPool
    error = pool_mod.PoolError
    wrap = st.patches.wrap
    wrap(base, "_connect", lambda orig: _connect(orig, st))
    # SimpleConnectionPool's aliases hold the same functions as the underscored originals;
    # each gets its own wrapper (ThreadedConnectionPool reaches the underscored ones).
    for owner, prefix in ((base, "_"), (pool_mod.SimpleConnectionPool, "")):
        wrap(owner, f"{prefix}getconn", lambda orig: _getconn(orig, st, error))
        wrap(owner, f"{prefix}putconn", lambda orig: _putconn(orig, st))
        wrap(owner, f"{prefix}closeall", lambda orig: _closeall(orig, st))


def uninstrument() -> None:
    """Restore every patched attribute to its original object and forget the tracked pools."""
    _state.patches.restore()
    _state.stop()


def is_instrumented() -> bool:
    return _state.patches.active


# ---------------------------------------------------------------------------------- wrappers


def _tracker(pool: Any, st: ShimState) -> PoolTracker | None:
    try:
        tracker: PoolTracker = pool._poolmon_tracker  # TRACKER_ATTR as a plain attribute read
    except AttributeError:
        return st.track(pool)
    return tracker


def _connect(original: Fn, st: ShimState) -> Fn:
    def _connect(self: Any, key: Any = None) -> Any:
        tracker = _tracker(self, st)
        if tracker is None:
            return original(self, key)
        t0 = tracker.now()
        try:
            conn = original(self, key)
        except Exception as exc:
            try:
                tracker.ledger.create_failed(t0, exc)
            except Exception as inner:
                st.absorb(inner)
            raise
        try:
            tracker.created(conn, t0)
        except Exception as exc:
            st.absorb(exc)
        return conn

    return _connect


def _getconn(original: Fn, st: ShimState, pool_error: type[Exception]) -> Fn:
    def _getconn(self: Any, key: Any = None) -> Any:
        tracker = _tracker(self, st)
        # A key already holding a connection gets that same connection back: not a new borrow.
        if tracker is None or (key is not None and key in self._used):
            return original(self, key)
        try:
            conn = original(self, key)
        except Exception as exc:
            if isinstance(exc, pool_error):
                _refused(st, tracker, self, exc)
            raise  # other errors come from _connect, already counted as create_failed
        try:
            tracker.borrow(tracker.conn_id(conn))
        except Exception as exc:
            st.absorb(exc)
        return conn

    return _getconn


def _refused(st: ShimState, tracker: PoolTracker, pool: Any, exc: Exception) -> None:
    try:
        error_type = "pool_closed" if pool.closed else "exhausted"
        tracker.ledger.error(error_type, "borrow", exc)
    except Exception as inner:
        st.absorb(inner)


def _put_reason(pool: Any, conn: Any, close: bool) -> str | None:
    """What ``_putconn`` is about to do with ``conn``: the eviction reason, or None if kept."""
    if conn.closed or conn.info.transaction_status == _STATUS_UNKNOWN:
        return "broken"
    if close:
        return "other"  # the caller asked for it to be closed
    if len(pool._pool) >= pool.minconn:
        return "overflow"
    return None


def _putconn(original: Fn, st: ShimState) -> Fn:
    def _putconn(self: Any, conn: Any = None, key: Any = None, close: bool = False) -> None:
        tracker = _tracker(self, st)
        if tracker is None:
            return original(self, conn, key, close)  # type: ignore[no-any-return]
        cid: int | None = None
        reason: str | None = None
        try:
            # Only a put the pool will accept is recorded (it raises for closed/unknown ones).
            if not self.closed and id(conn) in self._rused:
                cid = tracker.conn_id(conn)
                tracker.release(cid)
                reason = _put_reason(self, conn, close)
        except Exception as exc:
            st.absorb(exc)
        try:
            original(self, conn, key, close)
        except BaseException:
            if cid is not None:
                _reset_failed(st, tracker, conn, cid)
            raise
        if reason is not None and cid is not None:
            try:
                tracker.discard(conn, cid, reason)
            except Exception as exc:
                st.absorb(exc)
        return None

    return _putconn


def _reset_failed(st: ShimState, tracker: PoolTracker, conn: Any, cid: int) -> None:
    # The rollback of a returned connection raised: psycopg2 neither pools nor closes it.
    try:
        tracker.ledger.error("reset_failed", "reset", conn=cid)
        tracker.discard(conn, cid, "reset_failed")
    except Exception as exc:
        st.absorb(exc)


def _closeall(original: Fn, st: ShimState) -> Fn:
    def _closeall(self: Any) -> None:
        tracker = _tracker(self, st)
        if tracker is None or self.closed:
            return original(self)  # type: ignore[no-any-return]
        conns: list[Any] = []
        try:
            conns = list(self._pool) + list(self._used.values())
        except Exception as exc:
            st.absorb(exc)
        original(self)
        try:
            for conn in conns:  # closeall closes idle and borrowed connections alike
                cid = tracker.known_id(conn)
                if cid is not None:
                    tracker.discard(conn, cid, "pool_closed")
            tracker.ledger.close()
        except Exception as exc:
            st.absorb(exc)
        return None

    return _closeall
