"""What every ``poolmon top`` source produces: per-pool samples of the catalog's metrics.

A source (a ``/metrics`` URL, a Prometheus server, a JSONL replay, a local registry) turns what it
reads into :class:`PoolSample` records grouped in a :class:`SourceResult`. The model never knows
where a sample came from, so every source gets the same rates, quantiles, sorting and totals.

:class:`SampleBuilder` assembles samples from ``(metric name, labels, value)`` triples named as in
the Prometheus form of the catalog (spec/catalog.json), which is what both the exposition text and
Prometheus' query API return.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from poolmon.core.catalog import BUCKETS, METRICS
from poolmon.core.snapshot import PoolSnapshot

__all__ = [
    "CREATE_BOUNDS",
    "CREATE_COUNT_METRIC",
    "DOCTOR_METRICS",
    "ERRORS_METRIC",
    "EVICTIONS_METRIC",
    "INFO_METRIC",
    "LIFETIME_BOUNDS",
    "USE_BOUNDS",
    "WAIT_BOUNDS",
    "WAIT_BUCKET_METRIC",
    "WANTED_METRICS",
    "PoolAccumulator",
    "PoolSample",
    "SampleBuilder",
    "SourceResult",
    "WindowStats",
    "build_sample",
    "field_for",
    "le_value",
    "sample_from_snapshot",
]

#: Bucket bounds of ``pool.connection.wait_time`` (the spec fixes them).
WAIT_BOUNDS: Final[tuple[float, ...]] = BUCKETS["wait_time"]


def _prom(name: str) -> str:
    return METRICS[name].prometheus


_COUNT: Final = _prom("pool.connection.usage")
_MAX: Final = _prom("pool.connection.max")
_PENDING: Final = _prom("pool.connection.pending_requests")
_TIMEOUTS: Final = _prom("pool.connection.timeouts")
_OLDEST: Final = _prom("pool.connection.oldest_use")
_EVICTIONS: Final = _prom("pool.connection.evictions")
_ERRORS: Final = _prom("pool.connection.errors")
_INFO: Final = _prom("pool.info")
_STREAMS: Final = _prom("pool.stream.usage")
_STREAMS_MAX: Final = _prom("pool.stream.capacity")
#: ``pool_info``: one series per pool, so its scrape timestamp dates a whole pool's sample.
INFO_METRIC: Final = _INFO
_WAIT_BUCKET: Final = _prom("pool.connection.wait_time") + "_bucket"
_WAIT_SUM: Final = _prom("pool.connection.wait_time") + "_sum"
_CREATE_COUNT: Final = _prom("pool.connection.create_time") + "_count"
_CREATE_BUCKET: Final = _prom("pool.connection.create_time") + "_bucket"
_CREATE_SUM: Final = _prom("pool.connection.create_time") + "_sum"
_USE_COUNT: Final = _prom("pool.connection.use_time") + "_count"
_USE_SUM: Final = _prom("pool.connection.use_time") + "_sum"
_LIFE_BUCKET: Final = _prom("pool.connection.lifetime") + "_bucket"
_LIFE_SUM: Final = _prom("pool.connection.lifetime") + "_sum"
_VALIDATIONS: Final = _prom("pool.connection.validations")
_MIN: Final = _prom("pool.connection.idle.min")
#: Creates by outcome: the only create-time series ``top`` reads (its buckets are skipped).
CREATE_COUNT_METRIC: Final = _CREATE_COUNT
#: The counters and buckets a Prometheus source asks ``rate()`` of (:class:`WindowStats`).
EVICTIONS_METRIC: Final = _EVICTIONS
ERRORS_METRIC: Final = _ERRORS
WAIT_BUCKET_METRIC: Final = _WAIT_BUCKET

#: Sample names ``top`` reads; everything else in an exposition is skipped unparsed (speed).
WANTED_METRICS: Final[tuple[str, ...]] = (
    _COUNT,
    _MAX,
    _STREAMS,
    _STREAMS_MAX,
    _PENDING,
    _TIMEOUTS,
    _OLDEST,
    _EVICTIONS,
    _ERRORS,
    _INFO,
    _WAIT_BUCKET,
    _WAIT_SUM,
    _CREATE_COUNT,
    _LIFE_BUCKET,  # the detail view draws the lifetime distribution
)

#: What ``poolmon doctor`` reads: ``top``'s series but the lifetime buckets (no rule needs them),
#: plus the create-time histogram, use-time count and sum, validations and the minimum size
#: (``top`` skips those for speed; a :class:`PoolSample` has them empty then).
DOCTOR_METRICS: Final[tuple[str, ...]] = (
    *(m for m in WANTED_METRICS if m != _LIFE_BUCKET),
    _CREATE_BUCKET,
    _CREATE_SUM,
    _USE_COUNT,
    _USE_SUM,
    _VALIDATIONS,
    _MIN,
)

#: Bucket bounds of the other histograms (the spec fixes them too).
USE_BOUNDS: Final[tuple[float, ...]] = BUCKETS["use_time"]
CREATE_BOUNDS: Final[tuple[float, ...]] = BUCKETS["create_time"]
LIFETIME_BOUNDS: Final[tuple[float, ...]] = BUCKETS["lifetime"]

_POOL: Final = "pool_name"


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Rates and recent wait quantiles a source computed itself over a time window (a
    Prometheus server, with PromQL ``rate`` and ``histogram_quantile``), so they are known from
    the first sample. A field is ``None`` when the source had nothing to say about it; the model
    then computes it from successive samples as for any other source.
    """

    creates_per_s: float | None = None
    evictions_per_s: Mapping[str, float] | None = None
    errors_per_s: float | None = None
    #: p50, p95, p99 of the waits in the window (each ``None`` when nobody waited in it).
    wait_quantiles: tuple[float | None, float | None, float | None] | None = None


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One pool as one source saw it at one moment. Counters are totals since the pool was known.

    ``wait_cumulative`` holds Prometheus-style cumulative bucket counts for :data:`WAIT_BOUNDS`
    followed by the ``+Inf`` total.
    """

    name: str
    system: str = "generic"
    resource: str = "connection"  # what the pool lends (spec 1.1 ``pool.resource``)
    server_address: str | None = None
    server_port: str | None = None
    pid: str | None = None
    idle: float = 0.0
    used: float = 0.0
    pending: float = 0.0
    max: float | None = None
    oldest_use: float = 0.0
    timeouts: float = 0.0
    creates: float = 0.0
    create_errors: float = 0.0
    evictions: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)
    wait_cumulative: tuple[float, ...] = ()
    wait_sum: float = 0.0
    library: str | None = None
    #: Cumulative lifetime buckets (``top`` draws them; ``doctor`` does not read them).
    lifetime_cumulative: tuple[float, ...] = ()
    # Read by ``poolmon doctor`` only (DOCTOR_METRICS); empty/zero from ``top``'s page sources.
    min: float | None = None
    use_count: float = 0.0  # returns (borrows that ended)
    use_sum: float = 0.0
    create_cumulative: tuple[float, ...] = ()  # outcome ok
    create_sum: float = 0.0
    lifetime_sum: float = 0.0
    validations: Mapping[str, float] = field(default_factory=dict)
    window: WindowStats | None = None
    #: Multiplexed pools only (spec 1.1): streams in use and stream capacity; None otherwise.
    streams: float | None = None
    streams_max: float | None = None

    @property
    def backend(self) -> str:
        """``host:port`` of what the pool talks to (``-`` when the source did not say)."""
        if not self.server_address:
            return "-"
        if self.server_port:
            return f"{self.server_address}:{self.server_port}"
        return self.server_address


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What one source (or one Prometheus ``instance``) returned in one fetch.

    ``taken_at`` is the time the values describe, in seconds on a clock the source keeps
    consistent between fetches (rates are differences of it); ``ok=False`` marks a source that is
    down, with ``error`` saying why (already free of credentials).
    """

    source: str
    ok: bool
    taken_at: float
    pools: tuple[PoolSample, ...] = ()
    error: str | None = None
    #: Backends' own counts and proxy pools' upstreams (spec section 12; poolmon.top.capacity).
    backends: tuple[Any, ...] = ()
    proxy_links: tuple[Any, ...] = ()


