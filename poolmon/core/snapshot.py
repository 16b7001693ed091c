"""Immutable records of a pool's state, read by exporters and ``poolmon top``.

A snapshot is taken under the pool ledger's lock in O(buckets + reasons + outstanding leaks); it
never holds references to connections or library objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from poolmon.core.identity import PoolIdentity

__all__ = ["HistogramSnapshot", "LeakRecord", "PoolSnapshot"]


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A fixed-bucket histogram. ``counts`` are per bucket (not cumulative), ``len(bounds) + 1``
    long; the last one counts values above the largest bound (Prometheus ``le="+Inf"``)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[int, ...]:
        """Counts of values ``<= bound`` for each bound, then the total (Prometheus buckets)."""
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out)

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile like PromQL's ``histogram_quantile`` (linear within a
        bucket).

        ``None`` when empty. Values in the overflow bucket report the largest finite bound.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be within [0, 1], got {q!r}")
        total = self.count
        if total == 0:
            return None
        rank = q * total
        running = 0
        lower = 0.0
        for i, c in enumerate(self.counts):
            if i == len(self.bounds):
                return self.bounds[-1] if self.bounds else math.nan
            upper = self.bounds[i]
            if c and running + c >= rank:
                return lower + (upper - lower) * ((rank - running) / c)
            running += c
            lower = upper
        return self.bounds[-1]

    def merged(self, other: HistogramSnapshot) -> HistogramSnapshot:
        """The sum of two histograms with the same bounds (fleet totals)."""
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different bucket bounds")
        return HistogramSnapshot(
            self.bounds,
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=False)),
            self.sum + other.sum,
        )


@dataclass(frozen=True, slots=True)
class LeakRecord:
    """One outstanding borrow older than the leak threshold."""

    conn: int
    age: float
    stack: str | None = None


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """Everything poolmon knows about one pool at one moment.

    Gauges (``idle``, ``used``, ``pending``, limits, ``oldest_use``) are the live state; counters
    and histograms are totals since the pool became known. Mappings are fresh copies: never shared
    with the ledger.
    """

    identity: PoolIdentity
    taken_at: float
    idle: int
    used: int
    pending: int
    max: int | None
    min: int | None
    idle_max: int | None
    wait_time: HistogramSnapshot
    use_time: HistogramSnapshot
    lifetime: HistogramSnapshot
    create_time: Mapping[str, HistogramSnapshot]  # by outcome: "ok", "error"
    evictions: Mapping[str, int]  # by eviction reason, every reason present
    errors: Mapping[str, int]  # by error type, every type present
    validations: Mapping[str, int]  # by outcome
    oldest_use: float  # seconds; 0.0 when nothing is borrowed
    closed: bool = False
    leaks: tuple[LeakRecord, ...] = field(default=())
    #: The library that already exports this pool's OpenTelemetry semconv series, if any.
    semconv_exported_by: str | None = None
    #: Points of the catalog's optional (spec 1.1) metrics this pool has, by metric name:
    #: ``(attributes without pool.name, value)``. Empty for a pool without those features.
    optional: Mapping[str, tuple[tuple[Mapping[str, str], float], ...]] = field(
        default_factory=dict
    )
    #: Spec 1.1 (multiplexed connections): streams in use over the open connections, and the sum
    #: of their stream limits; ``None`` for a pool that never had a multiplexed connection.
    streams_used: int = 0
    streams_max: int | None = None
    #: The protocol version its connections negotiated (HTTP: ``"1.1"``, ``"2"``), when known.
    protocol_version: str | None = None

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def timeouts(self) -> int:
        return self.errors.get("timeout", 0)

    @property
    def borrows(self) -> int:
        return self.wait_time.count

    @property
    def returns(self) -> int:
        return self.use_time.count

    @property
    def creates(self) -> int:
        return sum(h.count for h in self.create_time.values())

    @property
    def total(self) -> int:
        return self.idle + self.used

    @property
    def saturation(self) -> float | None:
        """used / max, or ``None`` for a pool with no fixed maximum."""
        if not self.max:
            return None
        return self.used / self.max

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``poolmon top --once --json``)."""
        out = asdict(self)
        out["name"] = self.name
        out["timeouts"] = self.timeouts
        out["borrows"] = self.borrows
        out["creates"] = self.creates
        return out
