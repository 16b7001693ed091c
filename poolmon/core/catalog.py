"""Typed view of the metric catalog and the standard's enumerations (from spec/catalog.json)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from poolmon.core._spec_data import CATALOG

__all__ = [
    "BACKEND_METRICS",
    "BACKEND_SYSTEMS",
    "BUCKETS",
    "ERROR_PHASES",
    "ERROR_TYPES",
    "EVENT_KINDS",
    "EVICTION_REASONS",
    "METRICS",
    "OPTIONAL_METRICS",
    "OUTCOMES",
    "POLL_ERROR_TYPES",
    "PROXY_CLIENT_STATES",
    "PROXY_METRICS",
    "PROXY_SERVER_STATES",
    "RESOURCES",
    "SELF_METRICS",
    "SEMCONV",
    "SPEC_VERSION",
    "MetricSpec",
    "ResourceKind",
    "metric",
]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One catalog entry: the OpenTelemetry name and what Prometheus calls it."""

    name: str
    instrument: str  # counter | updowncounter | histogram | gauge
    unit: str
    prometheus: str
    attributes: tuple[str, ...]
    description: str
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_labels(self) -> tuple[str, ...]:
        """Attribute keys as Prometheus label names (``pool.name`` -> ``pool_name``)."""
        return tuple(a.replace(".", "_") for a in self.attributes)


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """What a pool lends (spec 1.1, ``pool.resource``) and the words and units views use for it."""

    name: str
    meaning: str
    unit: str
    resource_noun: str
    request_unit: str
    request_noun: str


SPEC_VERSION: Final[str] = CATALOG["spec_version"]
EVENT_KINDS: Final[tuple[str, ...]] = tuple(CATALOG["event_kinds"])
EVICTION_REASONS: Final[tuple[str, ...]] = tuple(CATALOG["eviction_reasons"])
ERROR_TYPES: Final[tuple[str, ...]] = tuple(CATALOG["error_types"])
ERROR_PHASES: Final[tuple[str, ...]] = tuple(CATALOG["error_phases"])
OUTCOMES: Final[tuple[str, ...]] = tuple(CATALOG["outcomes"])
#: ``pool.resource`` values (spec 1.1): ``connection`` (the default), ``worker``, ``generic``.
RESOURCES: Final[Mapping[str, ResourceKind]] = {
    name: ResourceKind(name=name, **entry) for name, entry in CATALOG["resources"].items()
}
BUCKETS: Final[Mapping[str, tuple[float, ...]]] = {
    key: tuple(float(b) for b in bounds) for key, bounds in CATALOG["buckets"].items()
}


def _spec(entry: Mapping[str, object]) -> MetricSpec:
    bucket_key = entry.get("buckets")
    attributes = entry["attributes"]
    assert isinstance(attributes, list)
    return MetricSpec(
        name=str(entry["name"]),
        instrument=str(entry["instrument"]),
        unit=str(entry["unit"]),
        prometheus=str(entry["prometheus"]),
        attributes=tuple(str(a) for a in attributes),
        description=str(entry["description"]),
        buckets=BUCKETS[str(bucket_key)] if bucket_key else None,
    )


METRICS: Final[Mapping[str, MetricSpec]] = {m["name"]: _spec(m) for m in CATALOG["metrics"]}
SELF_METRICS: Final[Mapping[str, MetricSpec]] = {
    m["name"]: _spec(m) for m in CATALOG["self_metrics"]
}
#: Proxy pools and backends (spec section 12, added in 1.1): polled, not derived from events.
PROXY_METRICS: Final[Mapping[str, MetricSpec]] = {
    m["name"]: _spec(m) for m in CATALOG["proxy_metrics"]
}
BACKEND_METRICS: Final[Mapping[str, MetricSpec]] = {
    m["name"]: _spec(m) for m in CATALOG["backend_metrics"]
}
PROXY_CLIENT_STATES: Final[tuple[str, ...]] = tuple(CATALOG["proxy_client_states"])
PROXY_SERVER_STATES: Final[tuple[str, ...]] = tuple(CATALOG["proxy_server_states"])
POLL_ERROR_TYPES: Final[tuple[str, ...]] = tuple(CATALOG["poll_error_types"])
BACKEND_SYSTEMS: Final[tuple[str, ...]] = tuple(CATALOG["backend_systems"])
#: Spec 1.1 metrics emitted only by pools that use the feature (bursts, tenants, routing).
OPTIONAL_METRICS: Final[Mapping[str, MetricSpec]] = {
    m["name"]: _spec(m) for m in CATALOG.get("optional_metrics", [])
}
#: ``{"database": {poolmon name: {"name": official name, "attributes": {...}}}, "http": {...}}``
SEMCONV: Final[Mapping[str, Mapping[str, Mapping[str, object]]]] = CATALOG["semconv"]


def metric(name: str) -> MetricSpec:
    """The catalog entry for an OpenTelemetry metric name (KeyError names the unknown metric)."""
    try:
        return METRICS[name]
    except KeyError:
        for table in (SELF_METRICS, PROXY_METRICS, BACKEND_METRICS):
            if name in table:
                return table[name]
        raise KeyError(f"{name!r} is not in the poolmon metric catalog") from None
