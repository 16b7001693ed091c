"""Shim for psycopg2.pool: ``SimpleConnectionPool``, ``ThreadedConnectionPool`` (psycopg2 2.8/2.9).

Hook points: create ``_connect``; borrow ``_getconn``; return ``_putconn``; close ``_closeall``.
``SimpleConnectionPool`` binds ``getconn = AbstractConnectionPool._getconn`` (and ``putconn``,
``closeall``) at class creation, so patching the underscored methods alone would miss it: those
aliases are wrapped too. ``ThreadedConnectionPool`` calls the underscored methods under its own
lock, so its events are ordered by that lock.

psycopg2 never waits: an exhausted pool raises ``PoolError`` at once (error type ``exhausted``).
It keeps at most ``minconn`` idle connections; a return beyond that closes the connection
(eviction reason ``overflow``). A connection returned closed or with a lost server is discarded
(``broken``); ``putconn(close=True)`` is the caller's decision (``other``). The reasons are
decided in psycopg2's own order: ``close=True`` first, then a full pool, then the connection's
state.

Where poolmon's compiled fast path is built, the common ``getconn()``/``putconn(conn)`` calls
run in C (``poolmon/_hot.c``: ``psycopg2_get``/``psycopg2_put``): the return is recorded after
psycopg2 has decided (the connection at the end of the idle list means kept), anything else goes
to the Python hooks below, which are also the reference implementation.

Usage::

    import poolmon
    poolmon.instrument("psycopg2")
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any, Final

from poolmon.backends.labels import label_psycopg2_pool
from poolmon.core.compiled import fast_method, new_link
from poolmon.core.identity import PoolIdentity, identity_from_libpq_dsn
from poolmon.core.registry import PoolRegistry
from poolmon.shims._psycopg_common import (
    LINK_ATTR,
    KeyedPoolTracker,
    PoolTracker,
    TrackingState,
    sync_connect,
)
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


def _link(pool: Any, tracker: PoolTracker) -> Any:
    # What the compiled getconn/putconn read of a pool, in one lookup: the lane, the idle list
    # (AbstractConnectionPool.__init__ makes it once) and the keyed tags, psycopg2's connections
    # taking no attributes (KeyedPoolTracker).
    assert isinstance(tracker, KeyedPoolTracker)
    return new_link(tracker.lane, key=tracker, items=pool._pool, table=tracker.conns)


# psycopg2 connections are a C type without ``__dict__``: connection ids are kept by id() in the
# tracker, guarded by identity (see KeyedPoolTracker).
_state: Final = TrackingState(
    "psycopg2",
    identity=_identity,
    limits=_limits,
    idle=_idle,
    tracker_class=KeyedPoolTracker,
    link=_link,
    label_connections=label_psycopg2_pool,
)


def available() -> bool:
    """psycopg2 can be imported."""
    return importlib.util.find_spec("psycopg2") is not None


def instrument(registry: PoolRegistry | None = None, *, version: str | None = None) -> bool:
    """Instrument psycopg2.pool in place; True if active now.

    ``version`` overrides the installed version for the support check (tests). Twice changes
    nothing; an unsupported version is reported once and left untouched.
    """

    def ready() -> bool:
        if not available():
            return False
        found = version if version is not None else _library_version()
        return supported(LIBRARY, SUPPORTED, found or "0")

    def patch() -> None:
        from psycopg2 import pool as pool_mod

        _patch(_state, pool_mod)

    return _state.install(registry, ready=ready, patch=patch)


def _patch(st: TrackingState, pool_mod: Any) -> None:
    base = pool_mod.AbstractConnectionPool
    error = pool_mod.PoolError
    wrap = st.patches.wrap
    wrap(base, "_connect", lambda orig: sync_connect(orig, st))
    # SimpleConnectionPool's aliases hold the same functions as the underscored originals;
    # each gets its own wrapper (ThreadedConnectionPool reaches the underscored ones).
    for owner, prefix in ((base, "_"), (pool_mod.SimpleConnectionPool, "")):
        wrap(owner, f"{prefix}getconn", lambda orig: _getconn(orig, st, error))
        wrap(owner, f"{prefix}putconn", lambda orig: _putconn(orig, st, error))
        wrap(owner, f"{prefix}closeall", lambda orig: _closeall(orig, st))


def uninstrument() -> None:
    """Restore every patched attribute to its original object and forget the tracked pools."""
    _state.uninstall()


def is_instrumented() -> bool:
    return _state.installed


# ---------------------------------------------------------------------------------- wrappers


def _getconn(original: Fn, st: TrackingState, pool_error: type[Exception]) -> Fn:
    def _getconn(self: Any, key: Any = None) -> Any:
        tracker = st.tracker_of(self)
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

    def failed(pool: Any, _conn: None, _t0: None, exc: BaseException) -> None:
        try:
            tracker = st.tracker_of(pool)
            if tracker is not None and isinstance(exc, pool_error):
                _refused(st, tracker, pool, exc)
        except Exception as inner:
            st.absorb(inner)

    def adopt(pool: Any, conn: Any, _t0: None) -> None:
        tracker = st.tracker_of(pool)  # a connection made before instrument(): adopted now
        if tracker is not None:
            tracker.borrow(tracker.conn_id(conn))

    # Compiled where built: getconn() without a key (a borrow with no wait: psycopg2 never
    # waits) in a pool with a live link; the connection's tag is found in the link's table.
    return fast_method(
        "BORROW",
        original,
        _getconn,
        pool_link=LINK_ATTR,
        defaults=(None,),
        failed=failed,
        adopt=adopt,
        absorb=st.absorber("borrow"),
    )


def _refused(st: TrackingState, tracker: PoolTracker, pool: Any, exc: Exception) -> None:
    try:
        error_type = "pool_closed" if pool.closed else "exhausted"
        tracker.ledger.error(error_type, "borrow", exc)
    except Exception as inner:
        st.absorb(inner)


def _put_reason(pool: Any, conn: Any, *, close: bool) -> str | None:
    """What ``_putconn`` is about to do with ``conn``: the eviction reason, or None if kept.
    psycopg2's own order: the caller's ``close``, then a full pool, then the connection's state."""
    if close:
        return "other"  # the caller asked for it to be closed
    if len(pool._pool) >= pool.minconn:
        return "overflow"
    if conn.closed or conn.get_transaction_status() == _STATUS_UNKNOWN:
        return "broken"
    return None