class PoolAccumulator:
    """Mutable fields of one pool while its samples are read (then :func:`build_sample`).

    ``evictions``, ``errors`` and ``wait`` are replaced wholesale or updated key by key; a
    :class:`PoolSample` built from it gets copies.
    """

    __slots__ = (
        "create",
        "create_errors",
        "create_sum",
        "creates",
        "errors",
        "evictions",
        "idle",
        "info",
        "life",
        "life_sum",
        "max",
        "min",
        "oldest",
        "pending",
        "streams",
        "streams_max",
        "timeouts",
        "use_count",
        "use_sum",
        "used",
        "validations",
        "wait",
        "wait_sum",
    )

    def __init__(self) -> None:
        self.info: Mapping[str, str] = {}
        self.idle = 0.0
        self.used = 0.0
        self.pending = 0.0
        self.max: float | None = None
        self.streams: float | None = None
        self.streams_max: float | None = None
        self.oldest = 0.0
        self.timeouts = 0.0
        self.creates = 0.0
        self.create_errors = 0.0
        self.evictions: dict[str, float] = {}
        self.errors: dict[str, float] = {}
        self.wait: dict[float, float] = {}
        self.wait_sum = 0.0
        self.min: float | None = None
        self.use_count = 0.0
        self.use_sum = 0.0
        self.create: dict[float, float] = {}
        self.create_sum = 0.0
        self.life: dict[float, float] = {}
        self.life_sum = 0.0
        self.validations: dict[str, float] = {}


