"""Shim for psycopg2.pool: ``SimpleConnectionPool``, ``ThreadedConnectionPool`` (psycopg2 2.8/2.9).

Hook points. psycopg2 lends and takes back in its own Python code, keeping what it has lent in
the dict ``pool._used`` (key -> connection): ``_getconn`` assigns ``_used[key] = conn``,
``_putconn`` deletes it after it has decided what to do with the connection. poolmon puts a
lend table (:class:`poolmon.core.lane.LendTable`) in that dict's place, holding the same items,
so the assignment records the borrow and the deletion the return, with no wrapper around
``getconn``/``putconn`` (a wrapper's frame alone cost more than the overhead bar allows). The
compiled table (``poolmon._hot.LendTable``) records the common case on the lane itself; the rest
goes to the Python callbacks below, which are also the reference implementation. Besides: create
at ``_connect``; a refusal (``PoolError`` raised by ``_getconn``) at ``PoolError.__init__``;
close at ``_closeall``; new pools at ``AbstractConnectionPool.__init__``; pools that existed
before ``instrument()`` are found then (a scan of the collector's objects, once).

psycopg2 never waits: an exhausted pool raises ``PoolError`` at once (error type ``exhausted``).
It keeps at most ``minconn`` idle connections; a return beyond that closes the connection
(eviction reason ``overflow``). A connection returned closed or with a lost server is discarded
(``broken``); ``putconn(close=True)`` is the caller's decision (``other``). The reasons are
decided in psycopg2's own order: ``close=True`` first, then a full pool, then the connection's
state; the return is recorded after psycopg2 has decided (the connection back at the end of the
idle list means kept).

A rollback that raises inside ``putconn`` (the server went away while a transaction was open):
psycopg2 leaves the connection in ``_used``, where it holds a slot until ``closeall``; poolmon
shows the same, a connection still borrowed (a leak, once past the leak threshold).

Usage::

    import poolmon
    poolmon.instrument("psycopg2")
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import sys
import weakref
from collections.abc import Callable
from types import CodeType
from typing import Any, Final

from poolmon.backends.labels import label_psycopg2_pool
from poolmon.core.compiled import new_lend_table, new_link
from poolmon.core.identity import PoolIdentity, identity_from_libpq_dsn
from poolmon.core.registry import PoolRegistry
from poolmon.shims._psycopg_common import (
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

# Keyword arguments of psycopg2.connect() that are not connection parameters.
_NOT_PARAMS: Final = frozenset({"dsn", "connection_factory", "cursor_factory", "async", "async_"})
# How far up from a hook the pool method's frame can be: the hook's caller (compiled table),
# or one frame more (the Python table's __delitem__), with room for a subclass's override.
_FRAME_DEPTH: Final = 4


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
    # The pool Link the lend table reads: the lane, the idle list (AbstractConnectionPool.__init__
    # makes it once) and the tracker's id table, psycopg2's connections taking no attributes
    # (KeyedPoolTracker). Made once per tracker, when the pool is first tracked: the lend table
    # goes in at the same moment (always before the pool lends anything poolmon must see).
    assert isinstance(tracker, KeyedPoolTracker)
    link = new_link(tracker.lane, key=tracker, items=pool._pool, table=tracker.ids)
    _install_table(pool, tracker, link)
    return link


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
    nothing; an unsupported version is reported once and left untouched. Pools that exist
    already are found and tracked now, their idle and lent connections adopted.
    """

    def ready() -> bool:
        if not available():
            return False
        found = version if version is not None else _library_version()
        return supported(LIBRARY, SUPPORTED, found or "0")

    def patch() -> None:
        imported_before = "psycopg2.pool" in sys.modules
        from psycopg2 import pool as pool_mod

        _patch(_state, pool_mod)
        if imported_before:  # else no pool can exist yet
            _track_existing(_state, pool_mod.AbstractConnectionPool)

    return _state.install(registry, ready=ready, patch=patch)


def _patch(st: TrackingState, pool_mod: Any) -> None:
    base = pool_mod.AbstractConnectionPool
    wrap = st.patches.wrap
    wrap(base, "__init__", lambda orig: _init(orig, st))
    wrap(base, "_connect", lambda orig: _connect(orig, st))
    wrap(pool_mod.PoolError, "__init__", lambda orig: _refusal(orig, st, base))
    # SimpleConnectionPool's closeall alias holds the same function as _closeall; each gets its
    # own wrapper (ThreadedConnectionPool reaches the underscored one).
    wrap(base, "_closeall", lambda orig: _closeall(orig, st))
    wrap(pool_mod.SimpleConnectionPool, "closeall", lambda orig: _closeall(orig, st))


def uninstrument() -> None:
    """Restore every patched attribute to its original object, put each pool's own lent dict
    back (same object, same items) and forget the tracked pools."""
    _state.uninstall()


def is_instrumented() -> bool:
    return _state.installed


