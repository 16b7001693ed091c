"""The return hook of psycopg_pool, shared by the threaded and the asyncio pools.

``putconn`` (``ConnectionPool`` and ``AsyncConnectionPool``, and so the null pools) begins, in
every release the shim supports, with ``self._check_pool_putconn(conn)``: a synchronous
``BasePool`` method whose only job is to refuse a connection of another pool. The return is
recorded there, before the pool acts on the connection (a reset failure or an expiry inside
``putconn`` is then an ``evict`` after the ``return``, and a waiter handed the connection borrows
it after), exactly where a ``putconn`` wrapper would record it, one call cheaper: the compiled
hook (``poolmon/_hot.c``, RELEASE with ``answer``) needs no call back into the interpreter, and the
library's own check frame is not run when the hook has already made it.

The library's check is ``getattr(conn, "_pool", None) is self``, then ``return``; when it holds,
this hook gives the same answer (None) itself; when it does not, the original runs and raises
its ``ValueError`` as always, with nothing recorded. ``tests/unit/shims/test_psycopg_patching.py``
checks that the installed release still has that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poolmon.core.compiled import fast_method
from poolmon.shims._psycopg_common import CONN_ATTR, TRACKER_ATTR, TrackingState

__all__ = ["patch_base"]

Fn = Callable[..., Any]


def patch_base(st: TrackingState) -> None:
    """Install the return hook on psycopg_pool's ``BasePool``."""
    from psycopg_pool.base import BasePool

    st.patches.wrap(BasePool, "_check_pool_putconn", lambda orig: _check_pool_putconn(orig, st))


def _check_pool_putconn(original: Fn, st: TrackingState) -> Fn:
    def _check_pool_putconn(self: Any, conn: Any) -> None:
        owner: Any = getattr(conn, "_pool", None)
        if owner is not self:
            # Another pool's connection, or none at all: the original refuses it (ValueError)
            # and putconn goes no further, so there is no return to record.
            return original(self, conn)  # type: ignore[no-any-return]
        try:
            tracker = getattr(self, TRACKER_ATTR, None)
            if tracker is None:
                tracker = st.track(self)
            if tracker is not None:
                tracker.release(tracker.conn_id(conn))  # the lane protocol, through the ledger
                # A lost connection is evicted where the pool drops it (wrap_run_task).
        except Exception as exc:
            st.absorb(exc, "return")
        return None  # the original's answer for a connection of this pool

    # The compiled hook where built: it takes the calls whose connection names this pool
    # (``conn._pool is self``, the library's own check, made there) and carries a live tag, gives
    # the original's answer (None) itself, and hands every other call to the wrapper above.
    return fast_method(
        "RELEASE",
        original,
        _check_pool_putconn,
        owner_attr="_pool",
        conn_link=CONN_ATTR,
        answer=None,
        absorb=st.absorber("return"),
    )
