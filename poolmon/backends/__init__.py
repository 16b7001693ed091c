"""The backend's side (spec section 12): PgBouncer's pools and the servers' own connection counts.

Readers poll a source (:class:`PgBouncerReader`, :class:`PostgresReader`, :class:`RedisReader`);
a :class:`Poller` runs them in the background, keeping each one up or down with backoff; the
exporters merge its families into their own (:func:`attach`), so proxy pools and backends appear
in the same catalog as the application's pools. :func:`serve` is what ``poolmon serve`` runs.
:func:`postgres_label_kwargs` is what the PostgreSQL shims use to label their connections.
"""

from __future__ import annotations

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
from poolmon.backends.serve import BackendServer, attach, serve

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
