"""psycopg_pool knowledge shared by the sync and async wrappers (psycopg-pool 3.2/3.3).

What a pool is called, how big it is, which connections sit idle in it, why it closed a
connection and what kind of error a failed ``getconn`` was. Nothing here is on the hot path.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from time import monotonic
from types import CodeType, FrameType
from typing import Any, Final

from psycopg.pq import TransactionStatus
from psycopg_pool.errors import PoolClosed, PoolTimeout, TooManyRequests

from poolmon.core.identity import PoolIdentity, identity_from_libpq_dsn
from poolmon.shims._psycopg_common import TRACKER_ATTR, PoolTracker, TrackingState

__all__ = [
    "GETCONN_CODES",
    "UNKNOWN",
    "close_reason",
    "closed",
    "getconn_error_type",
    "idle_connections",
    "pool_identity",
    "pool_limits",
    "record_check_failed",
    "record_getconn_failed",
    "record_pool_check",
    "waiting_call",
    "wrap_run_task",
]

LIBRARY_LABEL: Final = "psycopg-pool"

#: ``pgconn.transaction_status`` of a connection that is closed or lost: psycopg_pool drops such
#: a connection without calling ``_close_connection`` (no close to hook), so the shim detects it
#: where the pool does (:func:`wrap_run_task`).
UNKNOWN: Final = int(TransactionStatus.UNKNOWN)

# psycopg_pool names unnamed pools "pool-<n>" from a process-wide counter: not stable across
# restarts (it depends on creation order), so such pools get the derived name instead.
_AUTO_NAME: Final = re.compile(r"pool-\d+")

#: Code objects of poolmon's ``getconn`` wrappers (sync and async), filled when they are made.
#: The ``WaitingClient.wait`` wrapper finds the getconn call it belongs to by walking up to one
#: of these frames: ``WaitingClient`` has ``__slots__`` and no reference to its pool, and this
#: costs nothing unless a caller actually queues.
GETCONN_CODES: set[CodeType] = set()
_FRAME_DEPTH: Final = 8


def pool_identity(pool: Any, library_version: str | None) -> PoolIdentity:
    """Identity from the pool's static conninfo/kwargs (credentials dropped) and its name.

    A callable conninfo or kwargs (psycopg-pool 3.3) is never called here: it may be costly or
    have side effects. Such a pool is identified from what is static, plus libpq's env defaults.
    """
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else None
    name = pool.name if pool.name and not _AUTO_NAME.fullmatch(pool.name) else None
    return identity_from_libpq_dsn(
        conninfo, kwargs, name=name, library=LIBRARY_LABEL, library_version=library_version
    )


def pool_limits(pool: Any) -> tuple[int | None, int | None, int | None]:
    """``(max_size, min_size, idle_max)``; a null pool's ``max_size=0`` means unlimited, and it
    keeps no idle connection; a regular pool may keep all of its connections idle."""
    max_size = pool.max_size or None
    idle_max = 0 if pool.min_size == 0 and _is_null(pool) else max_size
    return max_size, pool.min_size, idle_max


def _is_null(pool: Any) -> bool:
    from psycopg_pool.base_null_pool import _BaseNullConnectionPool

    return isinstance(pool, _BaseNullConnectionPool)


def idle_connections(pool: Any) -> Iterable[tuple[Any, float]]:
    """The connections idle in ``pool`` now, with their ages (for adoption on first sight)."""
    conns = tuple(pool._pool)  # one C-level copy: atomic under the GIL (see TrackingState.track)
    now = monotonic()  # psycopg_pool stamps _created_at with time.monotonic
    return [(conn, now - getattr(conn, "_created_at", now)) for conn in conns]


def close_reason(pool: Any, conn: Any, caller: str) -> str:
    """Why ``pool`` is closing ``conn``, from the name of the method that called
    ``_close_connection`` (DESIGN.md section 5)."""
    if caller == "_shrink_pool":
        return "idle_timeout"
    if caller == "_reset_connection":
        return "reset_failed"
    if caller in ("_return_connection", "check"):
        # Both close only expired connections, or (return only) ones opened before a drain().
        if getattr(conn, "_created_at", 0.0) <= pool._drained_at:
            return "pool_closed"
        return "max_lifetime"
    if caller in ("close", "drain"):
        return "pool_closed"
    if caller in ("_maybe_close_connection", "_add_to_pool"):
        # The regular pool closes here only when closed; the null pool also closes every
        # connection nobody is waiting for: a return to a pool that keeps no idle connection
        # (or a lost one, which it would otherwise drop).
        if pool._closed:
            return "pool_closed"
        return "broken" if conn.pgconn.transaction_status == UNKNOWN else "overflow"
    return "pool_closed" if pool._closed else "other"


def wrap_run_task(original: Callable[..., Any], st: TrackingState) -> Callable[..., Any]:
    """``run_task`` (sync in both pool flavours), watching for lost connections.

    psycopg_pool's ``_return_connection`` drops a connection whose status is ``UNKNOWN`` (lost
    or closed) without closing it, and asks for a replacement with ``run_task(AddConnection)``.
    That call is where the shim records the eviction: only there, not on every return (reading
    the status on each ``putconn`` cost ~70 ns of a ~2.2 us cycle), and before the replacement's
    ``create`` can be recorded. The same spot covers a lost connection found by ``getconn``'s
    check loop (already evicted as a failed validation: a second evict changes nothing) and one
    handed to a waiter that timed out at that moment.
    """

    def run_task(self: Any, task: Any) -> None:
        try:
            caller = sys._getframe(1)
            if caller.f_code.co_name == "_return_connection":
                tracker: PoolTracker | None = getattr(self, TRACKER_ATTR, None)
                conn = caller.f_locals.get("conn")
                lost = conn is not None and conn.pgconn.transaction_status == UNKNOWN
                if lost and tracker is not None:
                    cid = tracker.known_id(conn)
                    if cid is not None:
                        tracker.evict(cid, "broken")
        except Exception as exc:
            st.absorb(exc)
        return original(self, task)  # type: ignore[no-any-return]

    return run_task


def getconn_error_type(exc: BaseException, *, queued: bool) -> str | None:
    """The standard error type of a failed ``getconn``; None when nothing is to be counted
    (a connect failure of a null pool is already counted as ``create_failed``)."""
    if isinstance(exc, PoolTimeout):
        return "timeout"
    if isinstance(exc, TooManyRequests):
        return "exhausted"
    if isinstance(exc, PoolClosed):
        return "pool_closed"
    if not isinstance(exc, Exception):
        return "cancelled"  # CancelledError, KeyboardInterrupt
    return "other" if queued else None


def waiting_call(frame: FrameType | None) -> tuple[PoolTracker, list[bool]] | None:
    """The ``(tracker, queued_cell)`` of the poolmon getconn call that ``frame`` runs inside."""
    depth = 0
    while frame is not None and depth < _FRAME_DEPTH:
        if frame.f_code in GETCONN_CODES:
            local = frame.f_locals
            tracker = local.get("tracker")
            cell = local.get("cell")
            if isinstance(tracker, PoolTracker) and isinstance(cell, list):
                return tracker, cell
            return None
        frame = frame.f_back
        depth += 1
    return None


def record_getconn_failed(
    st: TrackingState, tracker: PoolTracker, t0: float, *, queued: bool, exc: BaseException
) -> None:
    try:
        error_type = getconn_error_type(exc, queued=queued)
        if error_type is not None:
            duration = max(0.0, tracker.now() - t0)
            phase = "wait" if queued else "borrow"
            tracker.ledger.error(error_type, phase, exc, duration=duration)
    except Exception as inner:
        st.absorb(inner)


def record_check_failed(
    st: TrackingState, tracker: PoolTracker, conn: Any, t0: float, exc: BaseException
) -> None:
    """The ``check=`` callback rejected ``conn`` in ``getconn``.

    A broken connection is then dropped (never closed) by the getconn loop: a failed validation
    and its eviction. A healthy one that merely failed the user's check goes back to the pool
    and stays alive; the standard requires a failed ``validate`` to be followed by an eviction,
    so that case is reported as an error of type ``other`` in phase ``validate`` instead.
    """
    try:
        cid = tracker.conn_id(conn)
        if conn.pgconn.transaction_status == UNKNOWN:
            tracker.ledger.validate(cid, t0, ok=False)
            tracker.evict(cid, "failed_validation")
        else:
            duration = max(0.0, tracker.now() - t0)
            tracker.ledger.error("other", "validate", exc, conn=cid, duration=duration)
    except Exception as inner:
        st.absorb(inner)


def record_pool_check(
    st: TrackingState, tracker: PoolTracker, conn: Any, t0: float, *, ok: bool
) -> None:
    """One connection tested by ``pool.check()``: a failure means it is dropped."""
    try:
        cid = tracker.conn_id(conn)
        tracker.ledger.validate(cid, t0, ok=ok)
        if not ok:
            tracker.evict(cid, "failed_validation")
    except Exception as exc:
        st.absorb(exc)


def closed(pool: Any) -> None:
    """``pool.close()`` returned (either pool's): close the ledger of a tracked pool it closed."""
    tracker: PoolTracker | None = getattr(pool, TRACKER_ATTR, None)
    if tracker is not None and pool._closed:
        tracker.ledger.close()
