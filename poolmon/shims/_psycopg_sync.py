"""Wrappers for psycopg_pool's threaded pools (``ConnectionPool``, ``NullConnectionPool``).

Event order follows what the pool does: ``create`` when ``_connect`` returns; ``wait`` when a
caller enters ``WaitingClient.wait``; ``borrow`` when ``getconn`` returns; ``return`` at the
first step of ``putconn``, its ownership check (``_psycopg_base``: so a reset failure or an
expiry inside ``putconn`` is an ``evict`` after the ``return``, and a waiter handed the
connection inside ``putconn`` borrows it after);
``evict`` when ``_close_connection`` is called, or after ``putconn`` for a broken connection,
which psycopg_pool drops without closing.

Every wrapper keeps the original's exact signature, return value, exceptions and blocking; its
own bookkeeping is guarded and absorbed (counted as ``poolmon.shim.errors``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from poolmon.core.compiled import fast_method
from poolmon.shims._psycopg_common import (
    CONN_ATTR,
    LINK_ATTR,
    TRACKER_ATTR,
    TrackingState,
    sync_connect,
)
from poolmon.shims._psycopg_rules import (
    GETCONN_CODES,
    close_reason,
    closed,
    record_check_failed,
    record_getconn_failed,
    record_pool_check,
    waiting_call,
    wrap_run_task,
)

__all__ = ["patch_sync"]

Fn = Callable[..., Any]


def patch_sync(st: TrackingState) -> None:
    """Install the wrappers on psycopg_pool's sync classes."""
    from psycopg_pool import pool as pool_mod
    from psycopg_pool.null_pool import NullConnectionPool

    cls = pool_mod.ConnectionPool
    wrap = st.patches.wrap
    wrap(cls, "_open", lambda orig: _open(orig, st))
    wrap(cls, "_connect", lambda orig: sync_connect(orig, st))
    wrap(cls, "getconn", lambda orig: _getconn(orig, st))
    wrap(cls, "_check_connection", lambda orig: _check_connection(orig, st))
    wrap(cls, "_close_connection", lambda orig: _close_connection(orig, st))
    wrap(cls, "run_task", lambda orig: wrap_run_task(orig, st))
    wrap(cls, "check_connection", lambda orig: _check_connection_static(orig, st))
    wrap(cls, "close", lambda orig: _close(orig, st))
    wrap(cls, "resize", lambda orig: _resize(orig, st))
    wrap(NullConnectionPool, "resize", lambda orig: _resize(orig, st))
    wrap(pool_mod.WaitingClient, "wait", lambda orig: _waiting_client_wait(orig, st))


def _open(original: Fn, st: TrackingState) -> Fn:
    def _open(self: Any) -> None:
        # Register before the workers start connecting: the pool shows (at zero) from now on.
        st.track(self)
        original(self)

    return _open


def _getconn(original: Fn, st: TrackingState) -> Fn:
    def getconn(self: Any, timeout: float | None = None) -> Any:
        tracker = st.tracker_of(self)
        if tracker is None:
            return original(self, timeout)
        # Set to True by the WaitingClient.wait wrapper (found through this frame) the first
        # time this call queues: one caller, one wait, however often the check loop re-queues.
        cell = [False]
        t0 = tracker.now()
        try:
            conn = original(self, timeout)
        except BaseException as exc:
            record_getconn_failed(st, tracker, t0, queued=cell[0], exc=exc)
            raise
        try:
            # The lane protocol (core.lane).
            tracker.borrow(tracker.conn_id(conn), t0, queued=cell[0])
        except Exception as exc:
            st.absorb(exc, "borrow")
        return conn

    GETCONN_CODES.add(getconn.__code__)

    # The compiled hook calls these with the pool (it ran the original first).
    def failed(pool: Any, _conn: None, t0: float, exc: BaseException) -> None:
        tracker = getattr(pool, TRACKER_ATTR, None)
        if tracker is not None:
            record_getconn_failed(st, tracker, t0, queued=False, exc=exc)

    def adopt(pool: Any, conn: Any, t0: float) -> None:
        tracker = getattr(pool, TRACKER_ATTR, None)
        if tracker is not None:
            tracker.borrow(tracker.conn_id(conn), t0)

    # The compiled fast path (poolmon._hot) where built: it takes only calls that find an idle
    # connection in a pool with a live link, times them from that link's lane, and records a
    # connection whose tag names the pool's tracker; every other call goes to ``getconn`` above.
    return fast_method(
        "BORROW",
        original,
        getconn,
        pool_link=LINK_ATTR,
        need_items=True,
        timed=True,
        conn_link=CONN_ATTR,
        match_key=True,
        failed=failed,
        adopt=adopt,
        absorb=st.absorber("borrow"),
    )


