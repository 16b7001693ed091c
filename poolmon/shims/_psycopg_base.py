"""The return hook of psycopg_pool, shared by the threaded and the asyncio pools.

``putconn`` (``ConnectionPool`` and ``AsyncConnectionPool``, and so the null pools) begins, in
every release the shim supports, with ``self._check_pool_putconn(conn)``: a synchronous
``BasePool`` method whose only job is to refuse a connection of another pool. The return is
recorded there, before the pool acts on the connection (a reset failure or an expiry inside
``putconn`` is then an ``evict`` after the ``return``, and a waiter handed the connection borrows
it after), exactly where a ``putconn`` wrapper would record it, one call cheaper: the compiled
hook (``poolmon/_hot.c``, ``psycopg_return``) needs no call back into the interpreter, and the
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
from poolmon.core.lane import FOLD_AT
from poolmon.shims._psycopg_common import ShimState

__all__ = ["patch_base"]

Fn = Callable[..., Any]


def patch_base(st: ShimState) -> None:
    """Install the return hook on psycopg_pool's ``BasePool``."""
    from psycopg_pool.base import BasePool

    st.patches.wrap(BasePool, "_check_pool_putconn", lambda orig: _check_pool_putconn(orig, st))


def _check_pool_putconn(original: Fn, st: ShimState) -> Fn:
    def _check_pool_putconn(self: Any, conn: Any) -> None:
        owner: Any = getattr(conn, "_pool", None)
        if owner is not self:
            # Another pool's connection, or none at all: the original refuses it (ValueError)
            # and putconn goes no further, so there is no return to record.
            return original(self, conn)  # type: ignore[no-any-return]
        try:
            try:
                tracker = self._poolmon_tracker  # TRACKER_ATTR, read as a plain attribute
            except AttributeError:
                tracker = st.track(self)
            if tracker is not None:
                try:
                    tag = conn._poolmon_conn  # CONN_ATTR
                    cid = tag[1] if tag[0] is tracker else tracker.adopt(conn)
                except AttributeError:
                    cid = tracker.adopt(conn)
                lane = tracker.lane
                if lane.open:  # the lane's return, inlined (poolmon.core.lane: no lock needed)
                    start = lane.borrowed.pop(cid, None)
                    if start is not None:
                        lane.note_use(lane.now() - start)
                        if len(lane.uses) > FOLD_AT:
                            tracker.ledger.fold()
                else:
                    tracker.release(cid)
                # A lost connection is evicted where the pool drops it (wrap_run_task).
        except Exception as exc:
            st.absorb(exc)
        return None  # the original's answer for a connection of this pool

    # The compiled hook where built: it takes the calls whose connection carries this pool's
    # tag while the lane is open, and hands every other call to the wrapper above unchanged.
    return fast_method("PSYCOPG_RETURN", original, _check_pool_putconn, absorb=st.absorb)
