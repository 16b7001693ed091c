"""poolmon: observe connection pools.

The public surface: the recorder (registry, snapshots, sinks), ``instrument``/``uninstrument`` for
library pools, and poolmon's own pools. Everything else is internal.

poolmon's own pools (``Pool``, ``AsyncPool`` and their configuration) are imported on first use:
an application that only instruments its libraries' pools does not load them (nor asyncio and
sqlite3 with them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from poolmon.core import (
    SPEC_VERSION,
    CallbackSink,
    HistogramSnapshot,
    JsonlSink,
    LeakRecord,
    ManualClock,
    PoolEvent,
    PoolIdentity,
    PoolLedger,
    PoolRegistry,
    PoolSnapshot,
    get_default_registry,
    set_default_registry,
    snapshot,
)
from poolmon.errors import (
    ConfigError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolmonError,
    PoolTimeout,
)
from poolmon.shims import instrument, uninstrument

if TYPE_CHECKING:
    from poolmon.pool import AsyncPool, Pool, PoolConfig, SqliteFactory, TenantQuota
    from poolmon.pool.factory import factory

#: Names imported on first use (PEP 562), and the module each comes from.
_LAZY = dict.fromkeys(
    ("AsyncPool", "Pool", "PoolConfig", "SqliteFactory", "TenantQuota", "factory"), "poolmon.pool"
)

__all__ = [
    "SPEC_VERSION",
    "AsyncPool",
    "CallbackSink",
    "ConfigError",
    "HistogramSnapshot",
    "JsonlSink",
    "LeakRecord",
    "ManualClock",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolEvent",
    "PoolExhausted",
    "PoolIdentity",
    "PoolLedger",
    "PoolRegistry",
    "PoolSnapshot",
    "PoolTimeout",
    "PoolmonError",
    "SqliteFactory",
    "TenantQuota",
    "factory",
    "get_default_registry",
    "instrument",
    "set_default_registry",
    "snapshot",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poolmon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later reads are plain module attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