def _check_connection(original: Fn, st: TrackingState) -> Fn:
    def _check_connection(self: Any, conn: Any) -> None:
        # Called on every getconn. Without a ``check=`` callback the original only returns
        # (its first statement, in every supported release): give that answer here, in one
        # frame, as the original would. A Python frame on purpose: the interpreter specialises
        # its ``self._check`` read, where a compiled hook's generic attribute lookup misses
        # CPython's type cache under a real workload (measured: ~3x the instructions).
        if not self._check:
            return None
        tracker = getattr(self, TRACKER_ATTR, None)
        if tracker is None:
            return original(self, conn)  # type: ignore[no-any-return]
        t0 = tracker.now()
        try:
            original(self, conn)
        except BaseException as exc:
            record_check_failed(st, tracker, conn, t0, exc)
            raise
        try:
            tracker.ledger.validate(tracker.conn_id(conn), t0, ok=True)
        except Exception as exc:
            st.absorb(exc)
        return None

    return _check_connection


def _close_connection(original: Fn, st: TrackingState) -> Fn:
    def _close_connection(self: Any, conn: Any) -> None:
        try:
            tracker = getattr(self, TRACKER_ATTR, None)
            if tracker is not None:
                cid = tracker.known_id(conn)
                if cid is not None:
                    caller = sys._getframe(1).f_code.co_name
                    reason = close_reason(self, conn, caller)
                    if reason == "reset_failed":
                        tracker.ledger.error("reset_failed", "reset", conn=cid)
                    tracker.evict(cid, reason)
        except Exception as exc:
            st.absorb(exc)
        return original(self, conn)  # type: ignore[no-any-return]

    return _close_connection


def _check_connection_static(original: Fn, st: TrackingState) -> Fn:
    def check_connection(conn: Any) -> None:
        # pool.check() tests each idle connection through this staticmethod and drops (never
        # closes) the ones that fail, then starts a replacement: record the validation here,
        # before the replacement's create. As a ``check=`` callback it is reached through
        # _check_connection, which records it already.
        tracker = None
        try:
            if sys._getframe(1).f_code.co_name == "check":
                tag = getattr(conn, CONN_ATTR, None)
                tracker = tag.key if tag is not None and tag.key.state is st else None
        except Exception as exc:
            st.absorb(exc)
        if tracker is None:
            return original(conn)  # type: ignore[no-any-return]
        t0 = tracker.now()
        try:
            original(conn)
        except BaseException:
            record_pool_check(st, tracker, conn, t0, ok=False)
            raise
        record_pool_check(st, tracker, conn, t0, ok=True)
        return None

    return check_connection


def _close(original: Fn, st: TrackingState) -> Fn:
    return st.after(original, closed, "close")


def _resize(original: Fn, st: TrackingState) -> Fn:
    return st.after(original, st.set_limits, "resize")


def _waiting_client_wait(original: Fn, st: TrackingState) -> Fn:
    def wait(self: Any, timeout: float) -> Any:
        try:
            found = waiting_call(sys._getframe(1))
            if found is not None and not found[1][0]:
                found[1][0] = True
                found[0].ledger.wait()
        except Exception as exc:
            st.absorb(exc)
        return original(self, timeout)

    return wait
