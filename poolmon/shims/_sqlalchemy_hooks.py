"""Wrappers for SQLAlchemy's pools (``sqlalchemy.pool``), sync and asyncio.

Hook points (SQLAlchemy 2.1, read from ``sqlalchemy/pool/base.py`` and ``impl.py``;
docs/shims-sqlalchemy.md has the full table):

* borrow: ``Pool.connect`` (``SingletonThreadPool.connect`` overrides it): everything a checkout
  does (queue get, overflow create, recycle, pre-ping, the ``checkout`` event) happens inside, so
  the borrow is recorded with the connection the caller really gets;
* wait: QueuePool (and ``AsyncAdaptedQueuePool``) with an empty idle queue and no overflow left
  (``_overflow >= _max_overflow``): the caller blocks in ``_pool.get(True, timeout)``;
  ``sqlalchemy.exc.TimeoutError`` then is ``timeout``;
* return: each class's ``_do_return_conn``, after reset-on-return and the ``checkin`` event,
  just before the record enters the idle queue (or is closed: NullPool, a full QueuePool);
* create: ``_ConnectionRecord.__connect`` (the DBAPI connect plus the ``connect`` event that
  initialises the dialect on the first connection);
* evict: ``_ConnectionRecord.__close``, reason from its caller (:func:`_close_reason`), and
  ``_ConnectionFairy.detach`` (``detached``; ``leaked`` when garbage collection detaches a
  connection an asyncio caller never returned);
* validate: ``_do_ping_w_event`` of the dialect (``pool_pre_ping``).

Reasons come from the calling function's code object, read only on evictions (rare): the
compiled hooks cannot set a context, and the callers are few and fixed in every 2.1 release.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from poolmon.core.compiled import fast_method
from poolmon.shims._patch import PatchSet
from poolmon.shims._sqlalchemy_state import (
    BY_DBAPI,
    FAIRY_LINK,
    PING_FAILED,
    POOL_LEDGER,
    POOL_LINK,
    REC_LINK,
    STATE,
    adopt_record,
    attach,
    evict_record,
    link_record,
    live_link,
    stamp_engine,
)

__all__ = ["patch"]

Fn = Callable[..., Any]

#: Filled by :func:`patch` from the originals: caller code object -> eviction reason.
_CLOSE_CALLERS: dict[CodeType, str] = {}
_CODES: dict[str, CodeType] = {}
#: sqlalchemy.exc.DisconnectionError (filled by :func:`patch`).
_DISCONNECT: list[type[BaseException]] = []


def _ledger(pool: Any) -> Any:
    ledger = getattr(pool, POOL_LEDGER, None)
    if ledger is None:
        ledger = attach(pool)
    return ledger


# ---------------------------------------------------------------------------- borrow and wait


def _borrowed(ledger: Any, fairy: Any, t0: float | None, *, queued: bool) -> None:
    try:
        if fairy._counter != 1:
            return  # SingletonThreadPool handing its thread's checkout out again: no new borrow
        record = fairy._connection_record
        link = live_link(record, ledger)
        cid = link.cid if link is not None else adopt_record(ledger, record)
        if cid is None:
            return
        if cid in ledger.lane.borrowed:
            return  # StaticPool lends its one connection to several callers at once
        ledger.borrow(cid, t0, queued=queued)
    except Exception as exc:
        STATE.absorb(exc, "connect")


def _will_wait(pool: Any) -> bool:
    # QueuePool._do_get: it blocks on the queue exactly when the overflow is used up.
    limit = getattr(pool, "_max_overflow", -1)
    return bool(limit > -1 and pool._overflow >= limit and pool._pool.empty())


def _connect_failed(
    ledger: Any, exc: BaseException, t0: float | None, *, queued: bool, timeout_error: type
) -> None:
    try:
        if isinstance(exc, timeout_error):
            if not queued:
                ledger.wait()  # the queue drained after our look: the caller did wait
            ledger.timeout(ledger.now() if t0 is None else t0, exc)
        elif queued:
            # It got a slot but connecting failed (create_failed is recorded), or it was
            # interrupted: resolve its wait so pending returns to zero.
            kind = "other" if isinstance(exc, Exception) else "cancelled"
            ledger.error(kind, "wait", exc)
    except Exception as inner:
        STATE.absorb(inner, "connect")


def _make_connect(original: Fn, owner: type, timeout_error: type, *, compiled: bool) -> Fn:
    def connect(self: Any) -> Any:
        ledger = _ledger(self)
        if not ledger:
            return original(self)
        queued = False
        t0 = None
        try:
            t0 = ledger.now()
            if _will_wait(self):
                queued = True
                ledger.wait()
        except Exception as exc:
            STATE.absorb(exc, "connect")
        try:
            fairy = original(self)
        except BaseException as exc:
            _connect_failed(ledger, exc, t0, queued=queued, timeout_error=timeout_error)
            raise
        _borrowed(ledger, fairy, t0 if queued else None, queued=queued)
        return fairy

    if not compiled:
        return connect

    def failed(pool: Any, _conn: None, _t0: None, exc: BaseException) -> None:
        ledger = getattr(pool, POOL_LEDGER, None)
        if ledger:
            _connect_failed(ledger, exc, None, queued=False, timeout_error=timeout_error)

    def adopt(pool: Any, fairy: Any, _t0: None) -> None:
        ledger = getattr(pool, POOL_LEDGER, None)
        if ledger:
            _borrowed(ledger, fairy, None, queued=False)

    # Compiled where built: ``connect()`` on exactly ``owner`` with an idle connection in the
    # queue (the pool link's items) cannot wait; the fairy's record link (read through the
    # fairy's class property) is recorded in C. Everything else goes to ``connect`` above.
    return fast_method(
        "BORROW",
        original,
        connect,
        exact_type=owner,
        pool_link=POOL_LINK,
        need_items=True,
        conn_link=FAIRY_LINK,
        defaults=(),
        failed=failed,
        adopt=adopt,
        absorb=STATE.absorber("connect"),
    )


# ---------------------------------------------------------------------------- return


def _make_return(original: Fn, owner: type) -> Fn:
    def do_return_conn(self: Any, record: Any) -> None:
        # Recorded before the original puts the record in the queue (or closes it: return, then
        # evict, in that order); reset and the checkin event have run already.
        try:
            link = live_link(record)
            if link is not None:
                link.key.release(link.cid)
        except Exception as exc:
            STATE.absorb(exc, "return")
        original(self, record)

    return fast_method(
        "RELEASE",
        original,
        do_return_conn,
        exact_type=owner,
        conn_link=REC_LINK,
        defaults=(),
        absorb=STATE.absorber("return"),
    )


# ---------------------------------------------------------------------------- create


def _make_record_connect(original: Fn) -> Fn:
    def connect(self: Any) -> None:
        pool = self._ConnectionRecord__pool
        try:
            ledger = _ledger(pool)
        except Exception as exc:
            STATE.absorb(exc, "create")
            ledger = None
        if not ledger:
            return original(self)  # type: ignore[no-any-return]
        t0 = ledger.now()
        try:
            original(self)
        except BaseException as exc:
            STATE.create_failed(ledger, t0, exc)
            raise
        try:
            if self.dbapi_connection is not None:
                link_record(self, ledger, ledger.create(t0))
        except Exception as exc:
            STATE.absorb(exc, "create")

    return connect


# ---------------------------------------------------------------------------- evict


def _invalidate_reason(frame: FrameType, record: Any) -> str:
    if getattr(record, PING_FAILED, False):
        return "failed_validation"
    error = frame.f_locals.get("e")
    if error is not None and _DISCONNECT and isinstance(error, _DISCONNECT[0]):
        return "failed_validation"  # pre-ping or a checkout listener said the connection is gone
    caller = frame.f_back
    while caller is not None and caller.f_code is _CODES["_checkin_failed"]:
        caller = caller.f_back
    if caller is not None and caller.f_code is _CODES["_finalize_fairy"]:
        return "reset_failed"
    return "broken" if error is not None else "other"


def _close_reason(record: Any, *, terminate: bool, frame: FrameType | None) -> str:
    if frame is None:
        return "other"
    code = frame.f_code
    if code is _CODES["invalidate"]:
        return _invalidate_reason(frame, record)
    if code is _CODES["get_connection"]:
        # Recycled on checkout: pool_recycle, or the pool invalidated older connections after
        # a disconnect, or a soft invalidation.
        import time

        pool = record._ConnectionRecord__pool
        if pool._recycle > -1 and time.time() - record.starttime > pool._recycle:
            return "max_lifetime"
        if pool._invalidate_time > record.starttime:
            return "broken"
        return "other"
    if code is _CODES["close"] and frame.f_back is not None:
        return _CLOSE_CALLERS.get(frame.f_back.f_code, "other")
    return "other"


def _make_record_close(original: Fn) -> Fn:
    def close(self: Any, *, terminate: bool = False) -> None:
        try:
            link = live_link(self)
            if link is not None and self.dbapi_connection is not None:
                reason = _close_reason(self, terminate=terminate, frame=sys._getframe(1))
                evict_record(self, link, reason)
        except Exception as exc:
            STATE.absorb(exc, "close")
        original(self, terminate=terminate)

    return close


def _make_detach(original: Fn) -> Fn:
    def detach(self: Any) -> None:
        try:
            record = self._connection_record
            link = None if record is None else live_link(record)
            if link is not None and record.dbapi_connection is not None:
                caller = sys._getframe(1).f_code
                reason = "leaked" if caller is _CODES["_finalize_fairy"] else "detached"
                evict_record(record, link, reason)
        except Exception as exc:
            STATE.absorb(exc, "detach")
        original(self)

    return detach


# ---------------------------------------------------------------------------- validate


def _make_ping(original: Fn) -> Fn:
    def do_ping_w_event(self: Any, dbapi_connection: Any) -> bool:
        entry = BY_DBAPI.get(id(dbapi_connection))
        if entry is None or entry[0] is not dbapi_connection:
            return original(self, dbapi_connection)  # type: ignore[no-any-return]
        record = entry[1]
        link = live_link(record)
        if link is None:
            return original(self, dbapi_connection)  # type: ignore[no-any-return]
        ledger = link.key
        t0 = ledger.now()
        ok = False
        try:
            ok = bool(original(self, dbapi_connection))
            return ok
        finally:
            try:
                ledger.validate(link.cid, t0, ok=ok)
                if not ok:
                    setattr(record, PING_FAILED, True)
            except Exception as exc:
                STATE.absorb(exc, "pre_ping")

    return do_ping_w_event


# ---------------------------------------------------------------------------- engines


def _make_engine_init(original: Fn) -> Fn:
    return STATE.after(original, stamp_engine, "engine")


# ---------------------------------------------------------------------------- installing


def _connect_factory(owner: type, timeout_error: type, *, fast: bool) -> Callable[[Fn], Fn]:
    return lambda original: _make_connect(original, owner, timeout_error, compiled=fast)


def _return_factory(owner: type) -> Callable[[Fn], Fn]:
    return lambda original: _make_return(original, owner)


def patch(patches: PatchSet, *, compiled: bool) -> None:
    """Install every wrapper into ``patches`` (``compiled``: use the compiled borrow/return)."""
    import sqlalchemy.engine.base as engine_base
    import sqlalchemy.engine.default as engine_default
    import sqlalchemy.exc as sa_exc
    import sqlalchemy.pool.base as base
    import sqlalchemy.pool.impl as impl

    record_cls, fairy_cls = base._ConnectionRecord, base._ConnectionFairy
    _CODES.update(
        invalidate=record_cls.invalidate.__code__,
        get_connection=record_cls.get_connection.__code__,
        close=record_cls.close.__code__,
        _checkin_failed=record_cls._checkin_failed.__code__,
        _finalize_fairy=base._finalize_fairy.__code__,
    )
    _DISCONNECT[:] = [sa_exc.DisconnectionError]
    _CLOSE_CALLERS.clear()
    overflowing: tuple[Any, ...] = (impl.QueuePool, impl.NullPool)
    for klass in overflowing:
        _CLOSE_CALLERS[vars(klass)["_do_return_conn"].__code__] = "overflow"
    _CLOSE_CALLERS[vars(impl.SingletonThreadPool)["_cleanup"].__code__] = "overflow"
    disposing: tuple[Any, ...] = (
        impl.QueuePool,
        impl.SingletonThreadPool,
        impl.StaticPool,
        impl.AssertionPool,
    )
    for klass in disposing:
        _CLOSE_CALLERS[vars(klass)["dispose"].__code__] = "pool_closed"

    timeout_error = sa_exc.TimeoutError
    # connect: the asyncio queue pool first (it inherits connect: it gets its own attribute),
    # then QueuePool, then Pool for every other class, and SingletonThreadPool's own override.
    connecting: tuple[tuple[Any, bool], ...] = (
        (impl.AsyncAdaptedQueuePool, compiled),
        (impl.QueuePool, compiled),
        (base.Pool, False),
        (impl.SingletonThreadPool, False),
    )
    for klass, fast in connecting:
        patches.wrap(klass, "connect", _connect_factory(klass, timeout_error, fast=fast))
    returning: tuple[Any, ...] = (
        impl.AsyncAdaptedQueuePool,
        impl.QueuePool,
        impl.NullPool,
        impl.SingletonThreadPool,
        impl.StaticPool,
        impl.AssertionPool,
    )
    for klass in returning:
        patches.wrap(klass, "_do_return_conn", _return_factory(klass))
    patches.wrap(record_cls, "_ConnectionRecord__connect", _make_record_connect)
    patches.wrap(record_cls, "_ConnectionRecord__close", _make_record_close)
    patches.wrap(fairy_cls, "detach", _make_detach)
    patches.wrap(engine_default.DefaultDialect, "_do_ping_w_event", _make_ping)
    patches.wrap(base._ConnDialect, "_do_ping_w_event", _make_ping)
    patches.wrap(engine_base.Engine, "__init__", _make_engine_init)
