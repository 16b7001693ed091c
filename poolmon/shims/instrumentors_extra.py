"""OpenTelemetry ``BaseInstrumentor`` classes for the standard-library and emitter-API recorders.

Like :mod:`poolmon.shims.instrumentors` (registered under ``opentelemetry_instrumentor``), for the
``futures`` shim (``concurrent.futures`` thread and process pools) and the ``api`` recorder (pools
that speak :mod:`poolmon.api`). Neither instruments a third-party distribution, so they declare no
instrumentation dependency (``opentelemetry-instrument`` checks those against installed ones).
"""

from __future__ import annotations

from collections.abc import Collection

from poolmon.shims.instrumentors import PoolmonInstrumentor

__all__ = ["ApiInstrumentor", "FuturesInstrumentor"]


class FuturesInstrumentor(PoolmonInstrumentor):
    """``concurrent.futures``: ThreadPoolExecutor (so asyncio's default executor) and
    ProcessPoolExecutor."""

    shim = "futures"

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()


class ApiInstrumentor(PoolmonInstrumentor):
    """Pools written against :mod:`poolmon.api`."""

    shim = "api"

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()
