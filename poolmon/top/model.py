"""The data behind ``poolmon top``: rows, fleet totals, rates and quantiles. Pure, no I/O.

:class:`TopModel` turns successive :class:`SourceResult` batches into a :class:`Frame`:

* **rates** (creates/s, evictions/s by reason, errors/s) are counter differences over a sliding
  window of the last ``window`` distinct sample times of each pool (a counter that went down was
  reset by a restart: its current value is the increase, as in PromQL), unless the source sent
  its own (:class:`~poolmon.top.samples.WindowStats`: a Prometheus server's ``rate`` over its
  history, known from the first refresh);
* **wait quantiles** come from the wait-time histogram's bucket differences over that window, so
  they describe recent waits; before a second sample exists they are over the pool's whole life
  (``wait_recent`` says which), and ``None`` when no borrow happened in the window;
* **saturation history** (used / max) feeds the sparkline;
* **fleet totals** sum every row per backend (``system`` + ``server.address:port``) across all
  sources and instances: how many connections the fleet holds open to each server.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from poolmon.errors import ConfigError
from poolmon.top.capacity import BackendSample, CapacityLine, ProxyLink, capacity_lines
from poolmon.top.samples import WAIT_BOUNDS, PoolSample, SourceResult

__all__ = [
    "SORT_KEYS",
    "BackendTotal",
    "Frame",
    "PoolRow",
    "SourceStatus",
    "Thresholds",
    "TopModel",
    "level",
    "quantile_from_cumulative",
    "select_rows",
]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a value turns yellow (warn) or red (crit)."""

    saturation_warn: float = 0.7
    saturation_crit: float = 0.9
    wait_p95_warn: float = 0.05
    wait_p95_crit: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.saturation_warn <= self.saturation_crit:
            raise ConfigError(
                "saturation_warn", self.saturation_warn, "0 < warn <= saturation_crit"
            )
        if not 0 < self.wait_p95_warn <= self.wait_p95_crit:
            raise ConfigError("wait_p95_warn", self.wait_p95_warn, "0 < warn <= wait_p95_crit")