class SampleBuilder:
    """Collects ``(name, labels, value)`` triples and builds one :class:`PoolSample` per pool.

    Names outside ``wanted`` (default: what ``top`` reads) and samples without a ``pool_name``
    label are ignored, so a source may feed everything it has. Pools appear in the order first
    seen.
    """

    __slots__ = ("_pools", "_wanted")

    def __init__(self, wanted: tuple[str, ...] = WANTED_METRICS) -> None:
        self._pools: dict[str, PoolAccumulator] = {}
        self._wanted = frozenset(wanted)

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        pool = labels.get(_POOL)
        if pool is None or name not in self._wanted:
            return
        target = field_for(name, labels)
        if target is None:
            return
        acc = self._pools.get(pool)
        if acc is None:
            acc = self._pools[pool] = PoolAccumulator()
        attr, key = target
        if key is not None:
            getattr(acc, attr)[key] = value
        elif attr == "info":
            acc.info = labels
        else:
            setattr(acc, attr, value)

    def add_all(self, triples: Iterable[tuple[str, Mapping[str, str], float]]) -> None:
        for name, labels, value in triples:
            self.add(name, labels, value)

    def build(self) -> tuple[PoolSample, ...]:
        return tuple(build_sample(name, acc) for name, acc in self._pools.items())


_INF: Final = float("inf")
_ZEROS: Final = itertools.repeat(0.0)


_SCALARS: Final[Mapping[str, str]] = {
    _MAX: "max",
    _PENDING: "pending",
    _TIMEOUTS: "timeouts",
    _OLDEST: "oldest",
    _WAIT_SUM: "wait_sum",
    _INFO: "info",
    _USE_SUM: "use_sum",
    _USE_COUNT: "use_count",
    _LIFE_SUM: "life_sum",
    _MIN: "min",
    _STREAMS: "streams",
    _STREAMS_MAX: "streams_max",
}
#: Keyed fields: sample name -> (accumulator dict, the label that keys it).
_KEYED: Final[Mapping[str, tuple[str, str]]] = {
    _EVICTIONS: ("evictions", "pool_eviction_reason"),
    _ERRORS: ("errors", "error_type"),
    _WAIT_BUCKET: ("wait", "le"),
    _LIFE_BUCKET: ("life", "le"),
    _VALIDATIONS: ("validations", "outcome"),
}


def field_for(name: str, labels: Mapping[str, str]) -> tuple[str, str | float | None] | None:
    """Where a sample goes in a :class:`PoolAccumulator`: ``(attribute, key)``.

    ``key`` is None for a plain value (``info`` takes the labels, not the value); otherwise the
    attribute is a dict and ``key`` its key (a reason, an error type, a bucket bound). ``None``
    for samples ``top`` does not read.
    """
    attr = _SCALARS.get(name)
    if attr is not None:
        return attr, None
    keyed = _KEYED.get(name)
    if keyed is not None:
        attr, label = keyed
        if label == "le":
            return attr, le_value(labels.get("le", "+Inf"))
        return attr, labels.get(label, "other")
    if name == _COUNT:
        return ("used" if labels.get("pool_connection_state") == "used" else "idle"), None
    if name == _CREATE_COUNT:
        return ("create_errors" if labels.get("outcome") == "error" else "creates"), None
    if labels.get("outcome", "ok") == "ok":  # the create-time histogram of successful creates
        if name == _CREATE_BUCKET:
            return "create", le_value(labels.get("le", "+Inf"))
        if name == _CREATE_SUM:
            return "create_sum", None
    return None


