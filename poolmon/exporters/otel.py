"""OpenTelemetry metrics: the catalog's instruments on a MeterProvider, reading pool snapshots.

Nothing here runs per pool event (an SDK instrument call costs ~6 us, more than a whole pool
cycle). Everything is read from :meth:`PoolRegistry.snapshot` at collection time:

* **counts, gauges, counters** are observable instruments (``ObservableUpDownCounter``,
  ``ObservableGauge``, ``ObservableCounter`` reporting poolmon's cumulative totals) whose
  callbacks return the points of the shared model (:mod:`poolmon.exporters.model`).
* **histograms**: the SDK has no observable histogram, and this SDK (1.45) has no ``MetricProducer``
  hook either (the private SDK names this needs are all in
  :mod:`poolmon.exporters._otel_sdk_bridge`, gated on the SDK versions they were checked against; on
  any other version histograms are skipped with one warning, the rest exports). poolmon's histograms
  already are fixed-bucket aggregates, so the bridge hands them over as finished
  ``HistogramDataPoint`` s: it decorates each SDK reader's collect callback (the single funnel every
  reader - periodic OTLP, Prometheus, in-memory - collects through) so that the ``MetricsData`` the
  SDK produced gets poolmon's histogram metrics appended in the ``poolmon`` scope, in the reader's
  temporality (cumulative, or delta computed per reader). Bucket counts are exactly poolmon's;
  min/max are not tracked and left unset. This is the spec's MetricProducer idea, done at the one
  point the Python SDK allows. Without an SDK MeterProvider (the API's no-op or proxy), observable
  instruments still work and histograms attach on the first collection by an SDK provider.

One set of instruments exists per MeterProvider (the SDK returns the first instrument for a
duplicate name, so a second set would silently never be called); every enabled bridge on that
provider contributes points to it. poolmon holds providers only weakly: a provider its owner drops
(or an OTLP handle shut down and dropped) is garbage collected as without poolmon. :func:`enable` is
idempotent per (provider, registry), which is what lets ``opentelemetry-instrument`` (its configured
global provider) and the application both call it. Failures inside a collection are counted in
``poolmon_export_errors_total{exporter="otel"}`` and logged once; they never propagate into the SDK
or the application.

:func:`start_otlp` builds a private SDK MeterProvider with a periodic OTLP exporter honouring the
standard ``OTEL_*`` environment variables; export failures are counted (``exporter="otlp"``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from poolmon.core.redact import redact_url, scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import SelfMetrics, log_once
from poolmon.core.snapshot import HistogramSnapshot
from poolmon.errors import ConfigError
from poolmon.exporters import _otel_sdk_bridge
from poolmon.exporters.backends import backend_family_specs
from poolmon.exporters.model import (
    Attributes,
    Family,
    FamilySource,
    FamilySpec,
    build_families,
    family_specs,
    merge_families,
)

__all__ = ["SCOPE_NAME", "OtelBridge", "OtlpHandle", "enable", "start_otlp"]

_log = logging.getLogger("poolmon.exporters")

#: The instrumentation scope poolmon's metrics are reported under.
SCOPE_NAME: Final = "poolmon"
_PROTOCOLS: Final = ("http/protobuf", "grpc")
# Attributes the semantic conventions type as integers (Prometheus labels are strings anyway).
_INT_ATTRIBUTES: Final = frozenset({"server.port", "process.pid"})
# Without a hooked reader (API proxy provider) callbacks share one computation for this long.
_CACHE_SECONDS: Final = 0.5


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("poolmon")
    except metadata.PackageNotFoundError:
        return "0"


def _otel_attributes(attrs: Attributes) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for key, value in attrs:
        if key in _INT_ATTRIBUTES and value.isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _count_failure(self_metrics: SelfMetrics, exporter: str, what: str, exc: BaseException) -> None:
    self_metrics.inc("poolmon.export.errors", exporter)
    log_once(
        _log,
        f"{exporter}:{what}",
        "poolmon: OpenTelemetry %s failed (%s); further failures are only counted in "
        'poolmon_export_errors_total{exporter="%s"}',
        what,
        scrub(f"{type(exc).__name__}: {exc}"),
        exporter,
    )


class OtelBridge:
    """poolmon's metrics for one poolmon registry on one MeterProvider. Made by :func:`enable`."""

    def __init__(
        self, state: _ProviderState, registry: PoolRegistry | None, *, semconv: bool
    ) -> None:
        self._state = state
        self._registry = registry
        self.semconv = semconv
        self._cache_lock = threading.Lock()
        self._cache: tuple[float, dict[str, Family]] | None = None
        self._enabled = True
        self._sources: tuple[FamilySource, ...] = ()

    def add_source(self, source: FamilySource) -> None:
        """Merge ``source()``'s families into every collection (e.g. the backend poller's)."""
        self._sources = (*self._sources, source)

    def remove_source(self, source: FamilySource) -> None:
        self._sources = tuple(s for s in self._sources if s is not source)

    @property
    def meter_provider(self) -> MeterProvider | None:
        """The provider reported on (None once its owner dropped it and it was collected)."""
        return self._state.provider

    @property
    def registry(self) -> PoolRegistry:
        return self._registry if self._registry is not None else get_default_registry()

    @property
    def given_registry(self) -> PoolRegistry | None:
        """The registry given to :func:`enable` (None: the default one at each collection)."""
        return self._registry

    @property
    def enabled(self) -> bool:
        return self._enabled

    def collect_families(self) -> dict[str, Family]:
        """One consistent set of families from fresh snapshots (failures counted, never raised)."""
        registry = self.registry
        try:
            families = build_families(
                registry.snapshot(), registry.self_metrics.snapshot(), semconv=self.semconv
            )
            for source in self._sources:
                families = merge_families(families, source())
        except Exception as exc:
            _count_failure(registry.self_metrics, "otel", "collection", exc)
            return {}
        return {f.spec.name: f for f in families}

    def families_for_callback(self) -> dict[str, Family]:
        """The families for the instruments' callbacks: the ones the reader hook computed for
        the collection running in this thread, else one computation shared between them."""
        current = _collection.families
        if current is not None and self in current:
            return current[self]
        # Not inside a hooked collection (no SDK reader hooked): share one computation between
        # the instruments' callbacks of a collection rather than snapshotting once per metric.
        now = time.monotonic()
        with self._cache_lock:
            if self._cache is not None and now - self._cache[0] < _CACHE_SECONDS:
                return self._cache[1]
            families = self.collect_families()
            self._cache = (now, families)
            return families

    def disable(self) -> None:
        """Stop reporting (instruments of an SDK provider cannot be removed; they go silent)."""
        self._enabled = False
        state = self._state
        with _states_lock:
            state.bridges = tuple(b for b in state.bridges if b is not self)
            if not state.bridges:
                state.unhook_readers()


