"""poolmon: observe connection pools.

The public surface: the recorder (registry, snapshots, sinks), ``instrument``/``uninstrument`` for
library pools, and poolmon's own pools. Everything else is internal.
"""

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
from poolmon.pool import AsyncPool, Pool, PoolConfig, SqliteFactory, TenantQuota, factory
from poolmon.shims import instrument, uninstrument

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
