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
    "check_http_url",
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


_SCHEMES: Final = ("http", "https")


def check_http_url(text: str) -> urllib.parse.SplitResult:
    """``text`` split as an http(s) URL with a host, else ``ValueError`` saying what is wrong
    (credential-free: the message never repeats the URL)."""
    if not text.strip():
        raise ValueError("empty URL")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError("a URL has no spaces or control characters")
    parts = urllib.parse.urlsplit(text)  # ValueError: an unclosed IPv6 bracket, ...
    if parts.scheme not in _SCHEMES:
        raise ValueError("the scheme must be http or https")
    if not parts.hostname:
        raise ValueError("no host")
    parts.port  # noqa: B018  (ValueError: not a number, or outside 0-65535)
    return parts


def normalize_metrics_url(text: str) -> str:
    """``host:port`` -> ``http://host:port/metrics``; a URL without a path gets ``/metrics``.

    ``ValueError`` (with the reason) when ``text`` is no usable http(s) URL.
    """
    if "://" not in text:
        text = "http://" + text
    parts = check_http_url(text)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urllib.parse.urlunsplit(parts)


def _invalid(text: str, exc: ValueError) -> tuple[str, str]:
    """The label and the reason of a source whose URL cannot be used."""
    return redact_url(text), f"invalid URL: {scrub(str(exc))}"


class MetricsUrlSource:
    """One ``/metrics`` endpoint, parsed with :class:`ExpositionParser`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._reader = PageReader()
        #: Why the URL cannot be used (the source then always reports itself down), or None.
        self.invalid: str | None = None
        try:
            self.url = normalize_metrics_url(url)
            self._label = redact_url(self.url)
        except ValueError as exc:
            self.url = url
            self._label, self.invalid = _invalid(url, exc)

    @property
    def label(self) -> str:
        return self._label

    def fetch(self) -> list[SourceResult]:
        if self.invalid is not None:
            return [SourceResult(self._label, False, self._clock(), error=self.invalid)]
        try:
            body = _get(self.url, self.timeout, "text/plain;version=0.0.4")
            taken = self._clock()
            return [self.parse(body.decode("utf-8", "replace"), taken)]
        except Exception as exc:  # down: shown, never raised (module docstring)
            return [SourceResult(self._label, False, self._clock(), error=_describe(exc))]

    def parse(self, text: str, taken_at: float) -> SourceResult:
        """The result for an exposition ``text`` read at ``taken_at`` (benchmarks use it)."""
        return SourceResult(self._label, True, taken_at, self._reader.read(text))


#: The catalog series ``top`` asks Prometheus for: one regex, one round trip.
_PROM_SELECTOR: Final = "{__name__=~%s}" % json.dumps("|".join(WANTED_METRICS))  # noqa: UP031


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
    ) -> None:
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        self.invalid: str | None = None
        try:
            check_http_url(self.url)
            self._label = redact_url(self.url)
        except ValueError as exc:
            self._label, self.invalid = _invalid(self.url, exc)

    @property
    def label(self) -> str:
        return self._label

    def _query(self, promql: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": promql})
        body = json.loads(_get(f"{self.url}/api/v1/query?{query}", self.timeout, "*/*"))
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body.get('error', 'unknown error')}")
        return list(body["data"]["result"])

    def fetch(self) -> list[SourceResult]:
        if self.invalid is not None:
            return [SourceResult(self._label, False, self._clock(), error=self.invalid)]
        try:
            series = self._query(_PROM_SELECTOR)
            stamps = self._query(f"timestamp({INFO_METRIC})")
            up = self._query("up")
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
        jobs: set[str] = set()
        for item in series:
            metric = item["metric"]
            instance = str(metric.get("instance", self._label))
            jobs.add(str(metric.get("job", "")))
            builder = builders.get(instance)
            if builder is None:
                builder = builders[instance] = SampleBuilder()
            builder.add(str(metric.get("__name__")), metric, float(item["value"][1]))
        scraped: dict[str, float] = {}
        for item in stamps:
            instance = str(item["metric"].get("instance", self._label))
            scraped[instance] = max(scraped.get(instance, 0.0), float(item["value"][1]))
        now = self._clock()
        results = [
            SourceResult(instance, True, scraped.get(instance, now), builder.build())
            for instance, builder in builders.items()
        ]
        for item in up:
            metric = item["metric"]
            instance = str(metric.get("instance", ""))
            if item["value"][1] == "0" and metric.get("job") in jobs and instance not in builders:
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
