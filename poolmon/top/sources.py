"""Where ``poolmon top`` reads pools from. Every source returns :class:`SourceResult` records.

* :class:`MetricsUrlSource` scrapes one ``/metrics`` endpoint (a process running poolmon's
  Prometheus exporter); several of them make the fleet view.
* :class:`PrometheusSource` asks a Prometheus server's HTTP API for the catalog's series and
  splits them by the ``instance`` label (one result per scraped process).
* :class:`ReplaySource` replays a JSONL event log (growing or not) into ledgers.
* :class:`RegistrySource` reads snapshots of an in-process :class:`PoolRegistry` (the demo).

A source never raises from :meth:`fetch`: whatever goes wrong (refused, timeout, HTTP error,
garbage) becomes a result with ``ok=False`` and a credential-free reason, so the view shows that
source as down and keeps going.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from poolmon.core.redact import redact_url, scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.top.capacity import BACKEND_SERIES, from_triples, read_backend_series
from poolmon.top.exposition import ExpositionParser, Triple
from poolmon.top.page import PageReader
from poolmon.top.replay import JsonlReplay
from poolmon.top.samples import (
    INFO_METRIC,
    WANTED_METRICS,
    PoolSample,
    SampleBuilder,
    SourceResult,
    sample_from_snapshot,
)

__all__ = [
    "MetricsUrlSource",
    "PrometheusSource",
    "RegistrySource",
    "ReplaySource",
    "Source",
    "normalize_metrics_url",
]

_USER_AGENT: Final = "poolmon-top"
_MAX_BODY: Final = 256 * 1024 * 1024


class Source(Protocol):
    """Anything ``top`` can poll."""

    @property
    def label(self) -> str:
        """How the source is shown (credential-free)."""
        ...

    def fetch(self) -> list[SourceResult]:
        """Read the source now. Never raises: a failure is a result with ``ok=False``."""
        ...


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        return scrub(str(text))
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _get(url: str, timeout: float, accept: str) -> bytes:
    headers = {"User-Agent": _USER_AGENT, "Accept": accept}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        # urllib does not read userinfo from a URL: send it as HTTP basic auth instead.
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
        host = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read(_MAX_BODY)
        return body


def normalize_metrics_url(text: str) -> str:
    """``host:port`` -> ``http://host:port/metrics``; a URL without a path gets ``/metrics``."""
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urllib.parse.urlunsplit(parts)


