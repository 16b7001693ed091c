"""Shim for psycopg_pool (psycopg 3): ``ConnectionPool``, ``AsyncConnectionPool`` and the Null
variants.

Hook points (psycopg-pool 3.2/3.3, read from its source):

==================  ==========================================================================
event               where
==================  ==========================================================================
create              ``_connect`` (background workers; the null pool connects inside getconn)
wait                ``WaitingClient.wait``, attributed to its ``getconn`` call (see rules)
borrow              ``getconn`` (``connection()`` goes through it)
validate            ``_check_connection`` when the pool has ``check=``; ``check()``
return              ``_check_pool_putconn``, the first step of ``putconn`` (``_psycopg_base``)
evict               ``_close_connection``, reason from its caller; broken connections, which the
                    pool drops without closing, detected where it asks for their replacement
                    (``run_task`` from ``_return_connection``) and on failed checks
error               failed ``getconn``: timeout, exhausted (``max_waiting``), pool_closed;
                    failed ``_connect``: create_failed; failed reset: reset_failed
==================  ==========================================================================

Live state comes from these events only: ``get_stats()`` keeps timed-out waiters and
``pop_stats()`` resets the library's counters for every other reader.

Usage::

    import poolmon
    poolmon.instrument("psycopg")       # pools created before or after are both seen
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Final

from poolmon.backends.labels import label_psycopg_pool
from poolmon.core.compiled import new_link
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry
from poolmon.shims._psycopg_common import PoolTracker, TrackingState
from poolmon.shims._version import installed_version, supported

__all__ = ["LIBRARY", "SUPPORTED", "available", "instrument", "is_instrumented", "uninstrument"]

#: The distribution whose version gates this shim.
LIBRARY: Final = "psycopg-pool"
#: Versions whose internals the hooks were written against (3.2 and 3.3 share them).
SUPPORTED: Final = ">=3.2,<3.4"


@functools.cache
def _library_version() -> str | None:
    return installed_version(LIBRARY)


def _identity(pool: Any) -> PoolIdentity:
    from poolmon.shims._psycopg_rules import pool_identity

    return pool_identity(pool, _library_version())


def _limits(pool: Any) -> tuple[int | None, int | None, int | None]:
    from poolmon.shims._psycopg_rules import pool_limits

    return pool_limits(pool)


def _idle(pool: Any) -> list[tuple[Any, float]]:
    from poolmon.shims._psycopg_rules import idle_connections

    return list(idle_connections(pool))


def _link(pool: Any, tracker: PoolTracker) -> Any:
    # What the compiled getconn hook reads of a pool, in one lookup: the lane, the tracker (a
    # tag must name it) and the idle deque (BasePool.__init__ makes it once, never replaces it).
    return new_link(tracker.lane, key=tracker, items=pool._pool)


_state: Final = TrackingState(
    "psycopg",
    identity=_identity,
    limits=_limits,
    idle=_idle,
    link=_link,
    label_connections=label_psycopg_pool,
)


def available() -> bool:
    """psycopg_pool (and psycopg) can be imported."""
    return importlib.util.find_spec("psycopg_pool") is not None


def instrument(registry: PoolRegistry | None = None, *, version: str | None = None) -> bool:
    """Instrument psycopg_pool in place; True if active now.

    ``registry`` defaults to the default registry. ``version`` overrides the installed version
    for the support check (tests). Twice changes nothing; an unsupported version is reported
    once and left untouched.
    """
    return _state.install(
        registry,
        ready=lambda: available() and supported(LIBRARY, SUPPORTED, version),
        patch=_patch,
    )


def _patch() -> None:
    from poolmon.shims._psycopg_async import patch_async
    from poolmon.shims._psycopg_base import patch_base
    from poolmon.shims._psycopg_sync import patch_sync

    patch_base(_state)
    patch_sync(_state)
    patch_async(_state)


def uninstrument() -> None:
    """Restore every patched attribute to its original object and forget the tracked pools."""
    _state.uninstall()


def is_instrumented() -> bool:
    return _state.installed
