"""Typed view of the metric catalog and the standard's enumerations (from spec/catalog.json)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from poolmon.core._spec_data import CATALOG

__all__ = [
    "BUCKETS",
    "ERROR_PHASES",
    "ERROR_TYPES",
    "EVENT_KINDS",
    "EVICTION_REASONS",
    "METRICS",
    "OPTIONAL_METRICS",
    "OUTCOMES",
    "SELF_METRICS",
    "SEMCONV",
    "SPEC_VERSION",
    "MetricSpec",
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


SPEC_VERSION: Final[str] = CATALOG["spec_version"]
EVENT_KINDS: Final[tuple[str, ...]] = tuple(CATALOG["event_kinds"])
EVICTION_REASONS: Final[tuple[str, ...]] = tuple(CATALOG["eviction_reasons"])
ERROR_TYPES: Final[tuple[str, ...]] = tuple(CATALOG["error_types"])
ERROR_PHASES: Final[tuple[str, ...]] = tuple(CATALOG["error_phases"])
OUTCOMES: Final[tuple[str, ...]] = tuple(CATALOG["outcomes"])
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
        try:
            return SELF_METRICS[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in the poolmon metric catalog") from None
