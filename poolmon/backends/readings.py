"""What one poll of a backend or proxy returns, and what the poller keeps per source.

Plain frozen records, independent of how they were read (PgBouncer's admin console,
``pg_stat_activity``, Redis ``INFO``) and of how they are exported (spec section 12).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "ConnectionGroup",
    "ProxyDatabaseStats",
    "ProxyPool",
    "Reading",
    "SourceSnapshot",
]


@dataclass(frozen=True, slots=True)
class ConnectionGroup:
    """``count`` connections the backend holds in ``state`` from ``client`` at ``address``."""

    state: str
    client: str
    address: str
    count: int


@dataclass(frozen=True, slots=True)
class ProxyPool:
    """One (database, user) pool of a proxy (a ``SHOW POOLS`` row with its configuration)."""

    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    sv_used: int
    sv_tested: int
    sv_login: int
    maxwait: float  # seconds
    pool_mode: str
    pool_size: int | None
    min_pool_size: int | None
    backend: str | None  # ``postgresql://host:port`` the pool forwards to

    @property
    def server_used(self) -> int:
        return self.sv_active

    @property
    def server_idle(self) -> int:
        # Spec 12.1: idle, used (awaiting a check) and tested server connections are open and not
        # linked to a client; login ones are still being opened and are not counted yet.
        return self.sv_idle + self.sv_used + self.sv_tested


@dataclass(frozen=True, slots=True)
class ProxyDatabaseStats:
    """``SHOW STATS`` of one proxy database, in seconds."""

    database: str
    total_wait_time: float
    avg_wait_time: float


@dataclass(frozen=True, slots=True)
class Reading:
    """One successful poll."""

    groups: tuple[ConnectionGroup, ...] = ()
    limit: int | None = None
    reserved: int | None = None
    pools: tuple[ProxyPool, ...] = ()
    stats: tuple[ProxyDatabaseStats, ...] = ()
    version: str | None = None
    #: The server's own total of the same moment, where it states one (Redis
    #: ``connected_clients``); equals :attr:`total` when the groups are complete.
    server_total: int | None = None

    @property
    def total(self) -> int:
        """Every connection the backend holds (the sum of the groups)."""
        return sum(g.count for g in self.groups)


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """A source as the exporters see it: up or down, its last good reading while up, its errors."""

    name: str  # backend.name: ``system://host:port``, credential-free
    system: str  # postgresql | redis | pgbouncer
    address: str
    port: int | None
    up: bool
    reading: Reading | None  # None while down: stale counts must not look live
    errors: Mapping[str, int] = field(default_factory=dict)  # every poll error type, from zero
    last_error: str | None = None  # scrubbed
    polls: int = 0
