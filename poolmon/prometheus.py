"""Public alias of :mod:`poolmon.exporters.prometheus` (plus the pre-fork helpers).

>>> from poolmon.prometheus import serve
>>> server = serve(port=0)  # doctest: +SKIP
"""

from poolmon.exporters.multiprocess import (
    MultiProcessCollector,
    SnapshotWriter,
    mark_process_dead,
    write_snapshot,
)
from poolmon.exporters.prometheus import (
    MetricsServer,
    PoolmonCollector,
    register_collector,
    serve,
    unregister_collector,
)

__all__ = [
    "MetricsServer",
    "MultiProcessCollector",
    "PoolmonCollector",
    "SnapshotWriter",
    "mark_process_dead",
    "register_collector",
    "serve",
    "unregister_collector",
    "write_snapshot",
]