def _track_existing(st: TrackingState, base: type) -> None:
    """Track the pools made before ``instrument()``: idle connections adopted, lent ones adopted
    as borrowed. Under the pool's own lock where it has one, so no getconn/putconn runs while
    its lent dict is replaced."""
    pools = [obj for obj in gc.get_objects() if issubclass(type(obj), base)]
    for pool in pools:
        if getattr(pool, "closed", True):
            continue
        lock = getattr(pool, "_lock", None)
        with lock if lock is not None else contextlib.nullcontext():
            tracker = st.tracker_of(pool)
            if tracker is None:
                continue
            for conn in list(pool._used.values()):
                if tracker.known_id(conn) is None:
                    tracker.borrow(tracker.adopt(conn))


# ------------------------------------------------------------------------------------- hooks


def _install_table(pool: Any, tracker: PoolTracker, link: Any) -> None:
    """Put a lend table with ``pool._used``'s items in its place, and its undo on the tracker.
    Runs where nothing else touches the pool: in its __init__, in a _connect under its lock, or
    under its lock (:func:`_track_existing`)."""
    st = _state
    ref = weakref.ref(pool)  # the callbacks live in the pool's own table: no cycle through it

    def lent(conn: Any) -> None:
        cid = tracker.known_id(conn)
        if cid is not None:
            tracker.borrow(cid)
        # else: a connection ``_connect(key)`` is opening; its hook records create, then borrow

    def returned(conn: Any) -> None:
        pool = ref()
        if pool is None or pool.closed:
            return  # after closeall: its connections were evicted then
        cid = tracker.conn_id(conn)  # one poolmon never saw is adopted (no create)
        tracker.release(cid)
        idle = pool._pool
        if not (idle and idle[-1] is conn):  # not back at the idle end: let go
            tracker.discard(conn, cid, _let_go_reason(pool))

    own = pool._used
    table = new_lend_table(link, lent, returned, st.absorber("return"))
    dict.update(table, own)
    pool._used = table

    def undo() -> None:
        pool = ref()
        if pool is None or type(pool._used) is dict:
            return
        lock = getattr(pool, "_lock", None)
        with lock if lock is not None else contextlib.nullcontext():
            items = dict(pool._used)
            own.clear()
            own.update(items)
            pool._used = own

    tracker.undo.append(undo)


def _pool_frame(code: CodeType) -> Any:
    """The frame of the pool method with ``code`` that (indirectly) called the hook, or None.
    Rare paths only (a refusal, a connection let go)."""
    frame: Any = sys._getframe(2)
    for _ in range(_FRAME_DEPTH):
        if frame is None or frame.f_code is code:
            return frame
        frame = frame.f_back
    return None


def _let_go_reason(pool: Any) -> str:
    """Why ``_putconn`` let the connection go, in psycopg2's own order: the caller's ``close``
    (read from that call's frame), then a full pool (nothing was appended, so the idle count is
    the one it tested), then the connection's state."""
    frame = _pool_frame(_putconn_code())
    if frame is not None and frame.f_locals.get("close"):
        return "other"  # the caller asked for it to be closed
    if len(pool._pool) >= pool.minconn:
        return "overflow"
    return "broken"


@functools.cache
def _putconn_code() -> CodeType:
    from psycopg2 import pool as pool_mod

    code: CodeType = pool_mod.AbstractConnectionPool._putconn.__code__
    return code


def _init(original: Fn, st: TrackingState) -> Fn:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        st.tracker_of(self)  # from birth (with minconn 0, no _connect ran): the table goes in

    return __init__


def _connect(original: Fn, st: TrackingState) -> Fn:
    connect = sync_connect(original, st)

    def _connect(self: Any, key: Any = None) -> Any:
        conn = connect(self, key)
        if key is not None:  # lent as it was made: the borrow after its create
            try:
                tracker = st.tracker_of(self)
                cid = tracker.known_id(conn) if tracker is not None else None
                if tracker is not None and cid is not None:
                    tracker.borrow(cid)
            except Exception as exc:
                st.absorb(exc, "borrow")
        return conn

    return _connect


def _refusal(original: Fn, st: TrackingState, base: type) -> Fn:
    getconn_code = base._getconn.__code__  # type: ignore[attr-defined]

    def __init__(self: Exception, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            # Raised by _getconn (the frame that called PoolError(...)): a refused borrow.
            # Refused returns (a closed pool, a connection not from this pool) change nothing.
            frame = sys._getframe(1)
            if frame.f_code is not getconn_code:
                return
            pool = frame.f_locals.get("self")
            tracker = st.tracker_of(pool) if pool is not None else None
            if pool is not None and tracker is not None:
                error_type = "pool_closed" if pool.closed else "exhausted"
                tracker.ledger.error(error_type, "borrow", self)
        except Exception as exc:
            st.absorb(exc, "borrow")

    return __init__


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
