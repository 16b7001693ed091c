"""OpenTelemetry ``BaseInstrumentor`` classes, one per shim.

Registered under the ``opentelemetry_instrumentor`` entry-point group, so
``opentelemetry-instrument python app.py`` turns the shims on and attaches poolmon's metrics to the
MeterProvider that ``opentelemetry-instrument`` configured. Requires ``poolmon[otlp]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Any, ClassVar

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from poolmon.shims import SHIMS

__all__ = [
    "AiohttpPoolInstrumentor",
    "AsyncpgPoolInstrumentor",
    "HttpxPoolInstrumentor",
    "PoolmonInstrumentor",
    "Psycopg2PoolInstrumentor",
    "PsycopgPoolInstrumentor",
    "RedisPoolInstrumentor",
    "SQLAlchemyPoolInstrumentor",
    "Urllib3PoolInstrumentor",
]


class PoolmonInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base: instruments one shim and makes sure poolmon's metrics reach OpenTelemetry."""

    shim: ClassVar[str] = ""

    def instrumentation_dependencies(self) -> Collection[str]:
        module = importlib.import_module(SHIMS[self.shim])
        return (f"{module.LIBRARY} {module.SUPPORTED}",)

    def _instrument(self, **kwargs: Any) -> None:
        from poolmon.exporters import otel
        from poolmon.shims import instrument

        instrument(self.shim)
        otel.enable(meter_provider=kwargs.get("meter_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        from poolmon.shims import uninstrument

        uninstrument(self.shim)


class PsycopgPoolInstrumentor(PoolmonInstrumentor):
    """psycopg_pool (``ConnectionPool``, ``AsyncConnectionPool`` and their Null variants)."""

    shim = "psycopg"


class Psycopg2PoolInstrumentor(PoolmonInstrumentor):
    """psycopg2.pool (``SimpleConnectionPool``, ``ThreadedConnectionPool``)."""

    shim = "psycopg2"


class RedisPoolInstrumentor(PoolmonInstrumentor):
    """redis-py pools, sync and asyncio, including the Blocking variants."""

    shim = "redis"


class Urllib3PoolInstrumentor(PoolmonInstrumentor):
    """urllib3 connection pools (and therefore requests)."""

    shim = "urllib3"


class SQLAlchemyPoolInstrumentor(PoolmonInstrumentor):
    """SQLAlchemy pools (``QueuePool``, ``AsyncAdaptedQueuePool``, ``NullPool``, ``StaticPool``,
    ``SingletonThreadPool``, ``AssertionPool``), sync and asyncio engines."""

    shim = "sqlalchemy"


class AsyncpgPoolInstrumentor(PoolmonInstrumentor):
    """asyncpg pools (``asyncpg.create_pool``)."""

    shim = "asyncpg"


class HttpxPoolInstrumentor(PoolmonInstrumentor):
    """httpcore connection pools, sync and async (and therefore httpx), HTTP/1.1 and HTTP/2."""

    shim = "httpx"


class AiohttpPoolInstrumentor(PoolmonInstrumentor):
    """aiohttp connectors (``TCPConnector``, ``UnixConnector``)."""

    shim = "aiohttp"
