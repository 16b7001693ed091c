"""Wrappers for psycopg_pool's asyncio pools (``AsyncConnectionPool``, ``AsyncNullConnectionPool``).

The same events in the same order as the threaded wrappers (see ``_psycopg_sync``); each wrapper
is a coroutine function where the original is one. Bookkeeping runs between awaits, so on one
event loop it is never interleaved with the pool's other tasks; the ledger's own lock covers
pools shared with threads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from poolmon.shims._psycopg_common import CONN_ATTR, TRACKER_ATTR, TrackingState
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

__all__ = ["patch_async"]

Fn = Callable[..., Any]


def patch_async(st: TrackingState) -> None:
    """Install the wrappers on psycopg_pool's asyncio classes."""
    from psycopg_pool import pool_async
    from psycopg_pool.null_pool_async import AsyncNullConnectionPool

    cls = pool_async.AsyncConnectionPool
    wrap = st.patches.wrap
    wrap(cls, "_open", lambda orig: _open(orig, st))
    wrap(cls, "_connect", lambda orig: _connect(orig, st))
    wrap(cls, "getconn", lambda orig: _getconn(orig, st))
    wrap(cls, "_check_connection", lambda orig: _check_connection(orig, st))
    wrap(cls, "_close_connection", lambda orig: _close_connection(orig, st))
    wrap(cls, "run_task", lambda orig: wrap_run_task(orig, st))
    wrap(cls, "check_connection", lambda orig: _check_connection_static(orig, st))
    wrap(cls, "close", lambda orig: _close(orig, st))
    wrap(cls, "resize", lambda orig: _resize(orig, st))
    wrap(AsyncNullConnectionPool, "resize", lambda orig: _resize(orig, st))
    wrap(pool_async.WaitingClient, "wait", lambda orig: _waiting_client_wait(orig, st))


def _open(original: Fn, st: TrackingState) -> Fn:
    def _open(self: Any) -> None:
        st.track(self)
        original(self)

    return _open


def _connect(original: Fn, st: TrackingState) -> Fn:
    async def _connect(self: Any, timeout: float | None = None) -> Any:
        tracker = st.tracker_of(self)
        if tracker is None:
            return await original(self, timeout)
        t0 = tracker.now()
        try:
            conn = await original(self, timeout)
        except Exception as exc:
            st.connect_failed(tracker, t0, exc)
            raise
        st.connected(tracker, t0, conn)
        return conn

    return _connect


def _getconn(original: Fn, st: TrackingState) -> Fn:
    async def getconn(self: Any, timeout: float | None = None) -> Any:
        tracker = st.tracker_of(self)
        if tracker is None:
            return await original(self, timeout)
        cell = [False]  # see the sync wrapper: set once by the WaitingClient.wait wrapper
        t0 = tracker.now()
        try:
            conn = await original(self, timeout)
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
    return getconn


def _check_connection(original: Fn, st: TrackingState) -> Fn:
    async def _check_connection(self: Any, conn: Any) -> None:
        # Without a ``check=`` callback the original only returns (see the sync wrapper): answer
        # as it would, without a second coroutine on every getconn.
        if not self._check:
            return None
        tracker = getattr(self, TRACKER_ATTR, None)
        if tracker is None:
            return await original(self, conn)  # type: ignore[no-any-return]
        t0 = tracker.now()
        try:
            await original(self, conn)
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
    async def _close_connection(self: Any, conn: Any) -> None:
        # Runs up to the first await inside the caller's step, so frame 1 is the calling
        # coroutine (the method whose name gives the eviction reason).
        try:
            tracker = getattr(self, TRACKER_ATTR, None)
            if tracker is not None:
                cid = tracker.known_id(conn)
                if cid is not None:
                    reason = close_reason(self, conn, sys._getframe(1).f_code.co_name)
                    if reason == "reset_failed":
                        tracker.ledger.error("reset_failed", "reset", conn=cid)
                    tracker.evict(cid, reason)
        except Exception as exc:
            st.absorb(exc)
        return await original(self, conn)  # type: ignore[no-any-return]

    return _close_connection


def _check_connection_static(original: Fn, st: TrackingState) -> Fn:
    async def check_connection(conn: Any) -> None:
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
            return await original(conn)  # type: ignore[no-any-return]
        t0 = tracker.now()
        try:
            await original(conn)
        except BaseException:
            record_pool_check(st, tracker, conn, t0, ok=False)
            raise
        record_pool_check(st, tracker, conn, t0, ok=True)
        return None

    return check_connection


def _close(original: Fn, st: TrackingState) -> Fn:
    async def close(self: Any, timeout: float = 5.0) -> None:
        await original(self, timeout)
        try:
            closed(self)
        except Exception as exc:
            st.absorb(exc, "close")
        return None

    return close


def _resize(original: Fn, st: TrackingState) -> Fn:
    async def resize(self: Any, min_size: int, max_size: int | None = None) -> None:
        await original(self, min_size, max_size)
        try:
            st.set_limits(self)
        except Exception as exc:
            st.absorb(exc, "resize")
        return None

    return resize


def _waiting_client_wait(original: Fn, st: TrackingState) -> Fn:
    async def wait(self: Any, timeout: float) -> Any:
        try:
            found = waiting_call(sys._getframe(1))
            if found is not None and not found[1][0]:
                found[1][0] = True
                found[0].ledger.wait()
        except Exception as exc:
            st.absorb(exc)
        return await original(self, timeout)

    return wait
