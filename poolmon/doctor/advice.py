"""Advice in the pool library's own configuration terms.

The library is read from ``pool_info``'s ``pool_library`` label (what the shims and factories
record), with the pool name as a hint (SQLAlchemy engines are named after them) and the system
(``http`` pools are urllib3's). A pool of unknown make gets poolmon.Pool's terms, the generic
vocabulary of the standard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from poolmon.top.samples import PoolSample

__all__ = ["LIBRARIES", "Terms", "library_of", "terms_for"]


@dataclass(frozen=True, slots=True)
class Terms:
    """How one library spells each knob ``doctor`` may advise on."""

    label: str  # how the pool is named in advice
    size: str  # "{n}" is the new size
    min_size: str
    lazy: str
    idle: str
    lifetime: str
    validate: str
    leak: str
    timeout: str
    no_reuse: str
    warm: str  # keep "{n}" connections open


LIBRARIES: Final[Mapping[str, Terms]] = {
    "psycopg_pool": Terms(
        label="psycopg_pool",
        size="ConnectionPool(max_size={n})",
        min_size="ConnectionPool(min_size=0..2)",
        lazy="open the pool with a small min_size (it fills min_size at open)",
        idle="ConnectionPool(max_idle={s})",
        lifetime="ConnectionPool(max_lifetime={s})",
        validate="ConnectionPool(check=ConnectionPool.check_connection)",
        leak="use `with pool.connection() as conn:` (putconn() in a finally block)",
        timeout="ConnectionPool(timeout=...)",
        no_reuse="use ConnectionPool, not NullConnectionPool, for a steady workload",
        warm="ConnectionPool(min_size={n})",
    ),
    "psycopg2": Terms(
        label="psycopg2.pool",
        size="ThreadedConnectionPool(minconn, maxconn={n})",
        min_size="ThreadedConnectionPool(minconn=0..2, ...)",
        lazy="a small minconn (psycopg2 opens minconn at construction)",
        idle=(
            "close idle connections below the network's idle kill "
            "(psycopg2.pool has no idle timeout)"
        ),
        lifetime="recycle connections older than {s}s yourself (no max lifetime in psycopg2.pool)",
        validate="test connections on getconn() after idle (psycopg2.pool never validates)",
        leak="putconn() in a finally block",
        timeout="psycopg2.pool never waits: it raises PoolError at maxconn",
        no_reuse=(
            "keep connections in the pool instead of closing them (putconn(conn, close=False))"
        ),
        warm="ThreadedConnectionPool(minconn={n}, ...)",
    ),
    "redis": Terms(
        label="redis-py",
        size="ConnectionPool(max_connections={n})",
        min_size="redis-py opens connections lazily (nothing to lower)",
        lazy="connections are opened on first use; stagger the start of workers",
        idle="Redis(socket_keepalive=True) and a server `timeout` above the network's idle kill",
        lifetime="recycle connections before {s}s (redis-py has no max lifetime)",
        validate="Redis(health_check_interval={s})",
        leak=(
            "release() every connection taken with get_connection() (or use the client's commands)"
        ),
        timeout="BlockingConnectionPool(timeout=...)",
        no_reuse="share one ConnectionPool (one Redis client) instead of a client per request",
        warm="reuse connections (one shared ConnectionPool); redis-py has no min size",
    ),
    "urllib3": Terms(
        label="urllib3 / requests",
        size="requests HTTPAdapter(pool_maxsize={n}) / urllib3 PoolManager(maxsize={n})",
        min_size="urllib3 opens connections lazily (nothing to lower)",
        lazy="connections are opened on first use; stagger the start of workers",
        idle="keep-alive on the server above the client's idle gap",
        lifetime="urllib3 has no max lifetime: a server keep-alive timeout below {s}s recycles",
        validate="urllib3 drops dead connections on borrow; retry idempotent requests (Retry)",
        leak=(
            "read or close every response body "
            "(requests: `with session.get(..., stream=True) as r:`)"
        ),
        timeout="PoolManager(block=True, timeout=...)",
        no_reuse="reuse one Session/PoolManager and keep-alive (no `Connection: close`)",
        warm="reuse connections (keep-alive, one Session); urllib3 has no min size",
    ),
    "sqlalchemy": Terms(
        label="SQLAlchemy",
        size="create_engine(pool_size={n}, max_overflow=...)",
        min_size="QueuePool opens connections lazily (nothing to lower)",
        lazy="connections are opened on first use; stagger the start of workers",
        idle="create_engine(pool_recycle={s})",
        lifetime="create_engine(pool_recycle={s})",
        validate="create_engine(pool_pre_ping=True)",
        leak="use `with engine.connect() as conn:` (close every Connection/Session)",
        timeout="create_engine(pool_timeout=...)",
        no_reuse="use QueuePool, not NullPool, for a steady workload",
        warm="create_engine(pool_size={n}) and pool_pre_ping instead of recycling often",
    ),
    "poolmon": Terms(
        label="poolmon.Pool",
        size="Pool(max_size={n})",
        min_size="Pool(min_size=0..2)",
        lazy="Pool(eager=False, warmup_jitter=5.0) (lazy, or spread the warm-up)",
        idle="Pool(idle_timeout={s})",
        lifetime="Pool(max_lifetime={s})",
        validate="Pool(validate_after=1.0)",
        leak=(
            "use `with pool.connection() as conn:`; Pool(leak_threshold=..., "
            "stack_sample_every=100) names the site"
        ),
        timeout="Pool(timeout=...) (fail_fast=False queues instead of refusing)",
        no_reuse="return connections to the pool instead of closing them",
        warm="Pool(min_size={n}, eager=True, warmup_jitter=...)",
    ),
}

_ALIASES: Final[Mapping[str, str]] = {
    "psycopg-pool": "psycopg_pool",
    "psycopg_pool": "psycopg_pool",
    "psycopg2": "psycopg2",
    "redis": "redis",
    "redis-py": "redis",
    "urllib3": "urllib3",
    "requests": "urllib3",
    "sqlalchemy": "sqlalchemy",
}


def library_of(sample: PoolSample) -> str:
    """Which library's terms fit ``sample`` (a key of :data:`LIBRARIES`)."""
    label = (sample.library or "").lower()
    if "sqlalchemy" in label or "sqlalchemy" in sample.name.lower():
        return "sqlalchemy"
    known = _ALIASES.get(label)
    if known is not None:
        return known
    if sample.system == "http" and not label:
        return "urllib3"
    return "poolmon"  # poolmon.Pool's factories record the connection library (psycopg, sqlite3)


def terms_for(sample: PoolSample) -> Terms:
    return LIBRARIES[library_of(sample)]
