"""The only module of poolmon that touches private names of the OpenTelemetry SDK.

The SDK has no observable histogram and (in the versions below) no ``MetricProducer`` hook, so
poolmon hands its finished fixed-bucket histograms to each SDK reader by decorating the reader's
collect callback (:mod:`poolmon.exporters.otel` explains why that is the one funnel). Doing so
needs these private names of ``opentelemetry-sdk``:

1. ``MeterProvider._measurement_consumer._reader_storages``: the provider's readers, including
   readers added later with ``add_metric_reader``;
2. ``MetricReader._collect`` and ``MetricReader._set_collect_callback``: the callback decorated;
3. ``MetricReader._instrument_class_temporality`` keyed by
   ``opentelemetry.sdk.metrics._internal.instrument._Histogram``: the reader's temporality;
4. ``MeterProvider._sdk_config.resource``: the resource of the appended metrics;
5. ``Meter._instrumentation_scope``: the scope they are reported under;
6. ``MetricExporter._preferred_temporality`` / ``_preferred_aggregation``: what the OTLP exporter
   asks for, passed on by poolmon's counting wrapper (the SDK's own periodic reader reads them
   the same way).

They were read in, and the bridge is tested against, the SDK versions of :data:`CHECKED` (the
installed 1.45.x). :func:`load` returns a :class:`SdkInternals` only on those versions and when
every name is present; otherwise ``None`` and :func:`unsupported_reason` says why, and the
exporter exports counts and gauges (public API only) and skips histograms with one warning.
Items 6 fall back to the SDK's defaults when missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Final

from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = [
    "CHECKED",
    "SdkInternals",
    "exporter_preferences",
    "load",
    "sdk_version",
    "unsupported_reason",
]

#: ``opentelemetry-sdk`` versions (major, minor) the private names above were checked against.
CHECKED_MINORS: Final = ((1, 45),)
#: The same as a requirement string, for messages and docs.
CHECKED: Final = ">=1.45,<1.46"

Collect = Callable[..., MetricsData | None]


def sdk_version() -> str:
    """The installed ``opentelemetry-sdk`` version ("unknown" when its metadata is missing)."""
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:
        return "unknown"


def _minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def unsupported_reason(version: str | None = None) -> str | None:
    """Why the histogram bridge cannot run here (None: it can)."""
    version = sdk_version() if version is None else version
    if _minor(version) not in CHECKED_MINORS:
        return (
            f"opentelemetry-sdk {version} is not a version poolmon's histogram bridge was "
            f"checked against ({CHECKED})"
        )
    missing = [name for name, ok in _probes() if not ok]
    if missing:
        return f"opentelemetry-sdk {version} lacks {', '.join(missing)}"
    return None


def _probes() -> list[tuple[str, bool]]:
    try:
        from opentelemetry.sdk.metrics._internal.instrument import _Histogram  # noqa: F401

        histogram_class = True
    except ImportError:
        histogram_class = False
    return [
        ("MetricReader._set_collect_callback", hasattr(MetricReader, "_set_collect_callback")),
        ("opentelemetry.sdk.metrics._internal.instrument._Histogram", histogram_class),
    ]


class SdkInternals:
    """Accessors for the private names (module docstring); each one degrades to "nothing" when
    an instance lacks what the class promised, never raising into a collection."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics._internal.instrument import _Histogram

        self._histogram_class: type[Any] = _Histogram

    def readers(self, provider: MeterProvider) -> list[MetricReader]:
        if not isinstance(provider, SdkMeterProvider):
            return []
        consumer = getattr(provider, "_measurement_consumer", None)
        storages = getattr(consumer, "_reader_storages", None)
        return list(storages) if isinstance(storages, Mapping) else []

    def collect_callback(self, reader: MetricReader) -> Collect | None:
        callback = getattr(reader, "_collect", None)
        return callback if callable(callback) else None

    def set_collect_callback(self, reader: MetricReader, callback: Collect) -> None:
        reader._set_collect_callback(callback)  # type: ignore[arg-type]

    def histogram_temporality(self, reader: MetricReader) -> AggregationTemporality:
        table = getattr(reader, "_instrument_class_temporality", {})
        value = table.get(self._histogram_class, AggregationTemporality.CUMULATIVE)
        if isinstance(value, AggregationTemporality):
            return value
        return AggregationTemporality.CUMULATIVE

    def resource(self, provider: MeterProvider) -> Resource:
        config = getattr(provider, "_sdk_config", None)
        resource = getattr(config, "resource", None)
        return resource if isinstance(resource, Resource) else Resource.create({})

    def scope(self, meter: Meter, default: InstrumentationScope) -> InstrumentationScope:
        scope = getattr(meter, "_instrumentation_scope", None)
        return scope if isinstance(scope, InstrumentationScope) else default


def load() -> SdkInternals | None:
    """The accessors when the installed SDK is one they were checked against, else None."""
    if unsupported_reason() is not None:
        return None
    return SdkInternals()


def exporter_preferences(exporter: MetricExporter) -> dict[str, Any]:
    """Keyword arguments that give a wrapping :class:`MetricExporter` the same preferred
    temporality and aggregation as ``exporter`` (the SDK's defaults when it does not say)."""
    return {
        "preferred_temporality": getattr(exporter, "_preferred_temporality", None),
        "preferred_aggregation": getattr(exporter, "_preferred_aggregation", None),
    }
