"""The backend's side (spec section 12): PgBouncer's pools and the servers' own connection counts.

Readers poll a source (:class:`PgBouncerReader`, :class:`PostgresReader`, :class:`RedisReader`);
a :class:`Poller` runs them in the background, keeping each one up or down with backoff; the
exporters merge its families into their own (:func:`attach`), so proxy pools and backends appear
in the same catalog as the application's pools. :func:`serve` is what ``poolmon serve`` runs.
:func:`postgres_label_kwargs` is what the PostgreSQL shims use to label their connections.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poolmon.backends.labels import application_name, postgres_label_kwargs
    from poolmon.backends.pgbouncer import PgBouncerReader
    from poolmon.backends.poller import DEFAULT_INTERVAL, Poller, Reader, readers_for
    from poolmon.backends.postgres import PostgresReader
    from poolmon.backends.readings import (
        ConnectionGroup,
        ProxyDatabaseStats,
        ProxyPool,
        Reading,
        SourceSnapshot,
    )
    from poolmon.backends.redis import RedisReader
    from poolmon.backends.server import BackendServer, attach, serve

#: Where each public name lives: imported on first use (PEP 562), so the PostgreSQL shims'
#: labelling (``poolmon.backends.labels``) does not load the readers, the poller and the server.
_LAZY = {
    "DEFAULT_INTERVAL": "poller",
    "BackendServer": "server",
    "ConnectionGroup": "readings",
    "PgBouncerReader": "pgbouncer",
    "Poller": "poller",
    "PostgresReader": "postgres",
    "ProxyDatabaseStats": "readings",
    "ProxyPool": "readings",
    "Reader": "poller",
    "Reading": "readings",
    "RedisReader": "redis",
    "SourceSnapshot": "readings",
    "application_name": "labels",
    "attach": "server",
    "postgres_label_kwargs": "labels",
    "readers_for": "poller",
    "serve": "server",
}

__all__ = [
    "DEFAULT_INTERVAL",
    "BackendServer",
    "ConnectionGroup",
    "PgBouncerReader",
    "Poller",
    "PostgresReader",
    "ProxyDatabaseStats",
    "ProxyPool",
    "Reader",
    "Reading",
    "RedisReader",
    "SourceSnapshot",
    "application_name",
    "attach",
    "postgres_label_kwargs",
    "readers_for",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poolmon.backends' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"poolmon.backends.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
