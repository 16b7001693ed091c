"""The wrappers the urllib3 shim installs. Each ``make_*`` takes the original and returns a closure
with the original's exact signature (a closure costs ~0.1 us per call; ``*args, **kwargs`` more).

Where events come from (urllib3 2.x, ``connectionpool.py`` and ``connection.py``):

* ``HTTPConnectionPool._get_conn`` -> **borrow** (and, with ``block=True`` and an empty queue,
  **wait** first). The queue holds ``None`` placeholders, so ``qsize()`` is not the idle count:
  the idle/used numbers come from events only. A connection object handed out without a socket
  (a fresh one, or one whose dropped socket ``_get_conn`` just closed) is borrowed at the
  ``connect()`` that follows, right after its **create**.
* ``HTTPConnectionPool._put_conn`` -> **return**, recorded *before* the original puts the object in
  the queue: once it is there another thread may borrow it at once.
* ``HTTPConnection.connect`` / ``HTTPSConnection.connect`` -> **create** (a new ledger id per
  connect: one object outlives several sockets).
* ``HTTPConnection.close`` of a socket poolmon saw open -> **evict**. The reason is read from the
  caller's code object, only on this rare path (``sys._getframe`` costs ~0.1 us, never paid per
  request): ``_get_conn`` (dropped keep-alive), ``urlopen`` (request failed), http.client's
  ``getresponse`` (the server said ``Connection: close``) and the response's error handling are
  ``broken``; ``_put_conn`` is ``overflow`` (the "Connection pool is full" discard) or
  ``pool_closed``; urllib3's pool-draining helper is ``pool_closed``; anything else ``other``.
* ``EmptyPoolError`` from a blocking ``_get_conn`` -> error ``timeout`` (phase ``wait``), or
  ``exhausted`` when the caller asked not to wait (``timeout <= 0``).

Every bookkeeping step sits in ``try/except Exception`` (free in CPython 3.11 until something
raises): a failure goes to ``STATE.absorb`` (counted in ``poolmon.shim.errors``, logged once), never
raised into urllib3. Exceptions of urllib3 itself are recorded and re-raised unchanged.

Where built, ``_get_conn`` and ``_put_conn`` are the compiled generic hooks
(:func:`poolmon.core.compiled.fast_method`, kinds ``BORROW`` and ``RELEASE``), told here which
attribute holds a connection's link; every call outside their common case (a blocking pool, a
connection without a live link, a closed lane) runs the Python wrappers below unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any, Final

from poolmon.core.compiled import fast_method
from poolmon.shims._attrs import pop_attr
from poolmon.shims._urllib3_state import LINK, PENDING, POOL_STATE, STATE, PoolState, attach, link

__all__ = [
    "PUT_CONN",
    "make_close_conn",
    "make_close_pool",
    "make_connect",
    "make_get_conn",
    "make_init",
    "make_put_conn",
]

#: Marker in the reason table: the caller is ``_put_conn``, the reason depends on its pool.
PUT_CONN: Final = "<put_conn>"

Method = Callable[..., Any]


def _ensure_state(pool: Any) -> PoolState:
    state: PoolState | None = getattr(pool, POOL_STATE, None)
    return state if state is not None else attach(pool)


def _borrow_unlinked(pool: Any, conn: Any, waited: float, *, queued: bool) -> None:
    """The slow borrow path: ``conn`` has no socket poolmon knows."""
    state = _ensure_state(pool)
    if getattr(conn, "sock", None) is not None:
        # Opened before instrumentation (or by the application itself): adopt it.
        ledger = state.ledger
        conn_id = ledger.adopt()
        link(state, conn, conn_id)
        state.borrow(conn_id, ledger.now() - waited if waited else None, queued=queued)
    else:
        # No socket yet: urllib3 connects lazily, on the first request.
        setattr(conn, PENDING, (state, waited, queued))


def _borrow_failed(
    pool: Any, t0: float | None, *, queued: bool, fail_fast: bool, exc: BaseException
) -> None:
    """Record why ``_get_conn`` raised (the exception itself is re-raised by the caller)."""
    from urllib3.exceptions import ClosedPoolError, EmptyPoolError

    ledger = _ensure_state(pool).ledger
    phase = "wait" if queued else "borrow"
    if isinstance(exc, EmptyPoolError):
        if fail_fast and not queued:
            ledger.error("exhausted", "borrow", exc)
            return
        if not queued:
            ledger.wait()  # it blocked although the queue looked non-empty: keep wait -> timeout
        ledger.timeout(t0 if t0 is not None else ledger.now(), exc)
    elif isinstance(exc, ClosedPoolError):
        ledger.error("pool_closed", phase, exc)
    elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
        ledger.error("cancelled", phase, exc)
    else:
        ledger.error("other", phase, exc)


def make_init(original: Method) -> Method:
    """``HTTPConnectionPool.__init__``: register the pool as soon as it exists, so its counters
    are exported at zero before its first request."""
    return STATE.after(original, attach, "attach")


def make_get_conn(original: Method) -> Method:
    def _get_conn(self: Any, timeout: float | None = None) -> Any:
        if self.block:
            return _get_conn_blocking(self, timeout)
        try:
            conn = original(self, timeout)
        except BaseException as exc:
            _get_conn_failed(self, None, None, exc)
            raise
        try:
            # The common case: a linked idle connection (a non-blocking pool never waits),
            # recorded by the ledger (its lock-free lane while open: poolmon.core.lane).
            conn_link = conn._poolmon_link  # LINK, as a plain attribute read: fastest
            conn_link.key.borrow(conn_link.cid)
        except AttributeError as exc:
            try:
                if hasattr(conn, LINK):
                    STATE.absorb(exc, "borrow")  # linked: the failure is ours
                else:
                    _borrow_unlinked(self, conn, 0.0, queued=False)
            except Exception as inner:
                STATE.absorb(inner, "borrow")
        except Exception as exc:
            STATE.absorb(exc, "borrow")
        return conn

    def _get_conn_blocking(self: Any, timeout: float | None) -> Any:
        state, t0, queued, fail_fast = _blocking_start(self, timeout)
        try:
            conn = original(self, timeout)
        except BaseException as exc:
            try:
                _borrow_failed(self, t0, queued=queued, fail_fast=fail_fast, exc=exc)
            except Exception as inner:
                STATE.absorb(inner, "borrow")
            raise
        try:
            if state is not None and t0 is not None:
                conn_link = getattr(conn, LINK, None)
                if conn_link is not None:
                    conn_link.key.borrow(conn_link.cid, t0, queued=queued)
                else:
                    _borrow_unlinked(self, conn, state.ledger.now() - t0, queued=queued)
        except Exception as exc:
            STATE.absorb(exc, "borrow")
        return conn

    # The compiled fast path (poolmon._hot) where built: non-blocking pools (``block`` falsy),
    # connections with a live link (an open, current lane); every other call goes to
    # ``_get_conn`` above unchanged, and a connection lent without one to ``_adopt_borrowed``.
    return fast_method(
        "BORROW",
        original,
        _get_conn,
        unless="block",
        conn_link=LINK,
        failed=_get_conn_failed,
        adopt=_adopt_borrowed,
        absorb=STATE.absorber("borrow"),
    )


def _blocking_start(
    pool: Any, timeout: float | None
) -> tuple[PoolState | None, float | None, bool, bool]:
    """Before a blocking ``_get_conn``: the pool's state, t0, whether the caller queued (a wait
    recorded) and whether it fails fast; whatever was found before a failure (absorbed)."""
    queued = False
    fail_fast = False
    t0: float | None = None
    state: PoolState | None = None
    try:
        state = _ensure_state(pool)
        ledger = state.ledger
        t0 = ledger.now()
        fail_fast = timeout is not None and timeout <= 0
        queue = pool.pool
        # A racy peek (the queue's own lock is not held across the get): if the queue fills
        # in between, the caller "waited" ~0 s; if it empties in between, the caller blocks
        # unannounced and a timeout then records its wait first. Either way every wait is
        # resolved exactly once, so the pending gauge cannot drift.
        if not fail_fast and queue is not None and queue.empty():
            ledger.wait()
            queued = True
    except Exception as exc:
        STATE.absorb(exc, "borrow")
    return state, t0, queued, fail_fast


def _get_conn_failed(pool: Any, _conn: None, _t0: None, exc: BaseException) -> None:
    """A non-blocking ``_get_conn`` raised (it never waits: no t0, no queueing)."""
    try:
        _borrow_failed(pool, None, queued=False, fail_fast=False, exc=exc)
    except Exception as inner:
        STATE.absorb(inner, "borrow")


def _adopt_borrowed(pool: Any, conn: Any, _t0: None) -> None:
    """A non-blocking ``_get_conn`` lent ``conn``, which has no live link."""
    conn_link = getattr(conn, LINK, None)
    if conn_link is not None:
        conn_link.key.borrow(conn_link.cid)  # linked, the lane closed: the ledger's locked path
    else:
        _borrow_unlinked(pool, conn, 0.0, queued=False)


def make_put_conn(original: Method) -> Method:
    def _put_conn(self: Any, conn: Any) -> None:
        if conn is not None:
            try:
                conn_link = conn._poolmon_link  # LINK
                conn_link.key.release(conn_link.cid)  # the ledger's (its lane while open)
            except AttributeError as exc:
                try:
                    if hasattr(conn, LINK):
                        STATE.absorb(exc, "return")  # linked: the failure is ours
                    else:
                        pop_attr(conn, PENDING)
                except Exception as inner:
                    STATE.absorb(inner, "return")
            except Exception as exc:
                STATE.absorb(exc, "return")
        original(self, conn)

    # The compiled fast path: exactly (self, conn), conn not None, with a live link: the return
    # recorded before the original queues it; every other call goes to ``_put_conn`` above.
    return fast_method(
        "RELEASE",
        original,
        _put_conn,
        conn_link=LINK,
        defaults=(),
        absorb=STATE.absorber("return"),
    )


def make_close_pool(original: Method) -> Method:
    """``HTTPConnectionPool.close``: urllib3 closes the idle connections (each one evicted with
    reason ``pool_closed``); borrowed ones are closed when returned. The ledger's close event
    follows the last of them."""

    def close(self: Any) -> None:
        try:
            original(self)
        finally:
            try:
                state: PoolState | None = getattr(self, POOL_STATE, None)
                if state is not None:
                    state.closing = True
                    state.maybe_close()
            except Exception as exc:
                STATE.absorb(exc, "close_pool")

    return close


def make_connect(original: Method) -> Method:
    """``HTTPConnection.connect`` / ``HTTPSConnection.connect``: a create, then the deferred borrow.

    Popping the pending mark first also guards against re-entry: a subclass whose ``connect``
    calls ``super().connect()`` runs two wrappers, and only the outer one finds the mark.
    """

    def connect(self: Any) -> None:
        pending = pop_attr(self, PENDING)
        if pending is None:
            original(self)  # not borrowed from a pool: not a pool connection
            return
        state, waited, queued = pending
        ledger = state.ledger
        t0 = ledger.now()
        try:
            original(self)
        except BaseException as exc:
            try:
                ledger.create_failed(t0, exc)
                if queued:
                    # The caller queued, got a slot, and its connection could not be opened: its
                    # wait ends in failure (the create event above already counts create_failed).
                    ledger.error("other", "wait", exc)
            except Exception as inner:
                STATE.absorb(inner, "connect")
            raise
        try:
            conn_id = ledger.create(t0)
            link(state, self, conn_id)
            state.borrow(conn_id, ledger.now() - waited if waited else None, queued=queued)
        except Exception as exc:
            STATE.absorb(exc, "connect")

    return connect


def make_close_conn(original: Method, reasons: Mapping[CodeType, str]) -> Method:
    """``HTTPConnection.close``: evict the socket poolmon knows, if any."""

    def close(self: Any) -> None:
        conn_link = pop_attr(self, LINK)
        if conn_link is None:
            original(self)
            return
        try:
            original(self)
        finally:
            try:
                state: PoolState = conn_link.key
                state.ledger.evict(conn_link.cid, _reason(sys._getframe(1), reasons))
                # Still borrowed by whoever closed it: a reconnect in the same borrow (a caller
                # driving the connection itself) is a create followed by a borrow.
                setattr(self, PENDING, (state, 0.0, False))
                if state.closing:
                    state.maybe_close()
            except Exception as exc:
                STATE.absorb(exc, "close")

    return close


def _reason(frame: FrameType | None, reasons: Mapping[CodeType, str]) -> str:
    if frame is None:
        return "other"
    reason = reasons.get(frame.f_code, "other")
    if reason == PUT_CONN:
        pool = frame.f_locals.get("self")
        return "pool_closed" if getattr(pool, "pool", None) is None else "overflow"
    return reason
