"""The recorder: events, identity and redaction, clocks, ledgers, the registry and snapshots.

Imports nothing from pools, shims, exporters or views: everything else depends on this package.
"""

from poolmon.core.catalog import SPEC_VERSION
from poolmon.core.clock import Clock, ManualClock, SystemClock, system_clock
from poolmon.core.events import PoolEvent
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger, Subscriber
from poolmon.core.registry import (
    PoolRegistry,
    get_default_registry,
    set_default_registry,
    snapshot,
)
from poolmon.core.sinks import CallbackSink, JsonlSink
from poolmon.core.snapshot import HistogramSnapshot, LeakRecord, PoolSnapshot

__all__ = [
    "SPEC_VERSION",
    "CallbackSink",
    "Clock",
    "HistogramSnapshot",
    "JsonlSink",
    "LeakRecord",
    "ManualClock",
    "PoolEvent",
    "PoolIdentity",
    "PoolLedger",
    "PoolRegistry",
    "PoolSnapshot",
    "Subscriber",
    "SystemClock",
    "get_default_registry",
    "set_default_registry",
    "snapshot",
    "system_clock",
]
