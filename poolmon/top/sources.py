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
import dataclasses
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from poolmon.core.redact import redact_url, scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.errors import ConfigError
from poolmon.top.capacity import BACKEND_SERIES, from_triples, read_backend_series
from poolmon.top.exposition import ExpositionParser, Triple
from poolmon.top.page import PageReader
from poolmon.top.replay import JsonlReplay
from poolmon.top.samples import (
    CREATE_COUNT_METRIC,
    ERRORS_METRIC,
    EVICTIONS_METRIC,
    INFO_METRIC,
    WAIT_BUCKET_METRIC,
    WANTED_METRICS,
    PoolSample,
    SampleBuilder,
    SourceResult,
    WindowStats,
    sample_from_snapshot,
)

__all__ = [
    "BadAnswer",
    "MetricsUrlSource",
    "PrometheusSource",
    "RegistrySource",
    "ReplaySource",
    "Source",
    "check_http_url",
    "check_window",
    "normalize_metrics_url",
    "parse_api_answer",
    "window_query",
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
    if isinstance(exc, OSError) and exc.strerror:
        return scrub(exc.strerror)  # the path or address is the source's label already
    text = " ".join(str(exc).split())  # one line, whatever the other program answered
    if isinstance(exc, BadAnswer):
        return scrub(text)
    return scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class BadAnswer(ValueError):
    """What a source read is not what it should be (the message says how)."""


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


_SAMPLE_START: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\s*(\{|\s)")


def _not_exposition(text: str) -> str | None:
    """Why ``text`` is no Prometheus exposition (None: it looks like one, or is empty)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#") or _SAMPLE_START.match(stripped):
            return None
        shown = scrub(stripped[:40]).encode("ascii", "backslashreplace").decode("ascii")
        return f"not a Prometheus exposition (it starts with {shown!r})"
    return None


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
        self.timeout = timeout
        self._clock = clock
        self._reader = PageReader(wanted)
        self._backend_parser = ExpositionParser(BACKEND_SERIES)
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
            return [SourceResult(self._label, ok=False, taken_at=self._clock(), error=self.invalid)]
        try:
            body = _get(self.url, self.timeout, "text/plain;version=0.0.4")
            taken = self._clock()
            return [self.parse(body.decode("utf-8", "replace"), taken)]
        except Exception as exc:  # down: shown, never raised (module docstring)
            return [
                SourceResult(self._label, ok=False, taken_at=self._clock(), error=_describe(exc))
            ]

    def parse(self, text: str, taken_at: float) -> SourceResult:
        """The result for an exposition ``text`` read at ``taken_at`` (benchmarks use it).

        A page that is not an exposition at all (an HTML error or login page, JSON) is a bad
        source with that reason; in a real one, lines that cannot be read are dropped.
        """
        pools = self._reader.read(text)
        backends, links = read_backend_series(text, self._backend_parser)
        if not pools and not backends:
            problem = _not_exposition(text)
            if problem is not None:
                return SourceResult(self._label, ok=False, taken_at=taken_at, error=problem)
        return SourceResult(
            self._label,
            ok=True,
            taken_at=taken_at,
            pools=pools,
            backends=backends,
            proxy_links=links,
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
        if self.invalid is not None:
            return None
        try:
            doc = json.loads(_get(self.snapshot_url, self.timeout, "application/json"))
        except Exception:  # an exporter without the endpoint (or not poolmon's): numbers only
            return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("pools"), list) else None


def _selector(wanted: Sequence[str]) -> str:
    """The catalog series ``top`` asks Prometheus for, and the capacity chain's: one regex, one
    round trip."""
    return "{__name__=~%s}" % json.dumps("|".join((*wanted, *BACKEND_SERIES)))  # noqa: UP031


#: A PromQL duration (``30s``, ``1m``, ``1h30m``).
_DURATION: Final = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
#: The label the window query tags each of its parts with (see :func:`window_query`).
_PART: Final = "poolmon_window"
_GROUP: Final = "job, instance, pool_name"

Getter = Callable[[str, float, str], bytes]


def check_window(window: str) -> str:
    """``window`` if it is a PromQL duration, else :class:`ConfigError`."""
    if not _DURATION.match(window):
        raise ConfigError("window", window, "a PromQL duration such as 30s, 1m or 5m")
    return window


def window_query(window: str) -> str:
    """One PromQL query for every pool's rates and recent wait quantiles over ``window``.

    Each part is tagged with a ``poolmon_window`` label saying what it is, so one round trip
    answers all of them: creates/s by outcome, evictions/s by reason, errors/s by type, and the
    wait time's p50/p95/p99 (``histogram_quantile`` over the ``rate`` of the buckets, as the
    dashboard computes them).
    """
    parts = [
        (f"sum by ({_GROUP}, outcome) (rate({CREATE_COUNT_METRIC}[{window}]))", "creates"),
        (
            f"sum by ({_GROUP}, pool_eviction_reason) (rate({EVICTIONS_METRIC}[{window}]))",
            "evictions",
        ),
        (f"sum by ({_GROUP}, error_type) (rate({ERRORS_METRIC}[{window}]))", "errors"),
    ]
    buckets = f"sum by ({_GROUP}, le) (rate({WAIT_BUCKET_METRIC}[{window}]))"
    parts += [(f"histogram_quantile({q}, {buckets})", f"wait_q{q}") for q in _QUANTILES]
    return " or ".join(f'label_replace({expr}, "{_PART}", "{tag}", "", "")' for expr, tag in parts)


_QUANTILES: Final = ("0.5", "0.95", "0.99")


def parse_api_answer(body: bytes) -> list[Mapping[str, Any]]:
    """The ``data.result`` of a Prometheus query API answer, else :class:`BadAnswer` with the
    reason (not JSON, an error answer, not a vector). Malformed entries of the vector are
    dropped."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise BadAnswer("not a Prometheus API answer (not JSON)") from None
    if not isinstance(doc, dict):
        raise BadAnswer("not a Prometheus API answer (not a JSON object)")
    if doc.get("status") != "success":
        reason = doc.get("error")
        raise BadAnswer(f"query failed: {reason if isinstance(reason, str) else 'unknown error'}")
    data = doc.get("data")
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise BadAnswer("not a Prometheus API answer (no data.result list)")
    return [item for item in result if _valid_item(item)]


def _valid_item(item: object) -> bool:
    if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
        return False
    value = item.get("value")
    if not isinstance(value, list) or len(value) != 2:
        return False
    try:
        float(value[0])
        float(value[1])
    except (TypeError, ValueError):
        return False
    return all(isinstance(v, str) for v in item["metric"].values())


def _number(item: Mapping[str, Any]) -> float:
    return float(item["value"][1])


class PrometheusSource:
    """A Prometheus server: one result per scraped ``instance`` that has poolmon series.

    Gauges and totals come from the latest values (one query for every catalog series). Rates
    and recent wait quantiles come from PromQL over ``window`` of Prometheus' own history
    (:func:`window_query`), so the first refresh and ``--once`` are complete. For a pool that
    query does not cover yet (fewer than two scrapes in the window), the model falls back to
    differences between refreshes; those need the time each value was *scraped*, not when
    ``top`` asked (Prometheus returns the same value until its next scrape): a query
    ``timestamp(pool_info)`` supplies it per instance. Targets whose ``up`` is 0 in a job that
    has poolmon series show as down. ``getter`` (url, timeout, accept) -> body is injectable.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        window: str = "1m",
        clock: Callable[[], float] = time.time,
        wanted: tuple[str, ...] = WANTED_METRICS,
        getter: Getter | None = None,
    ) -> None:
        check_window(window)
        # The catalog series asked for: one regex, one round trip.
        self._wanted = wanted
        self._selector = _selector(wanted)
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.window = window
        self._clock = clock
        self._get = getter if getter is not None else _get
        self.invalid: str | None = None
        try:
            check_http_url(self.url)
            self._label = redact_url(self.url)
        except ValueError as exc:
            self._label, self.invalid = _invalid(self.url, exc)

    @property
    def label(self) -> str:
        return self._label

    def query(self, promql: str, at: float | None = None) -> list[Mapping[str, Any]]:
        """One instant query (at ``at``, seconds since the epoch, or now); raises on failure."""
        return self._query(promql, at)

    def _query(self, promql: str, at: float | None = None) -> list[Mapping[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        query = urllib.parse.urlencode(params)
        return parse_api_answer(self._get(f"{self.url}/api/v1/query?{query}", self.timeout, "*/*"))

    def fetch(self, at: float | None = None) -> list[SourceResult]:
        """Every instance's pools now, or as they were at ``at`` (seconds since the epoch)."""
        if self.invalid is not None:
            return [SourceResult(self._label, ok=False, taken_at=self._clock(), error=self.invalid)]
        try:
            series = self._query(self._selector, at)
            stamps = self._query(f"timestamp({INFO_METRIC})", at)
            up = self._query("up", at)
            window = self._query(window_query(self.window), at)
            return self._results(series, stamps, up, window)
        except Exception as exc:  # down: shown, never raised (module docstring)
            return [
                SourceResult(self._label, ok=False, taken_at=self._clock(), error=_describe(exc))
            ]

    def _instance(self, metric: Mapping[str, Any]) -> str:
        return str(metric.get("instance", self._label))

    def _results(
        self,
        series: Sequence[Mapping[str, Any]],
        stamps: Sequence[Mapping[str, Any]],
        up: Sequence[Mapping[str, Any]],
        window: Sequence[Mapping[str, Any]] = (),
    ) -> list[SourceResult]:
        builders: dict[str, SampleBuilder] = {}
        backend_series: dict[str, list[Triple]] = {}
        jobs: set[str] = set()
        for item in series:
            metric = item["metric"]
            instance = self._instance(metric)
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
            builder.add(str(metric.get("__name__")), metric, _number(item))
        scraped: dict[str, float] = {}
        for item in stamps:
            instance = self._instance(item["metric"])
            scraped[instance] = max(scraped.get(instance, 0.0), _number(item))
        stats = _window_stats(window, self._instance)
        now = self._clock()
        if not builders and not backend_series and not any(item["value"][1] == "0" for item in up):
            # Prometheus answered and holds no poolmon series (yet): up, with no pools.
            return [SourceResult(self._label, ok=True, taken_at=now, pools=())]
        results = []
        for instance in {**builders, **backend_series}:
            builder = builders.get(instance)
            backends, links = from_triples(backend_series.get(instance, ()))
            pools = (
                tuple(_with_window(p, stats.get((instance, p.name))) for p in builder.build())
                if builder is not None
                else ()
            )
            taken = scraped.get(instance, now)
            results.append(
                SourceResult(
                    instance,
                    ok=True,
                    taken_at=taken,
                    pools=pools,
                    backends=backends,
                    proxy_links=links,
                )
            )
        for item in up:
            metric = item["metric"]
            instance = str(metric.get("instance", ""))
            known = instance in builders or instance in backend_series
            if item["value"][1] == "0" and metric.get("job") in jobs and not known:
                results.append(
                    SourceResult(
                        instance, ok=False, taken_at=now, error=f"{self._label}: scrape failing"
                    )
                )
        return results


class _WindowParts:
    """The window query's answers for one pool while they are read."""

    __slots__ = ("creates", "errors", "evictions", "quantiles")

    def __init__(self) -> None:
        self.creates: float | None = None
        self.evictions: dict[str, float] | None = None
        self.errors: float | None = None
        self.quantiles: dict[str, float | None] = {}

    def add(self, part: str, metric: Mapping[str, Any], value: float) -> None:
        if not math.isfinite(value):
            if part.startswith("wait_q"):
                self.quantiles[part] = None  # NaN: nobody waited in the window
            return
        if part == "creates":
            if metric.get("outcome") != "error":
                self.creates = (self.creates or 0.0) + value
            elif self.creates is None:
                self.creates = 0.0
        elif part == "evictions":
            self.evictions = self.evictions if self.evictions is not None else {}
            reason = str(metric.get("pool_eviction_reason", "other"))
            self.evictions[reason] = self.evictions.get(reason, 0.0) + value
        elif part == "errors":
            self.errors = (self.errors or 0.0) + value
        elif part.startswith("wait_q"):
            self.quantiles[part] = value

    def stats(self) -> WindowStats:
        quantiles = None
        if self.quantiles:
            get = self.quantiles.get
            quantiles = (get("wait_q0.5"), get("wait_q0.95"), get("wait_q0.99"))
        return WindowStats(self.creates, self.evictions, self.errors, quantiles)


def _window_stats(
    window: Sequence[Mapping[str, Any]], instance_of: Callable[[Mapping[str, Any]], str]
) -> dict[tuple[str, str], WindowStats]:
    parts: dict[tuple[str, str], _WindowParts] = {}
    for item in window:
        metric = item["metric"]
        pool = metric.get("pool_name")
        if pool is None:
            continue
        key = (instance_of(metric), str(pool))
        entry = parts.get(key)
        if entry is None:
            entry = parts[key] = _WindowParts()
        entry.add(str(metric.get(_PART, "")), metric, _number(item))
    return {key: entry.stats() for key, entry in parts.items()}


def _with_window(sample: PoolSample, stats: WindowStats | None) -> PoolSample:
    return sample if stats is None else dataclasses.replace(sample, window=stats)


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
            return [
                SourceResult(
                    self._label, ok=False, taken_at=self.replay.event_time, error=_describe(exc)
                )
            ]
        replay = self.replay
        if replay.applied == 0 and replay.first_skipped is not None:
            lineno, reason = replay.first_skipped
            error = f"no poolmon events: {replay.skipped} lines skipped (line {lineno}: {reason})"
            return [SourceResult(self._label, ok=False, taken_at=replay.event_time, error=error)]
        pools = tuple(sample_from_snapshot(s) for s in replay.registry.snapshot())
        # Event time, not wall time: rates of a replay are rates of what was recorded.
        return [SourceResult(self._label, ok=True, taken_at=replay.event_time, pools=pools)]


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
            return [
                SourceResult(self._label, ok=False, taken_at=self._clock(), error=_describe(exc))
            ]
        return [SourceResult(self._label, ok=True, taken_at=self._clock(), pools=pools)]