class _Collection(threading.local):
    # Families computed by the reader hook for the collection running in this thread, so every
    # callback and the histogram append of one collection see the same snapshots.
    families: dict[OtelBridge, dict[str, Family]] | None = None


_collection = _Collection()


class _ProviderState:
    """Instruments and reader hooks of one MeterProvider, shared by its bridges."""

    def __init__(self, provider: MeterProvider) -> None:
        # Weak: the provider's instruments hold this state (their callbacks), not the reverse,
        # so dropping the provider frees both (and _states, keyed weakly, forgets them).
        self._provider = weakref.ref(provider)
        self.lock = threading.Lock()
        self.bridges: tuple[OtelBridge, ...] = ()
        self.meter: Meter = provider.get_meter(SCOPE_NAME, _version())
        # The union: bridges with either setting fit; backend families exist for bridges that
        # add the backend poller as a source (an instrument nobody feeds reports nothing).
        self.specs = family_specs(semconv=True) + backend_family_specs()
        self.sdk = _otel_sdk_bridge.load() if isinstance(provider, SdkMeterProvider) else None
        if self.sdk is None and isinstance(provider, SdkMeterProvider):
            log_once(
                _log,
                "otel:histograms-unsupported",
                "poolmon: histograms are not exported over OpenTelemetry (%s); counts and "
                "gauges are",
                _otel_sdk_bridge.unsupported_reason(),
            )
        self.histograms = [s for s in self.specs if s.instrument == "histogram"]
        # reader -> the collect callback it had before we decorated it
        self._hooked: weakref.WeakKeyDictionary[MetricReader, Any] = weakref.WeakKeyDictionary()
        # (reader, metric name, attributes) -> last cumulative value, for delta readers
        self._last: weakref.WeakKeyDictionary[
            MetricReader, dict[tuple[str, Attributes], HistogramSnapshot]
        ] = weakref.WeakKeyDictionary()
        self._last_time: weakref.WeakKeyDictionary[MetricReader, int] = weakref.WeakKeyDictionary()
        self.start_ns = time.time_ns()
        for spec in self.specs:
            self._create_instrument(spec)

    def _create_instrument(self, spec: FamilySpec) -> None:
        if spec.instrument == "histogram":
            return
        callback = self._callback_for(spec.name)
        kwargs: dict[str, Any] = {
            "callbacks": [callback],
            "unit": spec.unit,
            "description": spec.description,
        }
        if spec.instrument == "counter":
            self.meter.create_observable_counter(spec.name, **kwargs)
        elif spec.instrument == "updowncounter":
            self.meter.create_observable_up_down_counter(spec.name, **kwargs)
        else:
            self.meter.create_observable_gauge(spec.name, **kwargs)

    def _callback_for(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            self.hook_readers()  # readers added to the provider later (add_metric_reader)
            out: list[Observation] = []
            for bridge in self.bridges:
                family = bridge.families_for_callback().get(name)
                if family is None:
                    continue
                for attrs, value in family.points.items():
                    if not isinstance(value, HistogramSnapshot):
                        out.append(Observation(value, _otel_attributes(attrs)))
            return out

        callback.__qualname__ = f"poolmon:{name}"
        return callback

    # ------------------------------------------------------------------ histogram hook

    @property
    def provider(self) -> MeterProvider | None:
        return self._provider()

    def hook_readers(self) -> None:
        sdk, provider = self.sdk, self.provider
        if sdk is None or provider is None:
            return  # no SDK provider, or an SDK the bridge was not checked against
        readers = sdk.readers(provider)
        if len(readers) == len(self._hooked):
            return  # fast path: nothing new
        with self.lock:
            for reader in readers:
                if reader in self._hooked:
                    continue
                original = sdk.collect_callback(reader)
                if original is None:
                    continue
                self._hooked[reader] = original
                sdk.set_collect_callback(reader, self._wrap(original))

    def unhook_readers(self) -> None:
        sdk = self.sdk
        with self.lock:
            if sdk is not None:
                for reader, original in list(self._hooked.items()):
                    sdk.set_collect_callback(reader, original)
            self._hooked.clear()

    def _wrap(self, original: Any) -> Callable[..., MetricsData | None]:
        state_ref = weakref.ref(self)

        def collect(reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
            state = state_ref()
            if state is None or not state.bridges:
                return original(reader, timeout_millis=timeout_millis)  # type: ignore[no-any-return]
            computed = {bridge: bridge.collect_families() for bridge in state.bridges}
            _collection.families = computed
            try:
                data = original(reader, timeout_millis=timeout_millis)
            finally:
                _collection.families = None
            try:
                return state.append_histograms(reader, data, computed)
            except Exception as exc:
                for bridge in computed:
                    _count_failure(bridge.registry.self_metrics, "otel", "histogram bridge", exc)
                return data  # type: ignore[no-any-return]

        return collect

    def append_histograms(
        self,
        reader: MetricReader,
        data: MetricsData | None,
        computed: Mapping[OtelBridge, Mapping[str, Family]],
    ) -> MetricsData | None:
        sdk, provider = self.sdk, self.provider
        if sdk is None or provider is None:
            return data
        temporality = sdk.histogram_temporality(reader)
        now = time.time_ns()
        delta = temporality == AggregationTemporality.DELTA
        last = self._last.setdefault(reader, {})
        start = self._last_time.get(reader, self.start_ns) if delta else self.start_ns
        metrics: list[Metric] = []
        for spec in self.histograms:
            merged: dict[Attributes, HistogramSnapshot] = {}
            for families in computed.values():
                family = families.get(spec.name)
                if family is None:
                    continue
                for attrs, value in family.points.items():
                    assert isinstance(value, HistogramSnapshot)
                    prev = merged.get(attrs)
                    merged[attrs] = value if prev is None else prev.merged(value)
            if not merged:
                continue
            points = []
            for attrs, hist in merged.items():
                reported = hist
                if delta:
                    before = last.get((spec.name, attrs))
                    last[(spec.name, attrs)] = hist
                    reported = _difference(hist, before)
                points.append(
                    HistogramDataPoint(
                        attributes=_otel_attributes(attrs),
                        start_time_unix_nano=start,
                        time_unix_nano=now,
                        count=reported.count,
                        sum=reported.sum,
                        bucket_counts=list(reported.counts),
                        explicit_bounds=list(reported.bounds),
                        min=None,  # type: ignore[arg-type]  # not tracked: left unset in OTLP
                        max=None,  # type: ignore[arg-type]
                    )
                )
            metrics.append(
                Metric(
                    name=spec.name,
                    description=spec.description,
                    unit=spec.unit,
                    data=Histogram(data_points=points, aggregation_temporality=temporality),
                )
            )
        if delta:
            self._last_time[reader] = now
        if not metrics:
            return data
        scope = sdk.scope(self.meter, InstrumentationScope(SCOPE_NAME, _version()))
        return _with_metrics(data, metrics, sdk.resource(provider), scope)


def _difference(now: HistogramSnapshot, before: HistogramSnapshot | None) -> HistogramSnapshot:
    if before is None or before.bounds != now.bounds:
        return now
    counts = tuple(a - b for a, b in zip(now.counts, before.counts, strict=False))
    if any(c < 0 for c in counts):
        return now  # the aggregate restarted (a forked child, a re-registered pool)
    return HistogramSnapshot(now.bounds, counts, now.sum - before.sum)


def _with_metrics(
    data: MetricsData | None,
    metrics: Sequence[Metric],
    resource: Resource,
    scope: InstrumentationScope,
) -> MetricsData:
    resource_metrics = list(data.resource_metrics) if data is not None else []
    if not resource_metrics:
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], "")])
    first = resource_metrics[0]
    scopes = list(first.scope_metrics)
    for i, sm in enumerate(scopes):
        if sm.scope.name == SCOPE_NAME:
            scopes[i] = ScopeMetrics(sm.scope, [*sm.metrics, *metrics], sm.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope, list(metrics), ""))
    resource_metrics[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
    return MetricsData(resource_metrics)


# One state per provider, for as long as the provider lives (weak keys: see _ProviderState).
_states_lock = threading.Lock()
_states: weakref.WeakKeyDictionary[MeterProvider, _ProviderState] = weakref.WeakKeyDictionary()


def enable(
    *,
    meter_provider: MeterProvider | None = None,
    registry: PoolRegistry | None = None,
    semconv: bool = False,
) -> OtelBridge:
    """Report ``registry``'s pools (default registry when None) on ``meter_provider`` (default:
    the global one, e.g. configured by ``opentelemetry-instrument``).

    Idempotent: a second call for the same provider and registry returns the same bridge.
    """
    provider = meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
    with _states_lock:
        state = _states.get(provider)
        if state is None:
            state = _ProviderState(provider)
            _states[provider] = state
        for bridge in state.bridges:
            if bridge.given_registry is registry:
                return bridge
        bridge = OtelBridge(state, registry, semconv=semconv)
        state.bridges = (*state.bridges, bridge)
    state.hook_readers()
    return bridge


# ---------------------------------------------------------------------- OTLP


class _CountingExporter(MetricExporter):
    """Delegates to the OTLP exporter; a failed or raising export is counted, never raised."""

    def __init__(self, inner: MetricExporter, registry: PoolRegistry | None) -> None:
        super().__init__(**_otel_sdk_bridge.exporter_preferences(inner))
        self._inner = inner
        self._registry = registry
        self.failures = 0

    def _self_metrics(self) -> SelfMetrics:
        reg = self._registry if self._registry is not None else get_default_registry()
        return reg.self_metrics

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            self.failures += 1
            _count_failure(self._self_metrics(), "otlp", "export", exc)
            return MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.failures += 1
            _count_failure(
                self._self_metrics(), "otlp", "export", RuntimeError("endpoint did not accept")
            )
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _RepeatFilter(logging.Filter):
    """Lets each distinct message template of the OTLP exporter's loggers through once.

    The SDK exporter logs every failed export; poolmon's rule is one log line, then counting.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            key = str(record.msg)
            with self._lock:
                if key in self._seen:
                    return False
                self._seen.add(key)
        return True


_OTLP_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.sdk.metrics._internal.export",
)
_repeat_filter = _RepeatFilter()


class OtlpHandle:
    """A running OTLP export: poolmon's own SDK MeterProvider with a periodic reader."""

    def __init__(
        self,
        provider: SdkMeterProvider,
        reader: PeriodicExportingMetricReader,
        exporter: _CountingExporter,
        bridge: OtelBridge,
        endpoint: str | None,
    ) -> None:
        self.meter_provider = provider
        self.reader = reader
        self.bridge = bridge
        self.endpoint = endpoint
        self._exporter = exporter
        self._closed = False
        # The provider is built with shutdown_on_exit=False and this handle shuts it down at exit
        # instead: two owners (the SDK's atexit and Exporters.close / poolmon run's atexit) would
        # shut it down twice, and the SDK logs "shutdown can only be called once" on the second.
        atexit.register(self.shutdown)

    @property
    def failures(self) -> int:
        """Exports that failed since start (also in
        poolmon_export_errors_total{exporter="otlp"})."""
        return self._exporter.failures

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Collect and export now; False when the export failed (never raises)."""
        before = self._exporter.failures
        try:
            ok = self.meter_provider.force_flush(timeout_millis=timeout_millis)
        except Exception as exc:
            _count_failure(self.bridge.registry.self_metrics, "otlp", "flush", exc)
            return False
        return bool(ok) and self._exporter.failures == before

    def shutdown(self) -> None:
        """Export a last time and stop (idempotent; also run at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)  # released: nothing keeps the provider alive any more
        try:
            # First: the provider's last collection still carries poolmon's metrics.
            self.meter_provider.shutdown()
        except Exception as exc:
            _count_failure(self.bridge.registry.self_metrics, "otlp", "shutdown", exc)
        finally:
            self.bridge.disable()


def _make_exporter(
    protocol: str, endpoint: str | None, timeout: float | None
) -> tuple[MetricExporter, str | None]:
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        if endpoint is not None:
            kwargs["endpoint"] = endpoint
        return GrpcExporter(**kwargs), endpoint
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    if endpoint is not None:
        # Like OTEL_EXPORTER_OTLP_ENDPOINT: a base URL, the signal path appended.
        if not endpoint.rstrip("/").endswith("/v1/metrics"):
            endpoint = endpoint.rstrip("/") + "/v1/metrics"
        kwargs["endpoint"] = endpoint
    return HttpExporter(**kwargs), endpoint


def start_otlp(
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    interval: float | None = None,
    registry: PoolRegistry | None = None,
    semconv: bool = False,
    timeout: float | None = None,
    resource: Resource | None = None,
) -> OtlpHandle:
    """Export poolmon's metrics over OTLP from a MeterProvider of poolmon's own.

    ``endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/metrics`` is appended
    for HTTP); None uses the standard ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`` variables.
    ``protocol`` (``http/protobuf`` or ``grpc``) defaults to ``OTEL_EXPORTER_OTLP_[METRICS_]
    PROTOCOL`` or ``http/protobuf``; ``interval`` (seconds) to ``OTEL_METRIC_EXPORT_INTERVAL`` (ms)
    or 10 s; ``timeout`` (seconds) to ``OTEL_EXPORTER_OTLP_TIMEOUT``. The resource comes from
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``. An unreachable endpoint never affects the
    application: failed exports are counted in ``poolmon_export_errors_total{exporter="otlp"}``.
    """
    env = os.environ
    proto = (
        protocol
        or env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if proto not in _PROTOCOLS:
        raise ConfigError("protocol", proto, "one of " + ", ".join(_PROTOCOLS))
    if interval is None:
        raw = env.get("OTEL_METRIC_EXPORT_INTERVAL")
        try:
            interval = float(raw) / 1000.0 if raw else 10.0
        except ValueError:
            raise ConfigError(
                "OTEL_METRIC_EXPORT_INTERVAL", raw, "milliseconds as a number > 0"
            ) from None
    if not interval > 0:
        raise ConfigError("interval", interval, "a number of seconds > 0")
    if timeout is not None and not timeout > 0:
        raise ConfigError("timeout", timeout, "a number of seconds > 0")
    inner, resolved = _make_exporter(proto, endpoint, timeout)
    exporter = _CountingExporter(inner, registry)
    for name in _OTLP_LOGGERS:
        logger = logging.getLogger(name)
        if _repeat_filter not in logger.filters:
            logger.addFilter(_repeat_filter)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000.0)
    provider = SdkMeterProvider(
        metric_readers=[reader],
        resource=resource or Resource.create({}),
        shutdown_on_exit=False,  # OtlpHandle owns the shutdown (see OtlpHandle.__init__)
    )
    bridge = enable(meter_provider=provider, registry=registry, semconv=semconv)
    return OtlpHandle(
        provider, reader, exporter, bridge, None if resolved is None else redact_url(resolved)
    )
