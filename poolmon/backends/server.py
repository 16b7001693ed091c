"""Wiring: a poller's families onto the exporters, and the ``poolmon serve`` process.

Imports of the exporters happen inside the functions: :mod:`poolmon.exporters.backends` imports
this package's records, and this package must stay importable on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from poolmon.backends.poller import DEFAULT_INTERVAL, Poller, readers_for
from poolmon.core.clock import Clock
from poolmon.errors import ConfigError

__all__ = ["BackendServer", "attach", "serve"]


class _AcceptsSources(Protocol):
    def add_source(self, source: Callable[[], Sequence[Any]]) -> None: ...


def attach(poller: Poller, *targets: _AcceptsSources) -> Callable[[], Sequence[Any]]:
    """Merge ``poller``'s families into each target: a :class:`~poolmon.exporters.prometheus.
    PoolmonCollector` (e.g. from ``register_collector()``) or an OpenTelemetry bridge (from
    ``poolmon.otel.enable()``). Returns the source (for ``remove_source``)."""
    from poolmon.exporters.backends import family_source

    source = family_source(poller)
    for target in targets:
        target.add_source(source)
    return source


class BackendServer:
    """A running poller with its ``/metrics`` endpoint; :meth:`close` stops both."""

    def __init__(self, poller: Poller, metrics: Any) -> None:
        self.poller = poller
        self.metrics = metrics

    @property
    def url(self) -> str:
        return str(self.metrics.url)

    @property
    def port(self) -> int:
        return int(self.metrics.port)

    def close(self) -> None:
        self.metrics.close()
        self.poller.close()

    def __enter__(self) -> BackendServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    pgbouncer: Sequence[str] = (),
    backends: Sequence[str] = (),
    *,
    interval: float = DEFAULT_INTERVAL,
    port: int = 9464,
    addr: str = "127.0.0.1",
    clock: Clock | None = None,
    background: bool = True,
    include_own_pools: bool = False,
) -> BackendServer:
    """Poll PgBouncer admin DSNs and backend DSNs/URLs; serve them on ``addr:port/metrics``.

    ``background=False`` starts no polling thread: call ``server.poller.poll_once()`` (tests,
    an external scheduler). ``include_own_pools`` also serves this process's own pools.
    """
    from prometheus_client import CollectorRegistry

    from poolmon.core.registry import PoolRegistry
    from poolmon.exporters.prometheus import register_collector
    from poolmon.exporters.prometheus import serve as serve_metrics

    if not pgbouncer and not backends:
        raise ConfigError("--pgbouncer/--backend", "none", "at least one PgBouncer or backend")
    if not 0 <= port <= 65535:
        raise ConfigError("port", port, "an integer in [0, 65535] (0 picks a free port)")
    poller = Poller(readers_for(pgbouncer, backends), interval=interval, clock=clock)
    registry = None if include_own_pools else PoolRegistry()
    prom = CollectorRegistry(auto_describe=False)
    attach(poller, register_collector(prom, registry=registry))
    try:
        metrics = serve_metrics(port, addr, registry=registry, prometheus_registry=prom)
    except BaseException:
        poller.close()
        raise
    if background:
        poller.start()
    return BackendServer(poller, metrics)