def _putconn(original: Fn, st: TrackingState, pool_error: type[Exception]) -> Fn:
    def _putconn(
        self: Any,
        conn: Any = None,
        key: Any = None,
        close: bool = False,  # noqa: FBT001, FBT002 (AbstractConnectionPool._putconn's own)
    ) -> None:
        tracker = st.tracker_of(self)
        if tracker is None:
            return original(self, conn, key, close)  # type: ignore[no-any-return]
        cid: int | None = None
        reason: str | None = None
        try:
            # Only a put the pool will accept is recorded (it raises for closed/unknown ones).
            if not self.closed and id(conn) in self._rused:
                cid = tracker.conn_id(conn)
                tracker.release(cid)
                reason = _put_reason(self, conn, close=close)
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

    # Compiled where built: putconn(conn) with no key and close False. psycopg2 decides first;
    # the connection at the end of the idle list, one more than before, means kept (recorded in
    # C); anything else goes to ``settled``, in psycopg2's own order of reasons.
    return fast_method(
        "RELEASE",
        original,
        _putconn,
        pool_link=LINK_ATTR,
        kept=True,
        defaults=(None, False),
        failed=_make_put_failed(st, pool_error),
        adopt=_make_put_settled(st),
        absorb=st.absorber("return"),
    )


def _make_put_failed(st: TrackingState, pool_error: type[Exception]) -> Fn:
    def failed(pool: Any, conn: Any, _t0: None, exc: BaseException) -> None:
        # The compiled path ran the original first. A PoolError is a refusal (closed pool,
        # unknown connection): nothing happened. Anything else came from the rollback of an
        # accepted return, which leaves the connection keyed in ``_rused``.
        try:
            tracker = st.tracker_of(pool)
            if tracker is None or isinstance(exc, pool_error):
                return
            if not pool.closed and id(conn) in pool._rused:
                cid = tracker.conn_id(conn)
                tracker.release(cid)
                _reset_failed(st, tracker, conn, cid)
        except Exception as inner:
            st.absorb(inner)

    return failed


def _make_put_settled(st: TrackingState) -> Fn:
    def settled(pool: Any, conn: Any, before: int) -> None:
        # The compiled path after an accepted put it could not record itself: the connection
        # was let go (not at the end of the idle list), or poolmon did not know it yet.
        tracker = st.tracker_of(pool)
        if tracker is None:
            return
        cid = tracker.conn_id(conn)
        tracker.release(cid)
        idle = pool._pool
        if not (len(idle) == before + 1 and idle[before] is conn):
            reason = "overflow" if before >= pool.minconn else "broken"
            tracker.discard(conn, cid, reason)

    return settled


def _reset_failed(st: TrackingState, tracker: PoolTracker, conn: Any, cid: int) -> None:
    # The rollback of a returned connection raised: psycopg2 neither pools nor closes it.
    try:
        tracker.ledger.error("reset_failed", "reset", conn=cid)
        tracker.discard(conn, cid, "reset_failed")
    except Exception as exc:
        st.absorb(exc)


def _closeall(original: Fn, st: TrackingState) -> Fn:
    def _closeall(self: Any) -> None:
        tracker = st.tracker_of(self)
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