def level(value: float | None, warn: float, crit: float) -> int:
    """0 (fine), 1 (warn) or 2 (crit) for ``value`` against two thresholds."""
    if value is None:
        return 0
    if value >= crit:
        return 2
    if value >= warn:
        return 1
    return 0


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One pool of one source, with everything the table and the detail view show."""

    source: str
    name: str
    system: str
    resource: str  # spec 1.1 ``pool.resource``: the words a view uses (catalog ``resources``)
    backend: str
    pid: str | None
    idle: float
    used: float
    pending: float
    max: float | None
    saturation: float | None
    wait_p50: float | None
    wait_p95: float | None
    wait_p99: float | None
    wait_recent: bool
    creates: float
    creates_per_s: float | None
    create_errors: float
    evictions: Mapping[str, float]  # totals, non-zero reasons only
    evictions_per_s: Mapping[str, float]  # non-zero reasons only; empty before a second sample
    errors: Mapping[str, float]  # totals by type, non-zero only (timeouts included)
    errors_per_s: float | None
    timeouts: float
    oldest_use: float
    history: tuple[float | None, ...]  # saturation, oldest first
    # For the detail view's charts: cumulative wait-time buckets over the window (as the
    # quantiles), lifetime buckets since start, and used connections per refresh, oldest first.
    wait_hist: tuple[float, ...] = ()
    lifetime_hist: tuple[float, ...] = ()
    used_history: tuple[float, ...] = ()
    #: Multiplexed pools only (spec 1.1): streams in use and their capacity; None otherwise.
    streams: float | None = None
    streams_max: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.name)

    @property
    def error_total(self) -> float:
        """Errors other than timeouts (those have their own column)."""
        return sum(v for k, v in self.errors.items() if k != "timeout")

    @property
    def eviction_rate(self) -> float | None:
        """All evictions per second; ``None`` until rates are known (a second sample)."""
        if self.creates_per_s is None:
            return None
        return sum(self.evictions_per_s.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_total"] = self.error_total
        out["history"] = list(self.history)
        return out


@dataclass(frozen=True, slots=True)
class BackendTotal:
    """Every pool talking to one backend, summed across sources and instances."""

    system: str
    backend: str
    pools: int
    instances: int
    used: float
    idle: float
    pending: float
    max: float | None  # None when some pool has no fixed maximum

    @property
    def saturation(self) -> float | None:
        return None if not self.max else self.used / self.max

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["saturation"] = self.saturation
        return out


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    ok: bool
    pools: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One refresh: all rows (unsorted, unfiltered), fleet totals and source status."""

    rows: tuple[PoolRow, ...]
    backends: tuple[BackendTotal, ...]
    sources: tuple[SourceStatus, ...]
    #: What views add beside the numbers (``findings``, ``borrows``: poolmon.top.findings).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Per backend: app pools -> proxy pools -> the backend's own count (poolmon.top.capacity).
    capacity: tuple[CapacityLine, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The ``--once --json`` document."""
        return {
            "sources": [asdict(s) for s in self.sources],
            "pools": [r.to_dict() for r in self.rows],
            "backends": [b.to_dict() for b in self.backends],
            "capacity": [c.to_dict() for c in self.capacity],
        }


def quantile_from_cumulative(
    bounds: Sequence[float], cumulative: Sequence[float], q: float
) -> float | None:
    """Like PromQL ``histogram_quantile``: linear within the bucket; ``None`` when empty.

    ``cumulative`` has one count per bound plus the ``+Inf`` total. A rank in the ``+Inf`` bucket
    reports the largest finite bound (all that is known).
    """
    if not cumulative:
        return None
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    lower = 0.0
    previous = 0.0
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= rank and count > previous:
            return lower + (bound - lower) * ((rank - previous) / (count - previous))
        lower, previous = bound, count
    return bounds[-1] if bounds else None


class _History:
    """Per-pool memory between refreshes: a window of counter samples and the saturation trail."""

    __slots__ = ("samples", "saturation", "used")

    def __init__(self, window: int, history: int) -> None:
        self.samples: deque[tuple[float, PoolSample]] = deque(maxlen=window + 1)
        self.saturation: deque[float | None] = deque(maxlen=history)
        self.used: deque[float] = deque(maxlen=history)


def _increase(now: float, then: float) -> float:
    return now if now < then else now - then  # a drop means the counter restarted


class TopModel:
    """Keeps per-pool history and builds frames. Not thread-safe: one refresh loop owns it."""

    def __init__(self, *, window: int = 10, history: int = 60) -> None:
        if window < 1:
            raise ConfigError("window", window, "an integer >= 1")
        if history < 1:
            raise ConfigError("history", history, "an integer >= 1")
        self._window = window
        self._history_len = history
        self._state: dict[tuple[str, str], _History] = {}

    def update(self, results: Iterable[SourceResult]) -> Frame:
        rows: list[PoolRow] = []
        statuses: list[SourceStatus] = []
        seen: set[tuple[str, str]] = set()
        down: set[str] = set()
        backends: list[BackendSample] = []
        links: list[ProxyLink] = []
        for result in results:
            statuses.append(SourceStatus(result.source, result.ok, len(result.pools), result.error))
            if not result.ok:
                down.add(result.source)
                continue
            backends.extend(result.backends)
            links.extend(result.proxy_links)
            for sample in result.pools:
                key = (result.source, sample.name)
                seen.add(key)
                rows.append(self._row(result.source, result.taken_at, sample, key))
        # Forget pools that left a source that answered; keep the memory of a down source's
        # pools so their rates continue when it comes back.
        for key in [k for k in self._state if k not in seen and k[0] not in down]:
            del self._state[key]
        capacity = capacity_lines(rows, backends, links)
        return Frame(tuple(rows), fleet_totals(rows), tuple(statuses), capacity=capacity)

    def _row(self, source: str, t: float, sample: PoolSample, key: tuple[str, str]) -> PoolRow:
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = _History(self._window, self._history_len)
        saturation = sample.used / sample.max if sample.max else None
        if not state.samples or state.samples[-1][0] != t:
            # Only a new sample time counts: Prometheus repeats a value until its next scrape.
            state.samples.append((t, sample))
            state.saturation.append(saturation)
            state.used.append(sample.used)
        t0, first = state.samples[0]
        elapsed = t - t0
        creates_rate: float | None = None
        evict_rates: dict[str, float] = {}
        errors_rate: float | None = None
        wait_hist = sample.wait_cumulative
        recent = False
        if elapsed > 0:
            creates_rate = _increase(sample.creates, first.creates) / elapsed
            for reason, value in sample.evictions.items():
                inc = _increase(value, first.evictions.get(reason, 0.0))
                if inc:
                    evict_rates[reason] = inc / elapsed
            errors_rate = _increase(_sum(sample.errors), _sum(first.errors)) / elapsed
            if wait_hist and len(first.wait_cumulative) == len(wait_hist):
                recent = True
                wait_hist = _window_hist(wait_hist, first.wait_cumulative)
        p50, p95, p99 = (quantile_from_cumulative(WAIT_BOUNDS, wait_hist, q) for q in _QS)
        window = sample.window
        if window is not None:
            # The source's own window (PromQL over Prometheus' history) wins where it has one.
            if window.creates_per_s is not None:
                creates_rate = window.creates_per_s
            if window.evictions_per_s is not None:
                evict_rates = {k: v for k, v in window.evictions_per_s.items() if v}
            if window.errors_per_s is not None:
                errors_rate = window.errors_per_s
            if window.wait_quantiles is not None:
                p50, p95, p99 = window.wait_quantiles
                recent = True
        return PoolRow(
            source=source,
            name=sample.name,
            system=sample.system,
            resource=sample.resource,
            backend=sample.backend,
            pid=sample.pid,
            idle=sample.idle,
            used=sample.used,
            pending=sample.pending,
            max=sample.max,
            saturation=saturation,
            wait_p50=p50,
            wait_p95=p95,
            wait_p99=p99,
            wait_recent=recent,
            creates=sample.creates,
            creates_per_s=creates_rate,
            create_errors=sample.create_errors,
            evictions={k: v for k, v in sample.evictions.items() if v},
            evictions_per_s=evict_rates,
            errors={k: v for k, v in sample.errors.items() if v},
            errors_per_s=errors_rate,
            timeouts=sample.timeouts,
            oldest_use=sample.oldest_use,
            history=tuple(state.saturation),
            wait_hist=tuple(wait_hist),
            lifetime_hist=sample.lifetime_cumulative,
            used_history=tuple(state.used),
            streams=sample.streams,
            streams_max=sample.streams_max,
        )

    def windows(
        self, keys: Iterable[tuple[str, str]]
    ) -> list[tuple[str, PoolSample, PoolSample | None, float, float]]:
        """``(source, last, first or None, seconds, peak used)`` over each pool's window (what
        ``poolmon doctor`` reads to give ``top`` its findings)."""
        out = []
        for key in keys:
            state = self._state.get(key)
            if state is None or not state.samples:
                continue
            t0, first = state.samples[0]
            t, last = state.samples[-1]
            peak = max(s.used for _, s in state.samples)
            out.append((key[0], last, first if t > t0 else None, t - t0, peak))
        return out


_QS: Final = (0.5, 0.95, 0.99)


def _sum(values: Mapping[str, float]) -> float:
    return math.fsum(values.values())


def _window_hist(now: Sequence[float], then: Sequence[float]) -> tuple[float, ...]:
    if now[-1] < then[-1]:
        return tuple(now)  # restarted: everything it has is recent
    return tuple(a - b for a, b in zip(now, then, strict=True))


def fleet_totals(rows: Iterable[PoolRow]) -> tuple[BackendTotal, ...]:
    """Per-backend sums across every source; sorted by system then backend."""
    groups: dict[tuple[str, str], list[PoolRow]] = {}
    for row in rows:
        groups.setdefault((row.system, row.backend), []).append(row)
    out = []
    for (system, backend), members in sorted(groups.items()):
        bounded = all(r.max for r in members)
        out.append(
            BackendTotal(
                system=system,
                backend=backend,
                pools=len(members),
                instances=len({(r.source, r.pid) for r in members}),
                used=sum(r.used for r in members),
                idle=sum(r.idle for r in members),
                pending=sum(r.pending for r in members),
                max=sum(r.max or 0.0 for r in members) if bounded else None,
            )
        )
    return tuple(out)


def _num(value: float | None) -> float:
    return -math.inf if value is None else value


#: Sort keys, in the order the ``s`` key cycles through them. Numbers sort worst (largest)
#: first; names alphabetically. ``reverse`` flips either.
_SORTS: Final[Mapping[str, tuple[Callable[[PoolRow], Any], bool]]] = {
    "saturation": (lambda r: _num(r.saturation), True),
    "used": (lambda r: r.used, True),
    "pending": (lambda r: r.pending, True),
    "wait": (lambda r: _num(r.wait_p95), True),
    "creates": (lambda r: _num(r.creates_per_s), True),
    "evictions": (lambda r: _num(r.eviction_rate), True),
    "errors": (lambda r: r.error_total, True),
    "timeouts": (lambda r: r.timeouts, True),
    "oldest": (lambda r: r.oldest_use, True),
    "name": (lambda r: r.name.lower(), False),
    "source": (lambda r: r.source.lower(), False),
}
SORT_KEYS: Final[tuple[str, ...]] = tuple(_SORTS)


def select_rows(
    rows: Iterable[PoolRow], sort: str = "saturation", *, reverse: bool = False, text: str = ""
) -> list[PoolRow]:
    """Rows matching ``text`` (case-insensitive substring of name, system, source or backend),
    sorted by ``sort`` (one of :data:`SORT_KEYS`), ties broken by source and name."""
    try:
        keyfunc, descending = _SORTS[sort]
    except KeyError:
        raise ConfigError("sort", sort, "one of " + ", ".join(SORT_KEYS)) from None
    needle = text.strip().lower()
    if needle:
        rows = [r for r in rows if needle in _haystack(r)]
    ordered = sorted(rows, key=lambda r: (r.source, r.name))
    ordered.sort(key=keyfunc, reverse=descending != reverse)
    return ordered


def _haystack(row: PoolRow) -> str:
    return f"{row.name}\n{row.system}\n{row.source}\n{row.backend}".lower()
