"""Backends and proxy pools as metric families (spec section 12), for both exporters.

Built from :class:`~poolmon.backends.readings.SourceSnapshot` s at collection time, in the same
:class:`~poolmon.exporters.model.Family` form as the pools' families: the Prometheus collector and
the OpenTelemetry bridge merge them into their own (:func:`~poolmon.exporters.model.
merge_families`), so a process that has application pools *and* polls a PgBouncer exposes one
``pool_connection_usage`` family, never two.

A source that is down contributes ``backend.up`` 0 and its error counters only: its last counts
are not repeated (stale numbers would look live).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from poolmon.backends.readings import ProxyPool, Reading, SourceSnapshot
from poolmon.core.catalog import BACKEND_METRICS, METRICS, PROXY_METRICS, MetricSpec
from poolmon.core.identity import derive_name
from poolmon.exporters.model import Family, FamilySpec

__all__ = [
    "PROXY_POOL_SOURCES",
    "backend_family_specs",
    "build_backend_families",
    "family_source",
    "proxy_pool_name",
]

#: The section-9 pool metrics a proxy pool reports (spec 12.1); the rest need events.
PROXY_POOL_SOURCES: Final = (
    "pool.connection.usage",
    "pool.connection.max",
    "pool.connection.idle.min",
    "pool.connection.pending_requests",
    "pool.info",
)


class _Snapshots(Protocol):
    def snapshot(self) -> list[SourceSnapshot]: ...


def _spec(entry: MetricSpec) -> FamilySpec:
    return FamilySpec(
        name=entry.name,
        instrument=entry.instrument,
        unit=entry.unit,
        description=entry.description,
        prometheus=entry.prometheus,
        buckets=entry.buckets,
        source=entry.name,
    )


def backend_family_specs() -> list[FamilySpec]:
    """The families only backends and proxies produce (the pool ones already exist)."""
    return [_spec(m) for m in (*PROXY_METRICS.values(), *BACKEND_METRICS.values())]


def proxy_pool_name(snap: SourceSnapshot, pool: ProxyPool) -> str:
    """``pgbouncer://HOST:PORT/DATABASE?user=USER`` (spec 12.1)."""
    base = derive_name("pgbouncer", snap.address, snap.port, pool.database)
    return f"{base}?user={pool.user}"


def _add_proxy_pools(families: dict[str, Family], snap: SourceSnapshot, reading: Reading) -> None:
    for pool in reading.pools:
        name = {"pool.name": proxy_pool_name(snap, pool)}
        usage = families["pool.connection.usage"]
        usage.add({**name, "pool.connection.state": "idle"}, float(pool.server_idle))
        usage.add({**name, "pool.connection.state": "used"}, float(pool.server_used))
        if pool.pool_size is not None:
            families["pool.connection.max"].add(name, float(pool.pool_size))
        if pool.min_pool_size is not None:
            families["pool.connection.idle.min"].add(name, float(pool.min_pool_size))
        families["pool.connection.pending_requests"].add(name, float(pool.cl_waiting))
        families["pool.connection.oldest_wait"].add(name, pool.maxwait)
        clients = families["pool.proxy.client.connections"]
        for state, count in (("active", pool.cl_active), ("waiting", pool.cl_waiting)):
            clients.add({**name, "pool.proxy.client.state": state}, float(count))
        servers = families["pool.proxy.server.connections"]
        for state, count in (
            ("active", pool.sv_active),
            ("idle", pool.sv_idle),
            ("used", pool.sv_used),
            ("tested", pool.sv_tested),
            ("login", pool.sv_login),
        ):
            servers.add({**name, "pool.proxy.server.state": state}, float(count))
        info = {**name, "pool.system": "pgbouncer", "server.address": snap.address,
                "db.namespace": pool.database, "pool.library": "pgbouncer"}  # fmt: skip
        if snap.port is not None:
            info["server.port"] = str(snap.port)
        if reading.version:
            info["pool.library.version"] = reading.version
        families["pool.info"].add(info, 1.0)
        proxy_info = {**name, "pool.proxy.name": snap.name, "pool.proxy.mode": pool.pool_mode,
                      "db.namespace": pool.database, "db.user": pool.user}  # fmt: skip
        if pool.backend:
            proxy_info["backend.name"] = pool.backend
        families["pool.proxy.info"].add(proxy_info, 1.0)
    for stats in reading.stats:
        attrs = {"pool.proxy.name": snap.name, "db.namespace": stats.database}
        families["pool.proxy.wait_time"].add(attrs, stats.total_wait_time)
        families["pool.proxy.wait_time.average"].add(attrs, stats.avg_wait_time)


def _add_source(families: dict[str, Family], snap: SourceSnapshot) -> None:
    ident = {"backend.name": snap.name, "backend.system": snap.system}
    families["backend.up"].add(ident, 1.0 if snap.up else 0.0)
    for error_type, count in snap.errors.items():
        families["backend.poll.errors"].add({**ident, "error.type": error_type}, float(count))
    reading = snap.reading
    if reading is None:
        return
    usage = families["backend.connection.usage"]
    for group in reading.groups:
        attrs = {**ident, "backend.connection.state": group.state, "backend.client": group.client,
                 "client.address": group.address}  # fmt: skip
        usage.add(attrs, float(group.count))
    if reading.limit is not None:
        families["backend.connection.limit"].add(ident, float(reading.limit))
    if reading.reserved is not None:
        families["backend.connection.reserved"].add(ident, float(reading.reserved))
    if reading.pools or reading.stats:
        _add_proxy_pools(families, snap, reading)


def build_backend_families(snapshots: Iterable[SourceSnapshot]) -> list[Family]:
    """The families of every source: backend and proxy metrics, plus the proxy pools' pool ones."""
    families = {s.name: Family(s) for s in backend_family_specs()}
    for source in PROXY_POOL_SOURCES:
        families[source] = Family(_spec(METRICS[source]))
    for snap in snapshots:
        _add_source(families, snap)
    return list(families.values())


def family_source(poller: _Snapshots) -> Callable[[], Sequence[Family]]:
    """A family source for :meth:`PoolmonCollector.add_source` / :meth:`OtelBridge.add_source`."""

    def families() -> Sequence[Family]:
        return build_backend_families(poller.snapshot())

    families.__qualname__ = "poolmon:backends"
    return families