class MetricsUrlSource:
    """One ``/metrics`` endpoint, parsed with :class:`ExpositionParser`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wanted: tuple[str, ...] = WANTED_METRICS,
    ) -> None:
        self.url = normalize_metrics_url(url)
        self.timeout = timeout
        self._clock = clock
        self._reader = PageReader(wanted)
        self._backend_parser = ExpositionParser(BACKEND_SERIES)
        self._label = redact_url(self.url)

    @property
    def label(self) -> str:
        return self._label

    def fetch(self) -> list[SourceResult]:
        try:
            body = _get(self.url, self.timeout, "text/plain;version=0.0.4")
            taken = self._clock()
            return [self.parse(body.decode("utf-8", "replace"), taken)]
        except Exception as exc:  # down: shown, never raised (module docstring)
            return [SourceResult(self._label, False, self._clock(), error=_describe(exc))]

    def parse(self, text: str, taken_at: float) -> SourceResult:
        """The result for an exposition ``text`` read at ``taken_at`` (benchmarks use it)."""
        backends, links = read_backend_series(text, self._backend_parser)
        return SourceResult(
            self._label, True, taken_at, self._reader.read(text), None, backends, links
        )

    @property
    def problems(self) -> list[tuple[int, str]]:
        """``(line number, line)`` of the lines of the last page that could not be read."""
        return self._reader.problems

    @property
    def snapshot_url(self) -> str:
        """``/poolmon/snapshot.json`` on the same server (outstanding borrows and stacks)."""
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(path="/poolmon/snapshot.json", query=""))

    def snapshot_document(self) -> dict[str, Any] | None:
        """The served snapshot document, or None when the server has none (never raises)."""
        try:
            doc = json.loads(_get(self.snapshot_url, self.timeout, "application/json"))
        except Exception:  # an exporter without the endpoint (or not poolmon's): numbers only
            return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("pools"), list) else None


def _selector(wanted: Sequence[str]) -> str:
    """The catalog series ``top`` asks Prometheus for, and the capacity chain's: one regex, one
    round trip."""
    return "{__name__=~%s}" % json.dumps("|".join((*wanted, *BACKEND_SERIES)))  # noqa: UP031


class PrometheusSource:
    """A Prometheus server: one result per scraped ``instance`` that has poolmon series.

    Rates need the time each value was *scraped*, not when ``top`` asked (Prometheus returns
    the same value until its next scrape): a second query, ``timestamp(pool_info)``, supplies it
    per instance, and the model keeps the previous rate while that time has not moved. Targets
    whose ``up`` is 0 in a job that has poolmon series show as down.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        wanted: tuple[str, ...] = WANTED_METRICS,
    ) -> None:
        # The catalog series asked for: one regex, one round trip.
        self._wanted = wanted
        self._selector = _selector(wanted)
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        self._label = redact_url(self.url)

    @property
    def label(self) -> str:
        return self._label

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """One instant query (at ``at``, seconds since the epoch, or now); raises on failure."""
        return self._query(promql, at)

    def _query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        query = urllib.parse.urlencode(params)
        body = json.loads(_get(f"{self.url}/api/v1/query?{query}", self.timeout, "*/*"))
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body.get('error', 'unknown error')}")
        return list(body["data"]["result"])

    def fetch(self, at: float | None = None) -> list[SourceResult]:
        """Every instance's pools now, or as they were at ``at`` (seconds since the epoch)."""
        try:
            series = self._query(self._selector, at)
            stamps = self._query(f"timestamp({INFO_METRIC})", at)
            up = self._query("up", at)
        except Exception as exc:
            return [SourceResult(self._label, False, self._clock(), error=_describe(exc))]
        return self._results(series, stamps, up)

    def _results(
        self,
        series: Sequence[Mapping[str, Any]],
        stamps: Sequence[Mapping[str, Any]],
        up: Sequence[Mapping[str, Any]],
    ) -> list[SourceResult]:
        builders: dict[str, SampleBuilder] = {}
        backend_series: dict[str, list[Triple]] = {}
        jobs: set[str] = set()
        for item in series:
            metric = item["metric"]
            instance = str(metric.get("instance", self._label))
            jobs.add(str(metric.get("job", "")))
            name = str(metric.get("__name__"))
            if name in BACKEND_SERIES:  # spec section 12: the capacity chain's series
                backend_series.setdefault(instance, []).append(
                    (name, metric, float(item["value"][1]))
                )
                continue
            builder = builders.get(instance)
            if builder is None:
                builder = builders[instance] = SampleBuilder(self._wanted)
            builder.add(str(metric.get("__name__")), metric, float(item["value"][1]))
        scraped: dict[str, float] = {}
        for item in stamps:
            instance = str(item["metric"].get("instance", self._label))
            scraped[instance] = max(scraped.get(instance, 0.0), float(item["value"][1]))
        now = self._clock()
        results = []
        for instance in {**builders, **backend_series}:
            builder = builders.get(instance)
            backends, links = from_triples(backend_series.get(instance, ()))
            pools = builder.build() if builder is not None else ()
            taken = scraped.get(instance, now)
            results.append(SourceResult(instance, True, taken, pools, None, backends, links))
        for item in up:
            metric = item["metric"]
            instance = str(metric.get("instance", ""))
            known = instance in builders or instance in backend_series
            if item["value"][1] == "0" and metric.get("job") in jobs and not known:
                results.append(
                    SourceResult(instance, False, now, error=f"{self._label}: scrape failing")
                )
        return results


class ReplaySource:
    """A JSONL event log replayed into ledgers; new lines are applied on every fetch."""

    def __init__(self, path: str | Path) -> None:
        self.replay = JsonlReplay(path)
        self._label = scrub(f"replay:{Path(path).name}")

    @property
    def label(self) -> str:
        return self._label

    def fetch(self) -> list[SourceResult]:
        try:
            self.replay.poll()
        except Exception as exc:
            return [SourceResult(self._label, False, self.replay.event_time, error=_describe(exc))]
        pools = tuple(sample_from_snapshot(s) for s in self.replay.registry.snapshot())
        # Event time, not wall time: rates of a replay are rates of what was recorded.
        return [SourceResult(self._label, True, self.replay.event_time, pools)]


class RegistrySource:
    """Snapshots of an in-process registry (default: the default registry, read at fetch time)."""

    def __init__(
        self,
        registry: PoolRegistry | None = None,
        *,
        label: str = "local",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._label = label
        self._clock = clock

    @property
    def label(self) -> str:
        return self._label

    def fetch(self) -> list[SourceResult]:
        registry = self._registry or get_default_registry()
        try:
            pools: tuple[PoolSample, ...] = tuple(
                sample_from_snapshot(s) for s in registry.snapshot()
            )
        except Exception as exc:
            return [SourceResult(self._label, False, self._clock(), error=_describe(exc))]
        return [SourceResult(self._label, True, self._clock(), pools)]