def le_value(text: str) -> float:
    """A bucket's ``le`` label as a number (``+Inf`` and garbage as infinity)."""
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _cumulative(buckets: Mapping[float, float], bounds: tuple[float, ...]) -> tuple[float, ...]:
    if not buckets:
        return ()
    # Read at the spec's bounds (every poolmon exporter uses them); a bucket the source did
    # not send counts 0, and +Inf falls back to the largest count seen.
    total = buckets.get(_INF, max(buckets.values()))
    return (*map(buckets.get, bounds, _ZEROS), total)


def build_sample(name: str, acc: PoolAccumulator) -> PoolSample:
    """The immutable sample of an accumulator."""
    info = acc.info
    cumulative = _cumulative(acc.wait, WAIT_BOUNDS)
    return PoolSample(
        name=name,
        system=info.get("pool_system", "generic") or "generic",
        resource=info.get("pool_resource") or "connection",
        server_address=info.get("server_address") or None,
        server_port=info.get("server_port") or None,
        pid=info.get("process_pid") or None,
        idle=acc.idle,
        used=acc.used,
        pending=acc.pending,
        max=acc.max,
        oldest_use=acc.oldest,
        timeouts=acc.timeouts,
        creates=acc.creates,
        create_errors=acc.create_errors,
        # Copies: the accumulator keeps changing, a sample (kept by the model for rates) must not.
        evictions=dict(acc.evictions),
        errors=dict(acc.errors),
        wait_cumulative=cumulative,
        wait_sum=acc.wait_sum,
        min=acc.min,
        library=info.get("pool_library") or None,
        use_count=acc.use_count,
        use_sum=acc.use_sum,
        create_cumulative=_cumulative(acc.create, CREATE_BOUNDS),
        create_sum=acc.create_sum,
        lifetime_cumulative=_cumulative(acc.life, LIFETIME_BOUNDS),
        lifetime_sum=acc.life_sum,
        validations=dict(acc.validations),
        streams=acc.streams,
        streams_max=acc.streams_max,
    )


def sample_from_snapshot(snap: PoolSnapshot) -> PoolSample:
    """The sample of an in-process snapshot (local registry, JSONL replay)."""
    ident = snap.identity
    return PoolSample(
        name=snap.name,
        system=ident.system,
        resource=ident.resource,
        server_address=ident.server_address,
        server_port=None if ident.server_port is None else str(ident.server_port),
        pid=str(ident.pid),
        idle=float(snap.idle),
        used=float(snap.used),
        pending=float(snap.pending),
        max=None if snap.max is None else float(snap.max),
        oldest_use=snap.oldest_use,
        timeouts=float(snap.timeouts),
        creates=float(snap.create_time["ok"].count),
        create_errors=float(snap.create_time["error"].count),
        evictions={k: float(v) for k, v in snap.evictions.items()},
        errors={k: float(v) for k, v in snap.errors.items()},
        wait_cumulative=tuple(float(c) for c in snap.wait_time.cumulative()),
        wait_sum=snap.wait_time.sum,
        min=None if snap.min is None else float(snap.min),
        library=ident.library,
        use_count=float(snap.use_time.count),
        use_sum=snap.use_time.sum,
        create_cumulative=tuple(float(c) for c in snap.create_time["ok"].cumulative()),
        create_sum=snap.create_time["ok"].sum,
        lifetime_cumulative=tuple(float(c) for c in snap.lifetime.cumulative()),
        lifetime_sum=snap.lifetime.sum,
        validations={k: float(v) for k, v in snap.validations.items()},
        streams=None if snap.streams_max is None else float(snap.streams_used),
        streams_max=None if snap.streams_max is None else float(snap.streams_max),
    )
