"""The records ``poolmon doctor`` works on: what a pool did over a window, and what was found.

A :class:`PoolWindow` is one pool of one source (or one Prometheus instance) over one window:
its sample at the end, its sample at the start (``None`` when counters are read from zero, i.e.
over the pool's whole life), the window's length when known, the peak of ``used`` seen in it,
and what only some sources know (event times from a JSONL log, outstanding borrows with their
stacks from ``/poolmon/snapshot.json`` or an in-process registry).

A :class:`Finding` is one problem of one pool (or one backend, for fleet findings) with the
numbers it rests on, the window they cover, advice in the pool library's own terms and the
runbook section. A :class:`Report` is what :func:`poolmon.doctor.diagnose` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from poolmon.top.samples import PoolSample

__all__ = [
    "SCHEMA_VERSION",
    "SEVERITIES",
    "BackendLimit",
    "Borrow",
    "Breakage",
    "Finding",
    "PoolWindow",
    "Report",
    "SourceProblem",
    "severity_rank",
]

#: Version of the ``--json`` document (docs/doctor.md describes it).
SCHEMA_VERSION: Final = 1
#: Severities, least severe first.
SEVERITIES: Final = ("info", "warning", "critical")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True)
class Borrow:
    """One outstanding borrow: its connection id, age in seconds and sampled stack (or None)."""

    conn: int
    age: float
    stack: str | None = None


@dataclass(frozen=True, slots=True)
class Breakage:
    """A broken or failed-validation eviction at ``t`` after ``quiet`` seconds without a borrow."""

    t: float
    quiet: float


@dataclass(frozen=True, slots=True)
class PoolWindow:
    source: str
    last: PoolSample
    first: PoolSample | None = None
    seconds: float | None = None
    window: str = "since the pool started"
    peak_used: float | None = None
    peak_open: float | None = None  # most connections open at once (JSONL only)
    # Times of creates that grew the pool to a new high (JSONL), or a pool's creates at its
    # first scrape (Prometheus): what the storm rule counts.
    create_times: tuple[float, ...] = ()
    breakages: tuple[Breakage, ...] = ()  # JSONL only
    borrows: tuple[Borrow, ...] | None = None  # None: the source does not know them
    leak_stacks: tuple[str, ...] = ()  # stacks of leak_suspected error events (JSONL only)

    @property
    def name(self) -> str:
        return self.last.name

    @property
    def peak(self) -> float:
        return max(self.last.used, self.peak_used or 0.0)

    def delta(self, attr: str) -> float:
        """Increase of a counter field over the window (a drop is a restart: the new value)."""
        now = float(getattr(self.last, attr))
        if self.first is None:
            return now
        then = float(getattr(self.first, attr))
        return now if now < then else now - then

    def delta_keyed(self, attr: str, key: str) -> float:
        now = float(getattr(self.last, attr).get(key, 0.0))
        if self.first is None:
            return now
        then = float(getattr(self.first, attr).get(key, 0.0))
        return now if now < then else now - then

    def delta_hist(self, attr: str) -> tuple[float, ...]:
        """Cumulative bucket counts over the window (``()`` when the source has none)."""
        now: tuple[float, ...] = getattr(self.last, attr)
        if self.first is None or not now:
            return now
        then: tuple[float, ...] = getattr(self.first, attr)
        if len(then) != len(now) or now[-1] < then[-1]:
            return now
        return tuple(a - b for a, b in zip(now, then, strict=True))


@dataclass(frozen=True, slots=True)
class BackendLimit:
    """A backend's real connection limit (``origin`` says where it was read)."""

    system: str
    backend: str  # host:port
    limit: int
    origin: str


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    severity: str
    pool: str | None  # None for a fleet finding (one backend)
    source: str | None
    backend: str
    summary: str
    evidence: Mapping[str, Any]
    window: str
    advice: str
    runbook: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["evidence"] = {k: _json_number(v) for k, v in self.evidence.items()}
        return out


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float):
        return round(value, 6)
    return value


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A source that could not be read (``down``) or lines it could not parse."""

    source: str
    down: bool
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    pools: int
    sources: tuple[str, ...]
    problems: tuple[SourceProblem, ...] = ()
    limits: tuple[BackendLimit, ...] = ()
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def worst(self) -> str | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=severity_rank)

    def at_or_above(self, severity: str) -> list[Finding]:
        rank = severity_rank(severity)
        return [f for f in self.findings if severity_rank(f.severity) >= rank]

    def by_pool(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for f in self.findings:
            if f.pool is not None:
                out.setdefault(f.pool, []).append(f)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema in docs/doctor.md)."""
        return {
            "schema": SCHEMA_VERSION,
            "pools": self.pools,
            "sources": list(self.sources),
            "problems": [asdict(p) for p in self.problems],
            "limits": [asdict(limit) for limit in self.limits],
            "thresholds": dict(self.thresholds),
            "findings": [f.to_dict() for f in self.findings],
        }


def sort_findings(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Most severe first, then by kind, backend and pool (stable, for the text and the JSON)."""
    return tuple(
        sorted(
            findings,
            key=lambda f: (
                -severity_rank(f.severity),
                f.kind,
                f.backend,
                f.pool or "",
                f.source or "",
            ),
        )
    )
