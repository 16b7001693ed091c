"""Shim for redis-py pools, sync and asyncio: ``ConnectionPool``, ``BlockingConnectionPool`` and
their ``redis.asyncio`` versions, instrumented in place.

Usage::

    import poolmon.shims.redis
    poolmon.shims.redis.instrument()      # or poolmon.instrument("redis")

Pools created before and after :func:`instrument` are both seen (a pool is attached to a ledger at
its first borrow). Pool names are ``redis://host:port/db`` (``rediss://`` with TLS), stable across
restarts; passwords, usernames and credential providers never reach the identity, and passwords
are remembered so that :func:`~poolmon.core.redact.scrub` removes them from error messages.

What is recorded, and where (details in :mod:`poolmon.shims._redis_sync`): create on each
successful connect (a connection object reconnects many times; each socket is a new physical
connection with a new id), borrow/return at ``get_connection``/``release``, evict when a live
socket is disconnected (``pool_closed``, ``failed_validation``, ``broken``, ``other``), validate on
PING health checks, wait/timeout in the Blocking pools, ``exhausted`` when ``ConnectionPool``
refuses.

redis-py's own OpenTelemetry pool metrics (redis >= 7.2, opt-in through ``redis.observability``)
publish ``db.client.connection.*`` series for the same pools. poolmon's names
(``pool.connection.*``) never collide with them, so both can run; only poolmon's ``semconv``
option would publish the same names twice. :func:`library_exports_semconv` tells an exporter
which ledgers' semantic-convention series redis-py already publishes (decided when the pool is
first seen, from :func:`builtin_pool_metrics_enabled`), so it can leave them out.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.shims import _redis_common as common
from poolmon.shims._redis_common import STATE, builtin_pool_metrics_enabled
from poolmon.shims._version import installed_version, supported

__all__ = [
    "LIBRARY",
    "SUPPORTED",
    "available",
    "builtin_pool_metrics_enabled",
    "instrument",
    "is_instrumented",
    "library_exports_semconv",
    "uninstrument",
]

LIBRARY: Final = "redis"
#: Hook points verified against redis-py 8.1 (``connect_check_health``, the pool classes' bodies).
SUPPORTED: Final = ">=8.0,<9"


def available() -> bool:
    """redis-py is importable."""
    return importlib.util.find_spec("redis") is not None


def _installed_version() -> str | None:
    return installed_version(LIBRARY)


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch redis-py's pools and connections; True if the shim is now active.

    ``registry`` is where newly seen pools register (default: the default registry at the time a
    pool is first seen). Calling it again changes nothing. An unsupported redis-py version gets one
    warning and is left untouched (returns False).
    """
    return STATE.install(registry, ready=_ready, patch=_patch, detach=_detach)


def _ready() -> bool:
    return available() and supported(LIBRARY, SUPPORTED, _installed_version())


def _patch() -> None:
    from poolmon.shims._redis_async import patch_async
    from poolmon.shims._redis_sync import patch_sync

    common.set_on_attach(_on_attach)
    patch_sync(STATE.patches)
    patch_async(STATE.patches)


def _detach() -> None:
    common.detach_all()
    common.set_on_attach(None)


def uninstrument() -> None:
    """Restore every patched attribute to the identical original object; forget attached pools."""
    STATE.uninstall()


def is_instrumented() -> bool:
    return STATE.installed


def library_exports_semconv(ledger: PoolLedger) -> bool:
    """True when redis-py's built-in metrics already publish this pool's ``db.client.connection.*``
    series (so an exporter in ``semconv`` mode must skip them to avoid counting the pool twice)."""
    return ledger.semconv_exported_by is not None


def _on_attach(ledger: PoolLedger) -> None:
    if builtin_pool_metrics_enabled():
        ledger.semconv_exported_by = "redis-py"
