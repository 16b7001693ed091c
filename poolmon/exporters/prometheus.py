"""Prometheus exposition: a collector built at scrape time from pool snapshots, and ``/metrics``.

Names are exactly what the OpenTelemetry -> Prometheus translation makes of the catalog's OTel names
(see :mod:`poolmon.exporters.model`), so one dashboard and one rule file serve both paths. Nothing
here touches the hot path: the collector reads :meth:`PoolRegistry.snapshot` when scraped.

A collection that raises never breaks the scrape of the host's other metrics: the failure is
counted in ``poolmon_export_errors_total{exporter="prometheus"}``, logged once, and the scrape
returns poolmon's self-metrics only.

Pre-fork servers (gunicorn with several workers): see :mod:`poolmon.exporters.multiprocess`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import SelfMetrics, log_once
from poolmon.core.snapshot import HistogramSnapshot, PoolSnapshot
from poolmon.errors import ConfigError
from poolmon.exporters.model import Family, FamilySource, build_families, merge_families
from poolmon.exporters.snapshot_json import snapshot_app

__all__ = [
    "EXPORTER_LABEL",
    "MetricsServer",
    "PoolmonCollector",
    "register_collector",
    "render_families",
    "serve",
    "unregister_collector",
]

_log = logging.getLogger("poolmon.exporters")

#: The ``exporter`` label value of poolmon_export_errors_total for this exporter.
EXPORTER_LABEL: Final = "prometheus"


def _bucket_label(bound: float) -> str:
    # The same spelling opentelemetry-exporter-prometheus uses (f"{float}"): before Prometheus 3
    # the ``le`` label is stored verbatim, so both paths must spell bounds identically.
    return f"{float(bound)}"


def _histogram_buckets(hist: HistogramSnapshot) -> list[tuple[str, float]]:
    cumulative = hist.cumulative()
    buckets = [(_bucket_label(b), float(c)) for b, c in zip(hist.bounds, cumulative, strict=False)]
    buckets.append(("+Inf", float(cumulative[-1])))
    return buckets


def render_families(families: Iterable[Family]) -> Iterator[Metric]:
    """prometheus_client metric families for model families (empty families included)."""
    for family in families:
        spec = family.spec
        labels = _label_names(family)
        # prometheus_client appends ``_<unit>`` itself and adds ``_total`` to counters: hand it
        # the name without them so the exposed name is exactly ``spec.prometheus``.
        unit = spec.prometheus_unit
        base = spec.prometheus
        if spec.instrument == "counter" and base.endswith("_total"):
            base = base[: -len("_total")]
        metric: Metric
        if spec.instrument == "histogram":
            hist_family = HistogramMetricFamily(base, spec.description, labels=labels, unit=unit)
            for attrs, value in family.points.items():
                assert isinstance(value, HistogramSnapshot)
                hist_family.add_metric(
                    _label_values(attrs, labels), _histogram_buckets(value), sum_value=value.sum
                )
            metric = hist_family
        elif spec.instrument == "counter":
            counter = CounterMetricFamily(base, spec.description, labels=labels, unit=unit)
            for attrs, value in family.points.items():
                assert not isinstance(value, HistogramSnapshot)
                counter.add_metric(_label_values(attrs, labels), value)
            metric = counter
        else:
            gauge = GaugeMetricFamily(base, spec.description, labels=labels, unit=unit)
            for attrs, value in family.points.items():
                assert not isinstance(value, HistogramSnapshot)
                gauge.add_metric(_label_values(attrs, labels), value)
            metric = gauge
        yield metric


def _label_names(family: Family) -> list[str]:
    keys: set[str] = set()
    for attrs in family.points:
        keys.update(k for k, _ in attrs)
    # Attribute keys -> label names exactly like the OTel translation: dots become underscores;
    # sorted like opentelemetry-exporter-prometheus so both paths expose identical label sets.
    return sorted({k.replace(".", "_") for k in keys})


def _label_values(attrs: tuple[tuple[str, str], ...], labels: Sequence[str]) -> list[str]:
    # A missing attribute (e.g. no db.namespace on pool_info) is "" - Prometheus' "absent".
    by_label = {k.replace(".", "_"): v for k, v in attrs}
    return [by_label.get(label, "") for label in labels]


class PoolmonCollector(Collector):
    """A prometheus_client collector over ``registry``'s snapshots (+ poolmon self-metrics).

    Built at scrape time (like prometheus_client's own process collector): each ``collect()`` takes
    one snapshot per pool, O(pools x metrics), and keeps nothing between scrapes.
    """

    def __init__(
        self,
        registry: PoolRegistry | None = None,
        *,
        semconv: bool = False,
        leak_threshold: float | None = None,
    ) -> None:
        self._registry = registry
        self.semconv = semconv
        self.leak_threshold = leak_threshold
        self._sources: tuple[FamilySource, ...] = ()

    def add_source(self, source: FamilySource) -> None:
        """Merge ``source()``'s families into every scrape (e.g. the backend poller's)."""
        self._sources = (*self._sources, source)

    def remove_source(self, source: FamilySource) -> None:
        self._sources = tuple(s for s in self._sources if s is not source)

    @property
    def registry(self) -> PoolRegistry:
        """The poolmon registry read at each scrape (the default one, resolved per scrape)."""
        return self._registry if self._registry is not None else get_default_registry()

    def describe(self) -> list[Metric]:
        # Nothing to describe up front: families depend on the pools known at scrape time. An
        # empty describe() also keeps prometheus_client from running a full collect() on register.
        return []

    def snapshots(self) -> list[PoolSnapshot]:
        registry = self.registry
        if self.leak_threshold is not None:
            # Scraping doubles as the leak watchdog when a threshold is configured: suspected
            # leaks are counted as errors of type leak_suspected (once per borrow).
            for ledger in registry.ledgers():
                ledger.check_leaks(self.leak_threshold)
        return registry.snapshot()

    def collect(self) -> Iterator[Metric]:
        registry = self.registry
        self_metrics = registry.self_metrics
        try:
            families = build_families(
                self.snapshots(), self_metrics.snapshot(), semconv=self.semconv
            )
            for source in self._sources:
                families = merge_families(families, source())
            metrics = list(render_families(families))
        except Exception as exc:  # a scrape of the host's other metrics must still succeed
            _record_failure(self_metrics, exc)
            metrics = list(render_families(_self_only(registry, semconv=self.semconv)))
        yield from metrics


def _self_only(registry: PoolRegistry, *, semconv: bool) -> list[Family]:
    families = build_families([], registry.self_metrics.snapshot(), semconv=semconv)
    return [f for f in families if f.spec.name.startswith("poolmon.")]


def _record_failure(self_metrics: SelfMetrics, exc: BaseException) -> None:
    from poolmon.core.redact import scrub

    self_metrics.inc("poolmon.export.errors", EXPORTER_LABEL)
    log_once(
        _log,
        "prometheus-collect",
        "poolmon: Prometheus collection failed (%s); further failures are only counted in "
        'poolmon_export_errors_total{exporter="prometheus"}',
        scrub(f"{type(exc).__name__}: {exc}"),
    )


# Which (prometheus registry, poolmon registry) pairs have a collector: register_collector() is
# idempotent, so a library calling it and the application calling it never double the series.
_registered_lock = threading.Lock()
_registered: dict[tuple[int, int], tuple[CollectorRegistry, PoolRegistry | None, PoolmonCollector]]
_registered = {}


def register_collector(
    prometheus_registry: CollectorRegistry | None = None,
    *,
    registry: PoolRegistry | None = None,
    semconv: bool = False,
) -> PoolmonCollector:
    """Register a :class:`PoolmonCollector` on ``prometheus_registry`` (default: prometheus_client's
    global ``REGISTRY``) once; later calls for the same pair return the same collector."""
    prom = prometheus_registry if prometheus_registry is not None else REGISTRY
    key = (id(prom), id(registry))
    with _registered_lock:
        existing = _registered.get(key)
        if existing is not None and existing[0] is prom and existing[1] is registry:
            return existing[2]
        collector = PoolmonCollector(registry, semconv=semconv)
        prom.register(collector)
        # Holding the registries keeps the id() key valid for as long as the entry exists.
        _registered[key] = (prom, registry, collector)
        return collector


def unregister_collector(collector: PoolmonCollector) -> None:
    """Undo :func:`register_collector` (tests, embedding)."""
    with _registered_lock:
        for key, (prom, _, existing) in list(_registered.items()):
            if existing is collector:
                prom.unregister(collector)
                del _registered[key]


class MetricsServer:
    """A running ``/metrics`` endpoint (a daemon thread). ``close()`` stops it and frees the
    port."""

    def __init__(
        self,
        httpd: WSGIServer,
        thread: threading.Thread,
        *,
        tls: bool,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._httpd = httpd
        self._thread = thread
        self._tls = tls
        self._on_close = on_close
        self._closed = False
        host, port = httpd.server_address[:2]
        self.addr = str(host)
        self.port = int(port)

    @property
    def url(self) -> str:
        """``http(s)://addr:port/metrics``."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    port: int = 9464,
    addr: str = "127.0.0.1",
    *,
    registry: PoolRegistry | None = None,
    prometheus_registry: CollectorRegistry | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    semconv: bool = False,
    multiprocess_dir: str | os.PathLike[str] | None = None,
    include_own_pools: bool = False,
) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread (``port=0`` picks a free port).

    Without ``prometheus_registry`` the endpoint gets a registry of its own holding only poolmon's
    collector; pass one (e.g. prometheus_client's ``REGISTRY``) to serve poolmon next to the
    application's metrics. With ``certfile`` and ``keyfile`` it serves HTTPS (prometheus_client's
    own TLS support). The same server answers ``/poolmon/snapshot.json`` with this process's pools
    and their outstanding borrows (:mod:`poolmon.exporters.snapshot_json`). With
    ``multiprocess_dir`` it serves the merged pools of every worker writing to that directory
    instead of this process's (see :mod:`poolmon.exporters.multiprocess`); ``include_own_pools``
    adds this process's own pools to them (a parent that forks workers).
    """
    if not 0 <= port <= 65535:
        raise ConfigError("port", port, "an integer in [0, 65535] (0 picks a free port)")
    if (certfile is None) != (keyfile is None):
        raise ConfigError(
            "certfile/keyfile", (certfile, keyfile), "both set (HTTPS) or both None (HTTP)"
        )
    on_close: Callable[[], None] | None = None
    if prometheus_registry is None:
        prometheus_registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir is not None:
        from poolmon.exporters.multiprocess import MultiProcessCollector

        mp = MultiProcessCollector(
            multiprocess_dir, semconv=semconv, registry=registry, include_own=include_own_pools
        )
        prometheus_registry.register(mp)
        prom = prometheus_registry

        def unregister_mp() -> None:
            prom.unregister(mp)

        on_close = unregister_mp
    else:
        register_collector(prometheus_registry, registry=registry, semconv=semconv)
    httpd, thread = start_http_server(
        port,
        addr=addr,
        registry=prometheus_registry,
        certfile=None if certfile is None else os.fspath(certfile),
        keyfile=None if keyfile is None else os.fspath(keyfile),
    )
    thread.name = f"poolmon-metrics-{httpd.server_address[1]}"
    # Outstanding borrows and their sampled stacks beside /metrics (poolmon top, doctor).
    metrics_app = httpd.get_app()
    if metrics_app is not None:
        httpd.set_app(snapshot_app(metrics_app, registry))
    return MetricsServer(httpd, thread, tls=certfile is not None, on_close=on_close)
