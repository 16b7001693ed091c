"""The exporters' shared metric model: snapshots -> metric families, independent of any backend.

Both exporters render the *same* list of :class:`Family` objects, built here once per collection,
so the Prometheus collector and the OpenTelemetry bridge can never disagree on which metrics,
attributes or values exist. A family is named in OpenTelemetry form; its Prometheus name is
exactly what the standard OpenTelemetry -> Prometheus translation makes of it
(:func:`prometheus_name`, checked against the catalog's ``prometheus`` column in the tests).

Values:

* numbers (counts, gauges, counters as cumulative totals) as ``float``;
* histograms as :class:`~poolmon.core.snapshot.HistogramSnapshot` (per-bucket counts + sum).

Points with identical attribute sets are merged (summed; ``max`` for the oldest-borrow gauge): that
happens with the ``semconv`` option, where HTTP pools are keyed by server rather than pool name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from poolmon.core.catalog import METRICS, OPTIONAL_METRICS, SELF_METRICS, SEMCONV, MetricSpec
from poolmon.core.snapshot import HistogramSnapshot, PoolSnapshot

__all__ = [
    "Attributes",
    "Family",
    "FamilySource",
    "FamilySpec",
    "Value",
    "build_families",
    "family_specs",
    "merge_families",
    "prometheus_name",
    "semconv_kind",
]

Value = float | HistogramSnapshot
#: Attributes as a sorted tuple of ``(key, value)`` pairs: hashable, so points can be merged.
Attributes = tuple[tuple[str, str], ...]
#: Something besides the pool registry that contributes families at collection time (the backend
#: poller, spec section 12); called once per collection, off the hot path.
FamilySource = Callable[[], Sequence["Family"]]

#: ``pool.system`` values that are databases or caches for the ``db.client.connection.*`` names.
_DATABASE_SYSTEMS: Final = frozenset({"postgresql", "redis", "sqlite"})
_UNIT_WORDS: Final[Mapping[str, str]] = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "1": "ratio",
}
_INVALID_NAME_CHARS: Final = re.compile(r"[^a-zA-Z0-9_:]")
_MAX_POINT_GAUGES: Final = frozenset({"pool.connection.oldest_use", "pool.connection.oldest_wait"})
_INFO_METRICS: Final = frozenset({"pool.info", "pool.proxy.info", "pool.route.info"})


def prometheus_name(name: str, unit: str, instrument: str) -> str:
    """The standard OpenTelemetry -> Prometheus name for a metric.

    Invalid characters become ``_``; a unit in braces (``{connection}``) is dropped, ``s`` becomes
    ``_seconds``; monotonic counters get ``_total``; up-down counters become gauges without it.
    """
    base = _INVALID_NAME_CHARS.sub("_", name)
    word = "" if unit.startswith("{") else _UNIT_WORDS.get(unit, unit)
    if word and not base.endswith(f"_{word}"):
        base = f"{base}_{word}"
    if instrument == "counter" and not base.endswith("_total"):
        base = f"{base}_total"
    return base


def semconv_kind(system: str) -> str | None:
    """Which semantic-convention table applies to a pool system (``database``, ``http`` or none)."""
    if system in _DATABASE_SYSTEMS:
        return "database"
    if system == "http":
        return "http"
    return None


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """What one exported metric is, before any values: the catalog entry under its export name."""

    name: str
    instrument: str  # counter | updowncounter | gauge | histogram
    unit: str
    description: str
    prometheus: str
    buckets: tuple[float, ...] | None
    source: str  # the poolmon catalog name it is derived from

    @property
    def prometheus_unit(self) -> str:
        """The unit word prometheus_client appends (``seconds``) or ``""``."""
        return "" if self.unit.startswith("{") else _UNIT_WORDS.get(self.unit, self.unit)


@dataclass(slots=True)
class Family:
    """A metric with its points for one collection."""

    spec: FamilySpec
    points: dict[Attributes, Value] = field(default_factory=dict)

    def add(self, attributes: Mapping[str, str], value: Value) -> None:
        key: Attributes = tuple(sorted(attributes.items()))
        previous = self.points.get(key)
        if previous is None:
            self.points[key] = value
        elif isinstance(previous, HistogramSnapshot):
            assert isinstance(value, HistogramSnapshot)
            self.points[key] = previous.merged(value)
        elif self.spec.source in _MAX_POINT_GAUGES:
            self.points[key] = max(previous, float(value))  # type: ignore[arg-type]
        elif self.spec.source in _INFO_METRICS:
            pass  # an info metric is 1 per identity, never 2
        else:
            self.points[key] = previous + float(value)  # type: ignore[arg-type]


def _from_catalog(spec: MetricSpec) -> FamilySpec:
    return FamilySpec(
        name=spec.name,
        instrument=spec.instrument,
        unit=spec.unit,
        description=spec.description,
        prometheus=spec.prometheus,
        buckets=spec.buckets,
        source=spec.name,
    )


def _semconv_spec(official: str, spec: MetricSpec) -> FamilySpec:
    return FamilySpec(
        name=official,
        instrument=spec.instrument,
        unit=spec.unit,
        description=spec.description,
        prometheus=prometheus_name(official, spec.unit, spec.instrument),
        buckets=spec.buckets,
        source=spec.name,
    )


def family_specs(*, semconv: bool = False) -> list[FamilySpec]:
    """Every family an exporter may emit, in a stable order (catalog, semconv names, self-metrics).

    Fixed per ``semconv`` setting, so OpenTelemetry instruments can be created once up front.
    """
    specs = [_from_catalog(m) for m in METRICS.values()]
    if semconv:
        for table in SEMCONV.values():
            for source, entry in table.items():
                specs.append(_semconv_spec(str(entry["name"]), METRICS[source]))
    specs.extend(_from_catalog(m) for m in OPTIONAL_METRICS.values())
    specs.extend(_from_catalog(m) for m in SELF_METRICS.values())
    return specs


#: The catalog metrics :func:`_distribution_points` answers (the others: :func:`_gauge_points`).
_DISTRIBUTIONS: Final = frozenset(
    {
        "pool.connection.create_time",
        "pool.connection.wait_time",
        "pool.connection.use_time",
        "pool.connection.lifetime",
        "pool.connection.evictions",
        "pool.connection.validations",
        "pool.connection.errors",
    }
)


def _pool_points(snap: PoolSnapshot, source: str) -> Iterable[tuple[dict[str, str], Value]]:
    """The points of catalog metric ``source`` for one pool, with poolmon attribute names."""
    name = {"pool.name": snap.name}
    if source in _DISTRIBUTIONS:
        return _distribution_points(snap, source, name)
    if source in _STREAMS:
        return _stream_points(snap, source, name)
    return _gauge_points(snap, source, name)


#: The multiplexed-connection gauges (spec 1.1, section 15), answered by :func:`_stream_points`.
_STREAMS: Final = frozenset({"pool.stream.usage", "pool.stream.capacity"})


def _stream_points(
    snap: PoolSnapshot, source: str, name: dict[str, str]
) -> Iterable[tuple[dict[str, str], Value]]:
    """Streams in use and stream capacity: no point for a pool that never had a multiplexed
    connection (a capacity of 0 would read as saturation)."""
    if snap.streams_max is None:
        return
    if source == "pool.stream.usage":
        yield name, float(snap.streams_used)
    else:
        yield name, float(snap.streams_max)


def _gauge_points(
    snap: PoolSnapshot, source: str, name: dict[str, str]
) -> Iterable[tuple[dict[str, str], Value]]:
    """Current levels and limits (one point each, or one per connection state)."""
    if source == "pool.connection.usage":
        yield {**name, "pool.connection.state": "idle"}, float(snap.idle)
        yield {**name, "pool.connection.state": "used"}, float(snap.used)
    elif source == "pool.connection.max":
        if snap.max is not None:
            yield name, float(snap.max)
    elif source == "pool.connection.idle.max":
        if snap.idle_max is not None:
            yield name, float(snap.idle_max)
    elif source == "pool.connection.idle.min":
        if snap.min is not None:
            yield name, float(snap.min)
    elif source == "pool.connection.pending_requests":
        yield name, float(snap.pending)
    elif source == "pool.connection.timeouts":
        yield name, float(snap.timeouts)
    elif source == "pool.connection.oldest_use":
        yield name, float(snap.oldest_use)
    elif source == "pool.info":
        yield snap.identity.as_attributes(), 1.0


def _distribution_points(
    snap: PoolSnapshot, source: str, name: dict[str, str]
) -> Iterable[tuple[dict[str, str], Value]]:
    """Histograms and counts by outcome, reason or error type (:data:`_DISTRIBUTIONS`)."""
    if source == "pool.connection.create_time":
        for outcome, hist in snap.create_time.items():
            yield {**name, "outcome": outcome}, hist
    elif source == "pool.connection.wait_time":
        yield name, snap.wait_time
    elif source == "pool.connection.use_time":
        yield name, snap.use_time
    elif source == "pool.connection.lifetime":
        yield name, snap.lifetime
    elif source == "pool.connection.evictions":
        for reason, count in snap.evictions.items():
            yield {**name, "pool.eviction.reason": reason}, float(count)
    elif source == "pool.connection.validations":
        for outcome, count in snap.validations.items():
            yield {**name, "outcome": outcome}, float(count)
    elif source == "pool.connection.errors":
        for error_type, count in snap.errors.items():
            yield {**name, "error.type": error_type}, float(count)


def _url_scheme(snap: PoolSnapshot) -> str:
    if snap.name.startswith("https://"):
        return "https"
    if snap.name.startswith("http://"):
        return "http"
    return "https" if snap.identity.server_port == 443 else "http"


def _semconv_attributes(
    entry: Mapping[str, object], attrs: Mapping[str, str], snap: PoolSnapshot
) -> dict[str, str]:
    """Rename poolmon attributes to the official ones for a semconv table entry."""
    renames = entry.get("attributes", {})
    assert isinstance(renames, Mapping)
    state_values = entry.get("state_values", {})
    assert isinstance(state_values, Mapping)
    identity_keys = entry.get("identity_attributes")
    out: dict[str, str] = {}
    for key, value in attrs.items():
        if key == "pool.name" and identity_keys is not None:
            continue  # HTTP conventions key connections by server, not by pool
        if key == "pool.connection.state":
            value = str(state_values.get(value, value))
        out[str(renames.get(key, key))] = value
    if isinstance(identity_keys, Sequence):
        ident = snap.identity
        for key in identity_keys:
            if key == "server.address" and ident.server_address:
                out[key] = ident.server_address
            elif key == "server.port" and ident.server_port is not None:
                out[key] = str(ident.server_port)
            elif key == "url.scheme":
                out[key] = _url_scheme(snap)
            elif key == "network.protocol.version" and snap.protocol_version:
                out[key] = snap.protocol_version
    return out


def build_families(
    snapshots: Sequence[PoolSnapshot],
    self_metrics: Mapping[str, Mapping[str, int]],
    *,
    semconv: bool = False,
) -> list[Family]:
    """All families with their points for one collection. O(pools x metrics)."""
    families = {spec.name: Family(spec) for spec in family_specs(semconv=semconv)}
    for snap in snapshots:
        kind = semconv_kind(snap.identity.system) if semconv else None
        # A pool whose library already publishes the official series keeps poolmon's names:
        # emitting db.client.connection.* a second time would double every total.
        if snap.semconv_exported_by is not None:
            kind = None
        table = SEMCONV.get(kind, {}) if kind else {}
        for source in METRICS:
            entry = table.get(source)
            if entry is None:
                family = families[source]
                for attrs, value in _pool_points(snap, source):
                    family.add(attrs, value)
            else:
                family = families[str(entry["name"])]
                for attrs, value in _pool_points(snap, source):
                    family.add(_semconv_attributes(entry, attrs, snap), value)
        # Spec 1.1 optional metrics (bursts, tenants, routing): only pools that have them.
        for optional_name, rows in snap.optional.items():
            optional = families.get(optional_name)
            if optional is not None:
                for point_attrs, point in rows:
                    optional.add({"pool.name": snap.name, **point_attrs}, point)
    for metric_name, spec in SELF_METRICS.items():
        family = families[metric_name]
        if metric_name == "poolmon.pools":
            family.add({}, float(len(snapshots)))
            continue
        label = spec.attributes[0] if spec.attributes else "label"
        for label_value, count in self_metrics.get(metric_name, {}).items():
            family.add({label: label_value}, float(count))
    return list(families.values())


def merge_families(base: Sequence[Family], extra: Iterable[Family]) -> list[Family]:
    """``base`` with ``extra``'s points added: one family per name, new names appended."""
    by_name = {f.spec.name: f for f in base}
    out = list(base)
    for family in extra:
        target = by_name.get(family.spec.name)
        if target is None:
            target = Family(family.spec)
            by_name[family.spec.name] = target
            out.append(target)
        for attrs, value in family.points.items():
            target.add(dict(attrs), value)
    return out
